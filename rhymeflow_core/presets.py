"""Schedule presets: the common settings, one click away.

A preset fixes the whole rhythm schedule (warm-up, strides, transitions) and scales the warm-up
with the step count, so the same preset works at 20, 30 and 50 steps. `custom` uses the node's
widgets as given. Solver and keyframes stay with their own inputs in every preset.

Why these values (docs/algorithm.md §5, README "Step counts"):
  quality   30 % warm-up, strides 2-3: the paper's own stride setting with a longer warm-up;
            most full passes, closest to dense.
  balanced  20 % warm-up, strides 3-5: the reference code's release setting (10 of 50 steps),
            and the recommended warm-up at 20 and 30 steps (4 and 6).
  fast      15 % warm-up, strides 4-5: fewer full passes; strides stay at 5 or below, beyond
            which non-keyframes shimmer (paper, Fig. 6).
Fidelity numbers per preset: docs/fidelity.md.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .errors import RhymeFlowInputError
from .schedule import ScheduleSettings

CUSTOM = "custom"
# What a new RhymeFlowSampler / RhymeFlowKSampler starts with: scaled to the step count, so it is never
# refused at few steps and equals the release setting at 50 (docs/ui.md "Defaults"). A node saved before
# the preset input existed has no preset value and ran its widgets: it loads and runs as LEGACY_PRESET.
DEFAULT_PRESET = "balanced"
LEGACY_PRESET = CUSTOM


@dataclass(frozen=True)
class Preset:
    warmup_percent: int  # of the step count, rounded half up; integers keep the rounding exact
    min_stride: int
    max_stride: int
    transition_1: float = 0.3
    transition_2: float = 0.7

    def warmup_steps(self, steps: int) -> int:
        # At least one synchronous step, and at least one step left to accelerate.
        return max(1, min(steps - 1, (steps * self.warmup_percent + 50) // 100))


PRESETS: dict[str, Preset] = {
    "quality": Preset(warmup_percent=30, min_stride=2, max_stride=3),
    "balanced": Preset(warmup_percent=20, min_stride=3, max_stride=5),
    "fast": Preset(warmup_percent=15, min_stride=4, max_stride=5),
}
PRESET_NAMES = (*PRESETS, CUSTOM)


def resolve_schedule(preset: str, custom: ScheduleSettings, steps: int) -> ScheduleSettings:
    """The schedule settings a sampler with this preset uses for `steps` steps."""
    if preset == CUSTOM:
        return custom
    if preset not in PRESETS:
        raise RhymeFlowInputError(f"unknown preset {preset!r}; use one of {', '.join(PRESET_NAMES)}.")
    p = PRESETS[preset]
    return replace(custom, warmup_steps=p.warmup_steps(steps), min_stride=p.min_stride, max_stride=p.max_stride,
                   transition_1=p.transition_1, transition_2=p.transition_2, progressive=True)
