"""`make demo`: the demo workflow, dense and RhymeFlow, through ComfyUI's real executor on the CPU.

Runs example_workflows/rhymeflow_demo.json headless, one branch at a time (same prompt, seed and
sigmas), and writes into output/rhymeflow_demo/: side_by_side.gif (dense | RhymeFlow | difference
x4), report.md and report.json (wall times, speedup, passes, keyframes, PSNR/SSIM against dense).

    python -m tools.demo [--prompt TEXT] [--seed N] [--steps N] [--warmup N] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import PACK_DIR, bootstrap, observe_reports, run_prompt

WORKFLOW = PACK_DIR / "example_workflows" / "rhymeflow_demo.json"
BRANCHES = ("dense", "rhymeflow")


def samplers_by_branch(api: dict) -> dict[str, str]:
    """{'dense' | 'rhymeflow': SamplerCustomAdvanced node id}, told apart by the sampler feeding it."""
    found = {}
    for nid, node in api.items():
        if node["class_type"] == "SamplerCustomAdvanced":
            source = api[node["inputs"]["sampler"][0]]["class_type"]
            found["rhymeflow" if source == "RhymeFlowSampler" else "dense"] = nid
    if set(found) != set(BRANCHES):
        raise ValueError(f"the demo workflow needs a dense and a RhymeFlow SamplerCustomAdvanced, found {sorted(found)}")
    return found


def _descendants(api: dict, root: str) -> set[str]:
    out, frontier = {root}, [root]
    while frontier:
        nid = frontier.pop()
        for other, node in api.items():
            if other not in out and any(isinstance(v, list) and v[0] == nid for v in node["inputs"].values()):
                out.add(other)
                frontier.append(other)
    return out


def branch_prompt(api: dict, branch: str, **overrides) -> dict:
    """The workflow with only one branch, its latent saved for exact metrics, and overrides applied."""
    samplers = samplers_by_branch(api)
    other = samplers[BRANCHES[1 - BRANCHES.index(branch)]]
    prompt = {k: json.loads(json.dumps(v)) for k, v in api.items() if k not in _descendants(api, other)}
    prompt["900"] = {"class_type": "SaveLatent", "inputs": {"samples": [samplers[branch], 0], "filename_prefix": f"rhymeflow_demo/{branch}"}}
    guider = prompt[prompt[samplers[branch]]["inputs"]["guider"][0]]
    for nid, node in prompt.items():
        cls, inputs = node["class_type"], node["inputs"]
        if cls == "RhymeFlowDemoPrompt" and nid == guider["inputs"]["positive"][0] and "prompt" in overrides:
            inputs["text"] = overrides["prompt"]
        elif cls == "RandomNoise" and "seed" in overrides:
            inputs["noise_seed"] = overrides["seed"]
        elif cls == "BasicScheduler" and "steps" in overrides:
            inputs["steps"] = overrides["steps"]
        elif cls == "RhymeFlowSampler" and "warmup" in overrides:
            inputs["warmup_steps"] = overrides["warmup"]
    return prompt


class ProgressBar:
    def __init__(self, label: str):
        self.label = label

    def __call__(self, value: int, total: int) -> None:
        filled = int(30 * value / max(total, 1))
        sys.stderr.write(f"\r  {self.label:<10} [{'#' * filled}{'.' * (30 - filled)}] {value}/{total}")
        if value >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def run_branch(api: dict, branch: str, out_dir: Path, label: str | None = None, **overrides):
    """(wall seconds, decoded video [F, H, W, 3]) of one branch."""
    import safetensors.torch

    from rhymeflow_core.demo_model import decode_latent

    start = time.perf_counter()
    result = run_prompt(branch_prompt(api, branch, **overrides), out_dir, on_progress=ProgressBar(label or branch))
    seconds = time.perf_counter() - start
    if not result.success:
        raise SystemExit(f"{branch} workflow failed: {result.error}")
    latent_file = sorted((out_dir / "rhymeflow_demo").glob(f"{branch}_*.latent"))[-1]
    latent = safetensors.torch.load_file(str(latent_file))["latent_tensor"]
    return seconds, decode_latent(latent)[0]


def side_by_side(dense, ours, path: Path, scale: int = 4, gain: float = 4.0) -> None:
    """An animated GIF: dense | RhymeFlow | |difference| x gain, enlarged `scale` times."""
    import torch
    from PIL import Image

    diff = ((ours - dense).abs() * gain).clamp(0, 1)
    gap = torch.ones(dense.shape[0], dense.shape[1], 1, 3)
    strip = torch.cat([dense, gap, ours, gap, diff], dim=2)
    strip = strip.repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    frames = [Image.fromarray((f.numpy() * 255).round().astype("uint8")) for f in strip]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=125, loop=0)


def write_report(data: dict, out: Path) -> None:
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    m = data["fidelity"]
    lines = [
        "# RhymeFlow demo report", "",
        f"Prompt: `{data['prompt']}`, seed {data['seed']}, {data['steps']} steps, latent {data['latent']}, "
        f"device {data['device']}, via ComfyUI's PromptExecutor.", "",
        "| run | workflow wall time | passes |", "|---|---|---|",
        f"| dense ({data['solver']}) | {data['dense_seconds']:.2f} s | {data['steps']} full |",
        f"| RhymeFlow | {data['rhymeflow_seconds']:.2f} s | {data['full_passes']} full / {data['active_passes']} active |", "",
        f"Speedup {data['speedup']:.2f}x (this schedule's bound, active passes free: {data['bound_speedup']:.2f}x; "
        f"the wall times imply an active pass costs {data['effective_active_cost']:.2f} of a full one, "
        "workflow overheads included). Keyframes chosen: " + str(data["keyframes"]) + ".", "",
        f"Fidelity against dense: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, temporal error {m['temporal_error']:.4f}.", "",
        "side_by_side.gif: dense | RhymeFlow | difference x4.",
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default=None, help="demo prompt (default: the workflow's)")
    ap.add_argument("--seed", type=int, default=None, help="noise seed (default: the workflow's)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--workflow", default=str(WORKFLOW))
    ap.add_argument("--out", default=str(PACK_DIR / "output"))
    args = ap.parse_args(argv)

    bootstrap()
    logging.basicConfig(level=logging.ERROR)  # the host logs optional-import warnings at start-up
    import comfy.utils
    import torch

    comfy.utils.PROGRESS_BAR_ENABLED = False  # our own bar below, fed by ComfyUI's ProgressBar hook

    from tools.headless import load_nodes
    from tools.metrics import compare
    from tools.workflows import ui_to_api

    load_nodes()
    api = ui_to_api(json.loads(Path(args.workflow).read_text()))
    overrides = {k: v for k, v in vars(args).items() if k in ("prompt", "seed", "steps", "warmup") and v is not None}
    settings = branch_prompt(api, "rhymeflow", **overrides)
    sampler = next(n["inputs"] for n in settings.values() if n["class_type"] == "RhymeFlowSampler")
    prompt_text = next(n["inputs"]["text"] for n in settings.values() if n["class_type"] == "RhymeFlowDemoPrompt" and n["inputs"]["text"])
    seed = next(n["inputs"]["noise_seed"] for n in settings.values() if n["class_type"] == "RandomNoise")
    steps = next(n["inputs"]["steps"] for n in settings.values() if n["class_type"] == "BasicScheduler")
    out = Path(args.out)
    (out / "rhymeflow_demo").mkdir(parents=True, exist_ok=True)

    print(f"RhymeFlow demo: {prompt_text!r}, seed {seed}, {steps} steps (CPU, ComfyUI's PromptExecutor)")
    run_branch(api, "dense", out, "warm-up", **{**overrides, "steps": 2})  # first-call costs out of the timing
    t_dense, dense = run_branch(api, "dense", out, **overrides)
    with observe_reports() as reports:
        t_ours, ours = run_branch(api, "rhymeflow", out, **overrides)
    report = reports[-1]
    side_by_side(dense, ours, out / "rhymeflow_demo" / "side_by_side.gif")
    full, active = report.full_passes, report.active_passes
    data = {
        "prompt": prompt_text, "seed": seed, "steps": steps, "solver": sampler["solver"],
        "warmup_steps": sampler["warmup_steps"], "strides": [sampler["min_stride"], sampler["max_stride"]],
        "latent": [1, 16, dense.shape[0], dense.shape[1] // 2, dense.shape[2] // 2],
        "device": "cpu", "torch_threads": torch.get_num_threads(),
        "dense_seconds": t_dense, "rhymeflow_seconds": t_ours, "rhymeflow_sampler_seconds": report.sampler_seconds,
        "speedup": t_dense / t_ours, "full_passes": full, "active_passes": active,
        "bound_speedup": steps / full,  # if active passes cost nothing
        "effective_active_cost": (t_ours / t_dense * steps - full) / max(active, 1),  # derived from the two wall times
        "keyframes": report.keyframes, "fidelity": compare(ours, dense),
    }
    write_report(data, out / "rhymeflow_demo")
    m = data["fidelity"]
    print(f"  dense {t_dense:.2f} s | RhymeFlow {t_ours:.2f} s | speedup {data['speedup']:.2f}x | "
          f"{data['full_passes']} full / {data['active_passes']} active passes | keyframes {data['keyframes']}")
    print(f"  vs dense: PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.4f}, temporal error {m['temporal_error']:.4f}")
    print(f"  wrote {out / 'rhymeflow_demo'}/side_by_side.gif, report.md, report.json")


if __name__ == "__main__":
    main()
