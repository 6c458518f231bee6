"""Per-family sampler timing: dense vs RhymeFlow on every supported model family (a benchmark, not a test).

Each family is its real ComfyUI class at a reduced width and depth with random weights
(`tools/tiny_models.py`), loaded through ComfyUI's loader, conditioned the way its
stock nodes condition it (image latents, masks, CLIP-vision tokens, per-frame timesteps), and
sampled through CFGGuider with ComfyUI's uni_pc (dense) or RhymeFlow at a preset. All families
get the same number of video tokens, so the rows compare how much of the work each adapter saves;
random weights say nothing about fidelity (that is docs/fidelity.md, on the trained demo model).

  python -m tools.family_bench                      # all families, 30 steps, preset balanced
  python -m tools.family_bench --families wan_t2v,ltxv --steps 20 --out docs/bench_families.md
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import types
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import bootstrap, git_commit

FRAMES = 21          # latent frames (81 pixel frames of Wan)
TOKENS = (12, 20)    # video tokens per latent frame (rows x columns) after patching: 5,040 in all
WIDTH = 256          # hidden width of every family (heads of 128 for Wan / HunyuanVideo, 32 x 8 for LTXV)
TEXT = 64            # text tokens


def _rand(shape, seed):
    import torch
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _wan(variant: str):
    """Wan: latent pixels = 2 x tokens (patch 1x2x2). I2V/FLF2V: image latent + mask (+ CLIP tokens); TI2V: first frame kept."""
    import torch

    from tools.tiny_models import WAN_CLIP_DIM, load
    model = load("wan", variant, dim=WIDTH, ffn_dim=4 * WIDTH, layers=2)
    channels = 48 if variant == "ti2v_5b" else 16
    shape = (1, channels, FRAMES, 2 * TOKENS[0], 2 * TOKENS[1])
    latent, mask, extra = torch.zeros(shape), None, {}
    if variant == "ti2v_5b":
        latent[:, :, 0] = _rand(shape[:2] + shape[3:], 5)
        mask = torch.ones(1, 1, *shape[2:])
        mask[:, :, 0] = 0.0
    elif variant != "t2v":
        given = torch.ones(1, 1, *shape[2:])
        given[:, :, 0] = 0.0
        extra = {"concat_latent_image": _rand(shape, 5), "concat_mask": given}
        if variant == "i2v":
            extra["clip_vision_output"] = types.SimpleNamespace(penultimate_hidden_states=_rand((1, 257, WAN_CLIP_DIM), 6))
    conds = [[_rand((1, TEXT, 4096), s) * 0.5, dict(extra)] for s in (1, 2)]
    return model, latent, mask, conds, 5.0


def _hunyuan(version: str):
    import torch

    from tools.tiny_models import HUNYUAN_POOLED_DIM, HUNYUAN_TEXT_DIM, load
    model = load("hunyuan", version, heads=WIDTH // 128, depth=1, single=1)
    v15 = version == "1.5"
    shape = (1, 32, FRAMES, *TOKENS) if v15 else (1, 16, FRAMES, 2 * TOKENS[0], 2 * TOKENS[1])
    conds = [[_rand((1, TEXT, HUNYUAN_TEXT_DIM), s), {"pooled_output": None if v15 else _rand((1, HUNYUAN_POOLED_DIM), s + 10)}]
             for s in (1, 2)]
    # 1.0 is guidance-distilled: one branch (cfg 1) with embedded guidance; 1.5 uses CFG.
    return model, torch.zeros(shape), None, conds, 6.0 if v15 else 1.0


def _ltxv():
    import torch

    from tools.tiny_models import LTXV_CAPTION_DIM, LTXV_CHANNELS, load
    model = load("ltxv", head_dim=WIDTH // 32, layers=2)
    shape = (1, LTXV_CHANNELS, FRAMES, *TOKENS)
    # The T5 padding mask travels with LTXV conditioning (the model's forward requires it).
    conds = [[_rand((1, TEXT, LTXV_CAPTION_DIM), s), {"frame_rate": 24, "attention_mask": torch.ones(1, TEXT, dtype=torch.long)}]
             for s in (1, 2)]
    return model, torch.zeros(shape), None, conds, 3.0


FAMILIES = {
    "wan_t2v": ("Wan 2.1 / 2.2 A14B T2V (WAN21)", lambda: _wan("t2v")),
    "wan_i2v": ("Wan 2.1 I2V (WAN21 image_to_video, CLIP tokens)", lambda: _wan("i2v")),
    "wan22_i2v": ("Wan 2.2 A14B I2V (in_dim 36)", lambda: _wan("a14b_i2v")),
    "wan22_ti2v": ("Wan 2.2 TI2V-5B image-to-video (WAN22, per-frame t)", lambda: _wan("ti2v_5b")),
    "hunyuan": ("HunyuanVideo 1.0 T2V, cfg 1 + embedded guidance", lambda: _hunyuan("1.0")),
    "hunyuan15": ("HunyuanVideo 1.5 T2V (HunyuanVideo15), CFG", lambda: _hunyuan("1.5")),
    "ltxv": ("LTX-Video (LTXV), CFG", _ltxv),
}


def sample(model, sampler, latent, mask, conds, cfg, steps):
    """(output, seconds) of one guider.sample run: the sampler benchmark's own, with this family's inputs."""
    from tools.bench import Inputs, sample_once
    inputs = Inputs(latent, _rand(latent.shape, 0), [conds[0]], [conds[1]], FRAMES * TOKENS[0] * TOKENS[1])
    return sample_once(model, sampler, inputs, steps, cuda=False, cfg=cfg, mask=mask)


def run_family(name: str, steps: int, preset: str, log=print) -> dict:
    import comfy.samplers

    from rhymeflow_core.keyframes import KeyframeSpec
    from rhymeflow_core.patch import apply_trajectory_projection
    from rhymeflow_core.presets import resolve_schedule
    from rhymeflow_core.report import observe
    from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
    from rhymeflow_core.sampling_loop import SamplerSettings
    from rhymeflow_core.schedule import ScheduleSettings

    label, build = FAMILIES[name]
    model, latent, mask, conds, cfg = build()
    patched = apply_trajectory_projection(model, "kv_cache", "auto")
    schedule = resolve_schedule(preset, ScheduleSettings(), steps)
    rhymeflow = RhymeFlowSamplerObject(SamplerSettings(schedule, KeyframeSpec("semantic", 2), "uni_pc"))
    dense = comfy.samplers.sampler_object("uni_pc")
    sample(model, dense, latent, mask, conds, cfg, 2)   # one-time costs (weights cast, kernels) outside the timing
    _, dense_s = sample(model, dense, latent, mask, conds, cfg, steps)
    with observe() as reports:
        _, ours_s = sample(patched, rhymeflow, latent, mask, conds, cfg, steps)
    report = reports[-1]
    row = {"family": name, "label": label, "class": type(model.model).__name__, "dense_s": dense_s, "rhymeflow_s": ours_s,
           "speedup": dense_s / ours_s, "full": report.full_passes, "active": report.active_passes,
           "keyframes": report.keyframes, "conditioned": report.conditioned_frames}
    log(f"{name:11s} dense {dense_s:6.2f} s  RhymeFlow {ours_s:6.2f} s  {row['speedup']:.2f}x  "
        f"full/active {row['full']}/{row['active']}  keyframes {row['keyframes']}")
    return row


def table(rows: list[dict], steps: int, preset: str, argv: list[str]) -> str:
    import torch
    lines = [f"Command: `python -m tools.family_bench {' '.join(argv)}`".rstrip() + f"; {datetime.date.today()}, commit {git_commit()}, "
             f"CPU ({platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}).", "",
             f"Every family: its real ComfyUI class, width {WIDTH}, random weights, {FRAMES} latent frames x "
             f"{TOKENS[0] * TOKENS[1]} tokens = {FRAMES * TOKENS[0] * TOKENS[1]:,} video tokens, {TEXT} text tokens, "
             f"{steps} steps uni_pc, RhymeFlow preset {preset} (kv_cache, 2 keyframes, semantic).", "",
             "| family | ComfyUI model | dense s | RhymeFlow s | speedup | full / active passes | keyframes (conditioned) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        cond = f" ({r['conditioned']})" if r["conditioned"] else ""
        lines.append(f"| {r['label']} | {r['class']} | {r['dense_s']:.2f} | {r['rhymeflow_s']:.2f} | {r['speedup']:.2f}x | "
                     f"{r['full']} / {r['active']} | {r['keyframes']}{cond} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated: " + ", ".join(FAMILIES))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--preset", default="balanced", choices=("quality", "balanced", "fast"))
    ap.add_argument("--out", help="write the markdown table here")
    args = ap.parse_args(argv)
    bootstrap()
    import logging
    logging.getLogger().setLevel(logging.ERROR)  # the host logs optional-import warnings
    rows = [run_family(name, args.steps, args.preset) for name in args.families.split(",")]
    text = table(rows, args.steps, args.preset, argv)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return text


if __name__ == "__main__":
    main()
