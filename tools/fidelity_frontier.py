"""The step-reduction frontier: dense sampling at fewer steps, the first thing an artist tries.

For a reference of R steps the frontier is dense uni_pc at six shares of R between 25 % and 80 %
(the same sigmas schedule, recomputed for the smaller count). 40 %, 50 % and 60 % are among the
shares, so the frontier at R = 50 also gives the step-reduction sensitivity that the published
anchors (tools/fidelity_profiles.py) report. A method beats step reduction where its point lies
above the frontier's line at the same cost.
"""
from __future__ import annotations

FRONTIER_SHARES = (0.25, 0.4, 0.5, 0.6, 0.7, 0.8)
SENSITIVITY_SHARES = (0.4, 0.5, 0.6)
REFERENCES = (20, 30, 50)


def frontier_steps(reference: int, shares=FRONTIER_SHARES) -> list[int]:
    """Distinct dense step counts, rounded half up, at least 2 and below the reference."""
    return sorted({max(2, min(reference - 1, int(reference * s + 0.5))) for s in shares})


def interpolate(points: list[tuple[float, float]], cost: float) -> float | None:
    """The frontier's value at `cost` (linear between its points; None outside them)."""
    points = sorted(points)
    for (c0, v0), (c1, v1) in zip(points, points[1:], strict=False):
        if c0 <= cost <= c1:
            return v0 if c1 == c0 else v0 + (v1 - v0) * (cost - c0) / (c1 - c0)
    return None
