"""`make demo`: dense vs RhymeFlow on the embedded demo model, through ComfyUI's real executor (CPU).

Prints wall times, full/active pass counts, the keyframes chosen and the deviation from dense.
Usage: python -m tools.demo [--prompt TEXT] [--seed N] [--steps N] [--frames N] [--size PX]
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import bootstrap, run_prompt  # noqa: E402


class _ReportCatcher(logging.Handler):
    def __init__(self):
        super().__init__()
        self.reports = []

    def emit(self, record):
        if hasattr(record, "rhymeflow_report"):
            self.reports.append(record.rhymeflow_report)


def _run(prompt, out_dir):
    start = time.perf_counter()
    result = run_prompt(prompt, out_dir)
    if not result.success:
        raise SystemExit(f"workflow failed: {result.error}")
    return time.perf_counter() - start


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a red circle moves right; then a blue square falls")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--frames", type=int, default=49, help="pixel frames (4k+1); 49 -> 13 latent frames")
    ap.add_argument("--size", type=int, default=128, help="width and height in pixels (multiple of 16)")
    ap.add_argument("--warmup", type=int, default=6)
    args = ap.parse_args(argv)

    bootstrap()
    logging.basicConfig(level=logging.ERROR)  # the host logs optional-import warnings at start-up
    import safetensors.torch
    import torch

    from tools.workflows import demo_prompt
    catcher = _ReportCatcher()
    logging.getLogger("RhymeFlow").addHandler(catcher)
    logging.getLogger("RhymeFlow").setLevel(logging.INFO)
    common = dict(prompt=args.prompt, seed=args.seed, steps=args.steps, frames=args.frames,
                  width=args.size, height=args.size, warmup=args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _run(demo_prompt(**common, dense=True, rhymeflow=False), out)           # warm-up run: imports, first-call costs
        t_dense = _run(demo_prompt(**common, dense=True, rhymeflow=False), out)
        t_rhyme = _run(demo_prompt(**common, dense=False, rhymeflow=True), out)
        dense = safetensors.torch.load_file(str(sorted(out.glob("dense_*.latent"))[-1]))["latent_tensor"]
        ours = safetensors.torch.load_file(str(sorted(out.glob("rhymeflow_*.latent"))[-1]))["latent_tensor"]
    report = catcher.reports[-1]
    diff = (ours - dense).float()
    rel = float(diff.norm() / dense.float().norm())
    per_frame = diff.pow(2).mean(dim=(0, 1, 3, 4)).sqrt()
    peak = float(dense.abs().max())
    psnr = float(10 * torch.log10(peak ** 2 / diff.pow(2).mean().clamp_min(1e-12)))
    print()
    print("RhymeFlow demo (tiny random-weight Wan, CPU, ComfyUI's PromptExecutor)")
    print(f"  prompt: {args.prompt!r}  seed {args.seed}  {args.steps} steps  latent {tuple(dense.shape)}")
    print(f"  dense workflow      {t_dense:7.2f} s")
    print(f"  RhymeFlow workflow  {t_rhyme:7.2f} s   (sampler {report['sampler_seconds']:.2f} s; speedup {t_dense / t_rhyme:.2f}x)")
    print(f"  passes: {report['full_steps']} full / {report['active_steps']} active; keyframes {report['keyframes']}")
    print(f"  deviation from dense: relative L2 {rel:.4f}, latent PSNR {psnr:.1f} dB")
    print("  per-frame RMS difference: " + " ".join(f"{v:.3f}" for v in per_frame.tolist()))
    print("  (random weights: the numbers show the mechanics; a trained demo model comes next)")


if __name__ == "__main__":
    main()
