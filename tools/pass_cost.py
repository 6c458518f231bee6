"""Measure the cost of an active pass relative to a full pass (CPU or CUDA), with the real adapter.

Usage: python -m tools.pass_cost [--dim 256] [--layers 2] [--frames 21] [--tokens-h 12] [--tokens-w 20]
         [--keyframes 2] [--repeat 3]
Prints milliseconds per full pass (stock WanModel forward), per recording pass, and per active
pass in kv_cache / hidden_cache mode, cond and uncond batched (batch 2).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import bootstrap


def best_ms(fn, repeat: int = 3) -> float:
    """Best of `repeat` timed calls after one untimed call, in milliseconds."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def pass_times(dm, x, t, ctx, keyframes, mode: str = "kv_cache", repeat: int = 3) -> tuple[float, float]:
    """(recording pass ms, active pass ms) of the Wan adapter on one fresh run, cond and uncond batched."""
    from rhymeflow_core.adapters.wan import WanAdapter
    from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun

    run = RhymeFlowRun(ProjectionConfig(mode), WanAdapter())
    to = {"uuids": ["cond", "uncond"][: x.shape[0]]}

    def one_pass(kind):
        run.set_plan(kind, tuple(keyframes))
        return run.adapter.forward(dm, run, to, (x, t, ctx), {})

    return best_ms(lambda: one_pass(RECORD), repeat), best_ms(lambda: one_pass(ACTIVE), repeat)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--frames", type=int, default=21)
    ap.add_argument("--tokens-h", type=int, default=12)
    ap.add_argument("--tokens-w", type=int, default=20)
    ap.add_argument("--keyframes", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    bootstrap()
    import logging
    logging.basicConfig(level=logging.ERROR)  # the host logs optional-import warnings
    import torch

    from rhymeflow_core.keyframes import KeyframeSpec, select_keyframes
    from tools import tiny_models

    model = tiny_models.load("wan", "t2v", dim=args.dim, ffn_dim=4 * args.dim, layers=args.layers)
    dm = model.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, args.frames, 2 * args.tokens_h, 2 * args.tokens_w, generator=g)
    t = torch.full((2,), 500.0)
    ctx = torch.randn(2, 64, 4096, generator=g) * 0.5
    keyframes = tuple(select_keyframes(x, KeyframeSpec("uniform", args.keyframes)))

    with torch.no_grad():
        full = best_ms(lambda: dm(x, t, ctx), args.repeat)
        print(f"tokens {args.frames * args.tokens_h * args.tokens_w}, dim {args.dim}, {args.layers} blocks, keyframes {keyframes}")
        print(f"full pass (stock forward): {full:8.1f} ms")
        for mode in ("kv_cache", "hidden_cache"):
            rec, act = pass_times(dm, x, t, ctx, keyframes, mode, args.repeat)
            print(f"{mode:12s}: recording pass {rec:8.1f} ms ({rec / full:.2f}), active pass {act:8.1f} ms ({act / full:.3f} of full)")


if __name__ == "__main__":
    main()
