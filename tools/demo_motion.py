"""Does the demo model move objects as the prompt says? Measured from the pixels.

Two measures, both used in docs/demo_model.md:
- motion following: single-shape prompts ("a red circle moves right", ...) x seeds, dense sampling
  (uni_pc 16 steps, cfg 4, shift 3); a sample counts when the object's centroid moves more than
  3 px in the prompted direction between its first and last visible frame (the test's measure);
- motion-word gap: how much the model's output changes when only the motion word of the prompt
  changes ("moves right" -> "moves left"), relative to changing only the colour word, on noised
  training clips. Near 0 means the model ignores motion words; an early signal for a training run.

    python -m tools.demo_motion [--weights FILE] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import bootstrap

# (prompt, axis, sign): sign +1 means the coordinate grows (right, down)
CASES = [
    ("a red circle moves right", "x", 1), ("a blue square moves left", "x", -1),
    ("a yellow circle falls", "y", 1), ("a green triangle moves up", "y", -1),
    ("a white square moves down", "y", 1), ("a cyan circle moves left", "x", -1),
    ("a orange triangle moves right", "x", 1), ("a magenta square moves up", "y", -1),
]
MIN_PIXELS = 4  # a frame shows the object when at least this many pixels differ from the background


def object_track(video):
    """Per frame of [F, H, W, 3]: foreground mask (far from the background colour), the mean
    foreground colour over the clip, and the centroid (x, y) per frame."""
    import torch

    from tools.demo_clips import BACKGROUND
    fg = (video - torch.tensor(BACKGROUND)).abs().max(dim=-1).values > 0.3
    ys, xs = torch.meshgrid(torch.arange(video.shape[1]), torch.arange(video.shape[2]), indexing="ij")
    colour = (video * fg[..., None]).sum(dim=(0, 1, 2)) / fg.sum().clamp_min(1)
    cx = torch.stack([(xs * f).sum() / f.sum().clamp_min(1) for f in fg])
    cy = torch.stack([(ys * f).sum() / f.sum().clamp_min(1) for f in fg])
    return fg, colour, cx, cy


def displacement(video, axis: str, sign: int) -> float:
    """Centroid movement in the prompted direction between the first and last frame showing the object."""
    fg, _, cx, cy = object_track(video)
    track = (cx if axis == "x" else cy)[fg.flatten(1).sum(1) >= MIN_PIXELS]
    return sign * float(track[-1] - track[0]) if len(track) > 1 else float("nan")


def motion_word_gap(diffusion_model, noise_levels=(0.5, 0.95), clips: int = 8) -> dict[float, float]:
    """|out(motion word swapped) - out| / |out(colour word swapped) - out| per noise level."""
    import numpy as np
    import torch

    from rhymeflow_core.demo_model import encode_pixels, encode_prompt
    from tools.demo_clips import render

    rng = np.random.default_rng(0)
    x0 = encode_pixels(torch.from_numpy(np.stack([render("a red circle moves right", rng) for _ in range(clips)])))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    prompts = [encode_prompt(p).repeat(clips, 1, 1) for p in
               ("a red circle moves right", "a red circle moves left", "a blue circle moves right")]
    gaps = {}
    for s in noise_levels:
        xt, t = (1 - s) * x0 + s * noise, torch.full((clips,), s * 1000.0)
        with torch.no_grad():
            base, motion, colour = (diffusion_model(xt, t, p).float() for p in prompts)
        gaps[s] = float((motion - base).norm() / (colour - base).norm())
    return gaps


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=None, help="demo weights (default: the bundled file)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 1..N per prompt")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    bootstrap()
    from tools.fidelity import Harness
    from tools.fidelity_profiles import PROFILES

    h = Harness(PROFILES["demo"], weights=args.weights)   # uni_pc, shift 3, cfg 4 (16 steps below)
    gaps = motion_word_gap(h.model.model.diffusion_model)
    print("motion-word gap (motion word vs colour word): " + ", ".join(f"noise {s}: {g:.3f}" for s, g in gaps.items()))
    rows, ok = [], 0
    for prompt, axis, sign in CASES:
        moved = [displacement(h.dense(prompt, seed, 16), axis, sign) for seed in range(1, args.seeds + 1)]
        ok += sum(d > 3 for d in moved)
        rows.append({"prompt": prompt, "displacement_px": moved})
        print(f"{prompt:32s} " + " ".join(f"{d:+6.1f}" for d in moved), flush=True)
    total = len(CASES) * args.seeds
    print(f"motion as prompted: {ok} / {total}")
    if args.json:
        Path(args.json).write_text(json.dumps({"weights": args.weights or "bundled", "word_gap": gaps, "rows": rows,
                                               "ok": ok, "total": total}, indent=1))


if __name__ == "__main__":
    main()
