"""Keyframe selection (docs/algorithm.md §3): which latent frames are denoised at every step.

`select_keyframes` is called once, at the last warm-up step, with the CFG-combined clean
prediction. Every strategy's result gets frames 0 and F-1 added, as the reference does.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .errors import RhymeFlowInputError

STRATEGIES = ("semantic", "uniform", "manual", "random", "first")


@dataclass(frozen=True)
class KeyframeSpec:
    strategy: str = "semantic"
    count: int = 2                   # M, counting frames 0 and F-1
    threshold: float = 0.98          # cosine similarity below which a frame starts a new keyframe
    min_gap: int = 1
    manual: tuple[int, ...] = ()     # frame indices; negative ones count from the end
    seed: int = 0                    # for the `random` ablation only

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise RhymeFlowInputError(f"unknown keyframe strategy {self.strategy!r}; use one of {', '.join(STRATEGIES)}.")
        if self.strategy == "manual" and not self.manual:
            raise RhymeFlowInputError("strategy 'manual' needs a frame list such as '0,7,20' in `manual_frames`.")
        if self.count < 1:
            raise RhymeFlowInputError(f"keyframe count must be at least 1 (got {self.count}).")

    def check_frames(self, frames: int) -> None:
        """Raise before sampling if this spec cannot work on a latent with `frames` frames."""
        if frames < 2:
            raise RhymeFlowInputError(
                f"the latent has {frames} frame; RhymeFlow needs a video latent (Wan: length >= 5 pixel "
                "frames gives 2 latent frames). Use EmptyHunyuanLatentVideo / a Wan video latent, or a normal sampler for images.")
        if self.strategy != "manual" and self.count > frames:
            raise RhymeFlowInputError(
                f"{self.count} keyframes asked for, but the latent has only {frames} latent frames; "
                f"lower the keyframe count to at most {frames} or make the video longer.")
        for f in self.manual:
            if not -frames <= f < frames:
                raise RhymeFlowInputError(
                    f"manual keyframe {f} is out of range for a latent with {frames} latent frames "
                    f"(valid: 0..{frames - 1}, or negative from the end).")


def parse_manual_frames(text: str) -> tuple[int, ...]:
    """'0, 7, 20' -> (0, 7, 20). Raises a clear error on anything else."""
    text = (text or "").strip()
    if not text:
        return ()
    frames = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            frames.append(int(part))
        except ValueError:
            raise RhymeFlowInputError(
                f"manual keyframes {text!r}: {part!r} is not a frame number; write latent frame indices "
                "separated by commas, e.g. '0,7,20' (-1 is the last frame).") from None
    return tuple(frames)


def _descriptors(x0: torch.Tensor) -> torch.Tensor:
    # [B, C, F, H, W] -> [F, C*H*W], batch-averaged and L2-normalised (no spatial pooling).
    d = x0.float().mean(dim=0).transpose(0, 1).reshape(x0.shape[2], -1)
    return torch.nn.functional.normalize(d, dim=1)


def _drift_picks(d: torch.Tensor, spec: KeyframeSpec) -> list[int]:
    """Frame 0, each frame (at least min_gap after the previous pick) whose descriptor has drifted from
    the previous pick's below the similarity threshold, and the last frame."""
    frames = d.shape[0]
    picks, last = [0], 0
    for f in range(1, frames):
        if f - last >= spec.min_gap and float((d[f] * d[last]).sum()) < spec.threshold:
            picks.append(f)
            last = f
    if picks[-1] != frames - 1:
        picks.append(frames - 1)
    return picks


def _add_by_score(chosen: set[int], by_score: list[int], m: int, min_gap: int) -> None:
    """Add the highest-scoring frames at least min_gap from every chosen frame, up to m frames."""
    for f in by_score:
        if len(chosen) >= m:
            break
        if f not in chosen and all(abs(f - p) >= min_gap for p in chosen):
            chosen.add(f)


def _add_by_bisection(chosen: set[int], m: int) -> None:
    """Split the widest gap between chosen frames (the first of equal ones) until there are m frames."""
    while len(chosen) < m:
        ordered = sorted(chosen)
        gaps = [(ordered[k + 1] - ordered[k], -k) for k in range(len(ordered) - 1)]
        gap, neg_k = max(gaps)
        if gap <= 1:
            break
        chosen.add(ordered[-neg_k] + gap // 2)


def _semantic(x0: torch.Tensor, spec: KeyframeSpec) -> list[int]:
    frames = x0.shape[2]
    d = _descriptors(x0)
    cos_prev = (d[1:] * d[:-1]).sum(dim=1)
    score = [0.0] + (1.0 - cos_prev).tolist()
    picks = _drift_picks(d, spec)

    m = spec.count
    if m <= 1:
        return [0]
    # Highest score first; equal scores go to the lower frame index.
    by_score = sorted(range(frames), key=lambda f: (-score[f], f))
    if len(picks) > m:
        interior = [f for f in by_score if f in picks and f not in (0, frames - 1)][: m - 2]
        return sorted({0, frames - 1, *interior})
    chosen = set(picks)
    _add_by_score(chosen, by_score, m, spec.min_gap)
    _add_by_bisection(chosen, m)
    return sorted(chosen)


def _uniform(frames: int, m: int) -> list[int]:
    if m <= 1:
        return [0]
    return sorted({0, frames - 1, *(round(i * (frames - 1) / (m - 1)) for i in range(1, m - 1))})


def conditioned_frames(denoise_mask: torch.Tensor | None, frames: int) -> set[int]:
    """Latent frames that a denoise mask mostly keeps (image-to-video start frames, LTXV / TI2V-5B
    conditioning): they must be keyframes, since a skipping frame would drift from its condition."""
    if denoise_mask is None or denoise_mask.ndim != 5 or denoise_mask.shape[2] != frames:
        return set()
    strength = denoise_mask.float().mean(dim=(0, 1, 3, 4))
    return {int(f) for f in torch.nonzero(strength < 0.5).flatten()}


def select_keyframes(x0: torch.Tensor, spec: KeyframeSpec, always=()) -> list[int]:
    """Latent-frame indices of the keyframes, sorted, always holding 0, F-1 and the frames in
    `always` (conditioned frames); those come on top of the spec's count."""
    frames = x0.shape[2]
    spec.check_frames(frames)
    if spec.strategy == "manual":
        picks = [f % frames for f in spec.manual]
    elif spec.count >= frames:
        picks = list(range(frames))
    elif spec.strategy == "semantic":
        picks = _semantic(x0, spec)
    elif spec.strategy == "uniform":
        picks = _uniform(frames, spec.count)
    elif spec.strategy == "random":
        picks = random.Random(spec.seed).sample(range(frames), spec.count)
    else:  # first
        picks = list(range(spec.count))
    return sorted({0, frames - 1, *picks, *always})
