"""Fidelity harness: RhymeFlow settings, ablations and baselines against dense, on the demo model.

For every prompt x seed, the dense output (uni_pc, N steps) is the reference; every method samples
the same prompt, seed and sigmas through ComfyUI's real CFGGuider path and is scored with the
PSNR and SSIM of docs/algorithm.md §7 plus a temporal error (tools/metrics.py). Model cost is
counted in full-pass equivalents from the passes the model really ran (a hook on the first block
sees each pass and its row count) and the active/full cost ratios measured on this machine at the
start of the run.

    python -m tools.fidelity                         # the full table -> docs/fidelity.md, docs/fidelity.png
    python -m tools.fidelity --prompts 2 --seeds 1 --steps 12 --out /tmp/f   # a quick subset
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import PACK_DIR, bootstrap, git_commit

PROMPTS = [
    "a red circle moves right",
    "a blue square moves left",
    "a green triangle moves up",
    "a yellow circle moves down",
    "a white square falls",
    "a magenta circle bounces",
    "an orange triangle stays",
    "a cyan square moves right and a red triangle moves left",
    "a blue circle falls and a yellow square bounces",
    "a green square stays and a white circle moves up",
    "a red circle moves right; then a blue square falls",
    "a yellow triangle moves left; then a green circle moves right",
    "a white circle bounces; fade to a magenta square moves down",
    "a cyan triangle falls; fade to an orange circle stays",
    "a red square moves up and a blue circle moves down; then a yellow triangle bounces",
    "an orange square moves left and a cyan circle bounces and a white triangle stays",
]
SEEDS = (1, 2)
RELEASE = dict(warmup=10, count=2, min_stride=3, max_stride=5)
PAPER = dict(warmup=8, count=4, min_stride=2, max_stride=3)


@dataclass
class Method:
    name: str
    kind: str = "rhymeflow"  # rhymeflow | dense | easycache
    warmup: int = 10
    count: int = 2
    min_stride: int = 3
    max_stride: int = 5
    progressive: bool = True
    strategy: str = "semantic"
    context: str = "kv_cache"
    steps: int | None = None  # dense: its own step count (None: the reference's)
    threshold: float = 0.0  # easycache
    note: str = ""
    results: list = field(default_factory=list)


def methods(steps: int, release_cost: float) -> list[Method]:
    """The table's rows. Dense at fewer steps and EasyCache are matched to the release setting's cost."""
    from rhymeflow_core.presets import PRESETS
    presets = [Method(f"preset {name}, kv_cache", warmup=p.warmup_steps(steps), count=2, min_stride=p.min_stride,
                      max_stride=p.max_stride, note=f"warm-up {p.warmup_steps(steps)}, strides {p.min_stride}-{p.max_stride}")
               for name, p in PRESETS.items() if name != "balanced"]  # balanced is the release setting
    return [
        Method("RhymeFlow release, kv_cache", **RELEASE, note="= preset balanced"),
        Method("RhymeFlow release, hidden_cache", **RELEASE, context="hidden_cache"),
        Method("RhymeFlow paper, kv_cache", **PAPER),
        Method("RhymeFlow paper, hidden_cache", **PAPER, context="hidden_cache"),
        Method("w/o projection (keyframe_only), paper", **PAPER, context="keyframe_only"),
        Method("uniform keyframes, paper", **PAPER, strategy="uniform"),
        Method("random keyframes, paper", **PAPER, strategy="random"),
        Method("fixed stride, paper", **PAPER, progressive=False),
        Method(f"dense, {round(release_cost)} steps", kind="dense", steps=round(release_cost), note="cost-matched to release"),
        Method("EasyCache", kind="easycache", note="threshold calibrated to the release cost"),
        *presets,
    ]


class PassCounter:
    """Counts full and active passes from the row count seen by the first transformer block."""

    def __init__(self, model, full_tokens: int):
        self.full_tokens, self.passes = full_tokens, []
        block = model.model.diffusion_model.blocks[0]
        self.handle = block.register_forward_pre_hook(lambda mod, args: self.passes.append(args[0].shape[1]))

    def cost(self, active_cost: dict[int, float], keyframes: int) -> float:
        return sum(1.0 if rows >= self.full_tokens else active_cost[keyframes] for rows in self.passes)

    def close(self):
        self.handle.remove()


def pass_cost(counter: PassCounter, report, ratios: dict[int, float], keyframes: int) -> float:
    """Full-pass equivalents: RhymeFlow's own per-call counts (its recording and active passes run
    the blocks outside their module hooks), else the passes the block hook saw (dense, EasyCache)."""
    if report is None:
        return counter.cost(ratios, keyframes)
    calls = report.model_calls
    return calls.get("full", 0) + calls.get("record", 0) + calls.get("active", 0) * ratios[keyframes]


def measure_active_cost(model, latent_shape, counts=(2, 4), repeat=5) -> dict[int, float]:
    """Active/full pass time ratio (kv_cache, batch 2) of this model on this machine."""
    import torch

    from rhymeflow_core.keyframes import KeyframeSpec, select_keyframes
    from tools.pass_cost import best_ms, pass_times

    dm = model.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *latent_shape[1:], generator=g)
    t, ctx = torch.full((2,), 500.0), torch.randn(2, 32, 4096, generator=g) * 0.1
    with torch.no_grad():
        full = best_ms(lambda: dm(x, t, ctx), repeat)
        return {m: pass_times(dm, x, t, ctx, select_keyframes(x, KeyframeSpec("uniform", m)), "kv_cache", repeat)[1] / full
                for m in counts}


class Harness:
    def __init__(self, steps: int, cfg: float = 4.0, shift: float = 3.0, frames: int = 13, size: int = 16, weights=None):
        import comfy.samplers
        from comfy_extras.nodes_model_advanced import ModelSamplingSD3

        from rhymeflow_core.demo_model import WEIGHTS, load_demo_model
        self.steps, self.cfg = steps, cfg
        self.model = ModelSamplingSD3().patch(load_demo_model(weights or WEIGHTS), shift)[0]
        self.latent_shape = (1, 16, frames, size, size)
        self.full_tokens = frames * size * size // 4
        self.sigmas = comfy.samplers.calculate_sigmas(self.model.get_model_object("model_sampling"), "simple", steps).float()

    def sample(self, model, sampler, prompt: str, seed: int, sigmas):
        import comfy.sample
        import comfy.samplers
        import torch

        from rhymeflow_core.demo_model import decode_latent, encode_prompt
        latent = torch.zeros(self.latent_shape)
        noise = comfy.sample.prepare_noise(latent, seed)
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds([[encode_prompt(prompt), {}]], [[encode_prompt(""), {}]])
        guider.set_cfg(self.cfg)
        with torch.no_grad():
            out = guider.sample(noise, latent, sampler, sigmas.clone(), disable_pbar=True, seed=seed)
        return decode_latent(out)[0]

    def dense(self, prompt: str, seed: int, steps: int | None = None, model=None):
        import comfy.samplers
        sigmas = self.sigmas if steps is None else comfy.samplers.calculate_sigmas(
            self.model.get_model_object("model_sampling"), "simple", steps).float()
        return self.sample(model or self.model, comfy.samplers.sampler_object("uni_pc"), prompt, seed, sigmas)

    def run(self, method: Method, prompt: str, seed: int):
        """(video, passes seen by the model, RhymeFlow report or None)."""
        from comfy_extras.nodes_easycache import EasyCacheNode

        from rhymeflow_core.keyframes import KeyframeSpec
        from rhymeflow_core.patch import apply_trajectory_projection
        from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
        from rhymeflow_core.sampling_loop import SamplerSettings
        from rhymeflow_core.schedule import ScheduleSettings
        from tools.headless import observe_reports

        if method.kind == "dense":
            model = self.model.clone()
        elif method.kind == "easycache":
            model = EasyCacheNode.execute(self.model, method.threshold, 0.15, 0.95, False).result[0]
        else:
            model = apply_trajectory_projection(self.model, method.context, "auto")
        counter = PassCounter(model, self.full_tokens)
        try:
            with observe_reports() as reports:
                if method.kind == "rhymeflow":
                    settings = SamplerSettings(
                        ScheduleSettings(method.warmup, method.min_stride, method.max_stride, progressive=method.progressive),
                        KeyframeSpec(method.strategy, method.count, seed=seed), "uni_pc")
                    video = self.sample(model, RhymeFlowSamplerObject(settings), prompt, seed, self.sigmas)
                else:
                    video = self.dense(prompt, seed, method.steps, model=model)
        finally:
            counter.close()
        return video, counter, (reports[-1] if reports else None)


def calibrate_easycache(h: Harness, target_cost: float, prompt: str, seed: int) -> float:
    """The EasyCache threshold whose pass count comes closest to the target cost (one prompt, coarse grid)."""
    best = None
    for threshold in (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5):
        _, counter, _ = h.run(Method("probe", kind="easycache", threshold=threshold), prompt, seed)
        gap = abs(len(counter.passes) - target_cost)
        if best is None or gap < best[0]:
            best = (gap, threshold)
    return best[1]


def summarise(rows: list[Method]) -> list[dict]:
    import statistics
    out = []
    for m in rows:
        r = m.results
        out.append({"method": m.name, "note": m.note, "n": len(r),
                    **{k: statistics.mean(x[k] for x in r) for k in ("psnr", "ssim", "temporal_error", "cost", "seconds")},
                    "psnr_min": min(x["psnr"] for x in r), "psnr_std": statistics.pstdev(x["psnr"] for x in r)})
    return out


def write_outputs(summary: list[dict], meta: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fidelity.json").write_text(json.dumps({"meta": meta, "rows": summary}, indent=2) + "\n")
    steps = meta["steps"]
    lines = ["| method | PSNR dB (mean / min) | SSIM | temporal error | model cost (full passes) | speedup (cost) | sampler s |",
             "|---|---|---|---|---|---|---|",
             f"| dense, {steps} steps (reference) | - | - | - | {steps:.1f} | 1.00x | {meta['dense_seconds']:.2f} |"]
    for r in summary:
        note = f" ({r['note']})" if r["note"] else ""
        lines.append(f"| {r['method']}{note} | {r['psnr']:.2f} / {r['psnr_min']:.2f} | {r['ssim']:.4f} | {r['temporal_error']:.4f} | "
                     f"{r['cost']:.1f} | {steps / r['cost']:.2f}x | {r['seconds']:.2f} |")
    (out_dir / "fidelity_table.md").write_text("\n".join(lines) + "\n")
    _chart(summary, meta, out_dir / "fidelity.png")
    (out_dir / "fidelity.md").write_text(_page(lines, meta))


def _page(table: list[str], meta: dict) -> str:
    ratios = ", ".join(f"M = {m}: {r:.3f}" for m, r in meta["active_cost"].items())
    return "\n".join([
        "# Fidelity against dense sampling (demo model)", "",
        f"Generated by `{meta['command']}` on {meta['date']}, commit {meta['commit']}, {meta['device']}; "
        f"{meta['minutes']:.1f} min.", "",
        f"Every row: {meta['pairs']} prompt x seed pairs ({len(meta['prompts'])} prompts x seeds {meta['seeds']}), the "
        f"embedded demo model (docs/demo_model.md), 13 frames of 32x32, {meta['steps']} steps, {meta['solver']}, cfg "
        f"{meta['cfg']}, shift {meta['shift']}; the reference is the dense output of the same prompt, seed and sigmas. "
        "PSNR (per frame, averaged) and SSIM (11x11 box window) as docs/algorithm.md §7, on the exactly decoded frames (no "
        "codec); temporal error = RMS difference of frame-to-frame changes against dense (lower is better).", "",
        f"Model cost is in full-pass equivalents: the passes each method really ran (counted inside the model), an active "
        f"pass weighted by its cost relative to a full pass as measured on this machine for this model ({ratios}; "
        "kv_cache, batch 2). Wall time per sample (`sampler s`) is on the same machine.", "",
        "Settings: release = warm-up 10, 2 keyframes (semantic), strides 3-5 progressive (the reference release); "
        "paper = warm-up 8, 4 keyframes, strides 2-3 (the preprint's comparison setting). Ablations use the paper "
        "setting and change one thing. `dense, N steps` is ordinary sampling with the step count whose cost matches "
        "the release setting; EasyCache is ComfyUI core's node with its threshold calibrated to the same cost.", "",
        *table, "", "![PSNR against model cost](fidelity.png)", "",
    ])


def _chart(summary: list[dict], meta: dict, path: Path) -> None:
    """PSNR against model cost, drawn with PIL (no plotting dependency)."""
    from PIL import Image, ImageDraw

    w, h, pad = 900, 560, 70
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    costs = [r["cost"] for r in summary] + [meta["steps"]]
    psnrs = [r["psnr"] for r in summary]
    x0, x1 = 0, max(costs) * 1.05
    y0, y1 = min(psnrs) - 1, max(psnrs) + 1

    def xy(c, p):
        return pad + (c - x0) / (x1 - x0) * (w - 2 * pad), h - pad - (p - y0) / (y1 - y0) * (h - 2 * pad)
    d.rectangle([pad, pad, w - pad, h - pad], outline="black")
    for k in range(6):
        c = x0 + k * (x1 - x0) / 5
        p = y0 + k * (y1 - y0) / 5
        d.text((xy(c, y0)[0] - 10, h - pad + 8), f"{c:.0f}", fill="black")
        d.text((10, xy(x0, p)[1] - 6), f"{p:.1f}", fill="black")
    d.text((w / 2 - 120, h - 30), "model cost (full-pass equivalents, lower is faster)", fill="black")
    d.text((pad, 20), f"PSNR vs dense ({meta['steps']} steps), {meta['pairs']} prompt-seed pairs, demo model", fill="black")
    colours = ["#c0392b", "#e67e22", "#2980b9", "#16a085", "#8e44ad", "#7f8c8d", "#95a5a6", "#d35400", "#2c3e50", "#27ae60"]
    placed: list[tuple[float, float, float, float]] = []  # label boxes drawn so far
    for k, r in sorted(enumerate(summary), key=lambda kr: -kr[1]["psnr"]):
        x, y = xy(r["cost"], r["psnr"])
        col = colours[k % len(colours)]
        d.ellipse([x - 6, y - 6, x + 6, y + 6], fill=col)
        label = r["method"].replace("RhymeFlow ", "")
        width = d.textlength(label)
        ly = y - 6
        while any(x + 9 < bx1 and bx0 < x + 9 + width and ly < by1 and by0 < ly + 12 for bx0, by0, bx1, by1 in placed):
            ly += 13  # points at the same cost share a column: stack their labels downwards
        placed.append((x + 9, ly, x + 9 + width, ly + 12))
        if ly != y - 6:
            d.line([x + 6, y, x + 9, ly + 6], fill=col)
        d.text((x + 9, ly), label, fill=col)
    img.save(path)


def _device() -> str:
    import os
    import platform

    import torch
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads)"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help="use the first N prompts")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="use the first N seeds")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--methods", default="", help="comma-separated substrings of method names to run (default: all)")
    ap.add_argument("--out", default=str(PACK_DIR / "docs"))
    ap.add_argument("--redraw", action="store_true", help="only redraw fidelity.png from the fidelity.json in --out")
    args = ap.parse_args(argv)
    if args.redraw:
        data = json.loads((Path(args.out) / "fidelity.json").read_text())
        return _chart(data["rows"], data["meta"], Path(args.out) / "fidelity.png")

    bootstrap()
    logging.basicConfig(level=logging.ERROR)
    from tools.headless import load_nodes
    from tools.metrics import compare
    load_nodes()

    h = Harness(args.steps)
    ratios = measure_active_cost(h.model, h.latent_shape)
    from rhymeflow_core.schedule import ScheduleSettings, build_schedule
    release = build_schedule(args.steps, ScheduleSettings(RELEASE["warmup"], RELEASE["min_stride"], RELEASE["max_stride"]))
    release_cost = release.full_passes + release.active_passes * ratios[2]
    rows = methods(args.steps, release_cost)
    if args.methods:
        wanted = [s.strip() for s in args.methods.split(",")]
        rows = [m for m in rows if any(s in m.name for s in wanted)]
    pairs = [(p, s) for p in PROMPTS[: args.prompts] for s in SEEDS[: args.seeds]]
    for m in rows:
        if m.kind == "easycache":
            m.threshold = calibrate_easycache(h, release_cost, *pairs[0])
            m.note = f"threshold {m.threshold}, calibrated to the release cost"
    print(f"active/full cost on this machine: {ratios}; release cost {release_cost:.1f} of {args.steps}", flush=True)
    dense_seconds = []
    start = time.perf_counter()
    for k, (prompt, seed) in enumerate(pairs):
        t = time.perf_counter()
        reference = h.dense(prompt, seed)
        dense_seconds.append(time.perf_counter() - t)
        for m in rows:
            t = time.perf_counter()
            video, counter, report = h.run(m, prompt, seed)
            seconds = time.perf_counter() - t
            m.results.append({**compare(video, reference), "cost": pass_cost(counter, report, ratios, m.count), "seconds": seconds})
        print(f"[{k + 1}/{len(pairs)}] {prompt!r} seed {seed}  ({(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    meta = {"command": "python -m tools.fidelity " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "shift": 3.0,
            "steps": args.steps, "pairs": len(pairs), "prompts": PROMPTS[: args.prompts], "seeds": list(SEEDS[: args.seeds]),
            "active_cost": ratios, "dense_seconds": sum(dense_seconds) / len(dense_seconds), "solver": "uni_pc", "cfg": h.cfg,
            "device": _device(), "minutes": (time.perf_counter() - start) / 60}
    summary = summarise(rows)
    write_outputs(summary, meta, Path(args.out))
    print((Path(args.out) / "fidelity_table.md").read_text())


if __name__ == "__main__":
    main()
