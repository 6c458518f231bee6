"""Adaptive warm-up end (docs/algorithm.md §10): stop the synchronous warm-up once the clean prediction settles.

The warm-up is there so that every frame's trajectory has become nearly straight before frames start to
skip, and so that keyframes are chosen from a prediction that already shows the video's content. Both
are a property of the clean prediction x̂0 (CFG-combined, what every solver steps with), not of a step
count: when x̂0 hardly changes from one warm-up step to the next, the frames' velocities have settled.

  fixed     the paper's release behaviour: the schedule's warm-up, always.
  adaptive  the warm-up ends after the first step i (0-based) with i + 1 >= MIN_WARMUP whose settle
            measure is below the tolerance, and at the latest at the schedule's warm-up (its bound). The
            schedule is then rebuilt with the warm-up that ran (same strides and transitions, which are
            shares of the post-warm-up steps), and keyframes are chosen at that last warm-up step.

Settle measure at step i >= 1: ||x̂0_i - x̂0_{i-1}|| / ||x̂0_i|| / (sigma_{i-1} - sigma_i), the relative
change of the clean prediction per unit of sigma (L2 norms over the whole latent). Dividing by the
sigma step makes one tolerance mean the same at 20, 30 or 50 steps (the change per step shrinks with
the step size).
"""
from __future__ import annotations

import torch

FIXED, ADAPTIVE = "fixed", "adaptive"
WARMUP_MODES = (FIXED, ADAPTIVE)
MIN_WARMUP = 2            # never choose keyframes from the first, pure-noise prediction
DEFAULT_SETTLE = 0.5      # docs/algorithm.md §10: measured on the demo model at 20 and 30 steps


def settle_measure(previous: torch.Tensor, current: torch.Tensor, sigma_previous, sigma) -> float:
    """Relative change of the clean prediction per unit of sigma between two consecutive steps."""
    change = (current.float() - previous.float()).norm() / current.float().norm().clamp_min(1e-12)
    return float(change / (sigma_previous - sigma))


class WarmupEnd:
    """Fed every warm-up step's clean prediction; says whether that step should be the last of the warm-up."""

    def __init__(self, mode: str, settle: float, sigmas: torch.Tensor):
        self.adaptive, self.settle, self.sigmas = mode == ADAPTIVE, settle, sigmas
        self.previous = None
        self.measures: list[float] = []  # per warm-up step from step 1 on, for the run report

    def ends_at(self, i: int, denoised: torch.Tensor, bound: int) -> bool:
        """True when step i (< bound - 1) has settled and is late enough to end the warm-up early."""
        if not self.adaptive:
            return False
        previous, self.previous = self.previous, (denoised if i < bound - 1 else None)  # kept only while needed
        if previous is None:
            return False
        self.measures.append(settle_measure(previous, denoised, self.sigmas[i - 1], self.sigmas[i]))
        return i + 1 >= MIN_WARMUP and i < bound - 1 and self.measures[-1] < self.settle
