"""What the schedule view in the browser draws, computed here so Python stays the one source of truth.

`view_from_request` turns the sampler node's widget values (as the frontend sends them to
POST /rhymeflow/schedule) into `schedule_view`: the role of every step, the pass counts, the
keyframes (planned, or the ones a run chose) and the ideal speedup. The JavaScript only draws it.
"""
from __future__ import annotations

import torch

from .errors import RhymeFlowInputError
from .keyframes import STRATEGIES, KeyframeSpec, parse_manual_frames, select_keyframes
from .presets import CUSTOM, PRESET_NAMES, resolve_schedule
from .sampling_loop import SamplerSettings, check_inputs
from .schedule import ScheduleSettings, build_schedule

# Cost of an active pass as a fraction of a full pass, by keyframe count M: measured for Wan 2.1
# 1.3B at 480x832x81 frames with the kv_cache context on an H200 (docs/algorithm.md §6).
# The cost grows with M because keyframe tokens are the queries; other models and sizes differ.
ACTIVE_COST = {2: 0.109, 3: 0.154, 4: 0.198, 6: 0.301}
ACTIVE_COST_SOURCE = "active pass = {cost:.3f} of a full pass (measured: Wan 2.1 1.3B 480p, kv_cache, M={m})"
MAX_STEPS, MAX_FRAMES = 10000, 4096


def active_cost(keyframes: int, frames: int) -> float:
    """Active/full cost ratio for M keyframes: the measured table, linear between and beyond its points."""
    if keyframes >= frames:
        return 1.0  # every frame is a keyframe: an "active" pass is a full pass
    points = sorted(ACTIVE_COST.items())
    m = max(keyframes, points[0][0])
    if m in ACTIVE_COST:
        return ACTIVE_COST[m]
    for (m0, c0), (m1, c1) in zip(points, points[1:], strict=False):
        if m <= m1:
            return c0 + (c1 - c0) * (m - m0) / (m1 - m0)
    (m0, c0), (m1, c1) = points[-2:]
    return min(1.0, c1 + (c1 - c0) * (m - m1) / (m1 - m0))


def planned_keyframes(frames: int, spec: KeyframeSpec) -> tuple[list[int], int]:
    """(keyframes known before sampling, how many more the semantic scan picks at the end of warm-up)."""
    if spec.strategy == "semantic" and spec.count < frames:
        known = sorted({0, frames - 1})
        return known, max(0, spec.count - len(known))
    # The other strategies do not look at the content: ask the real selection with a blank latent.
    return select_keyframes(torch.zeros(1, 1, frames, 1, 1), spec), 0


def schedule_view(steps: int, frames: int, preset: str = CUSTOM, schedule: ScheduleSettings = ScheduleSettings(),
                  keyframes: KeyframeSpec = KeyframeSpec(), chosen: list[int] | None = None) -> dict:
    settings = resolve_schedule(preset, schedule, steps)
    plan = build_schedule(steps, settings)
    warnings = []
    try:  # the sampler's own pre-flight check, on a synthetic latent and sigmas of this size
        check_inputs(SamplerSettings(settings, keyframes), (1, 16, frames, 1, 1), torch.linspace(1.0, 0.0, steps + 1))
        known, pending = (sorted(chosen), 0) if chosen else planned_keyframes(frames, keyframes)
    except RhymeFlowInputError as e:
        warnings.append(str(e))
        known, pending = (sorted(chosen), 0) if chosen else ([0, frames - 1] if frames > 1 else [0], 0)
    count = len(known) + pending
    cost = active_cost(count, frames)
    return {
        "steps": steps, "frames": frames, "preset": preset,
        "warmup_steps": settings.warmup_steps, "min_stride": settings.min_stride, "max_stride": settings.max_stride,
        "transition_1": settings.transition_1, "transition_2": settings.transition_2,
        "stride_schedule": "progressive" if settings.progressive else "fixed",
        "roles": plan.roles(), "groups": [[g.start, g.end] for g in plan.groups], "detect_step": plan.detect_step,
        "full_passes": plan.full_passes, "active_passes": plan.active_passes,
        "keyframes": known, "keyframes_pending": pending, "keyframes_source": "chosen" if chosen else "planned",
        "active_cost": cost, "active_cost_note": ACTIVE_COST_SOURCE.format(cost=cost, m=count),
        "ideal_speedup": plan.ideal_speedup(cost), "warnings": warnings,
    }


# ---- request parsing (the frontend sends widget values by their input names) --------------------
def _int(data: dict, name: str, default: int, low: int, high: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise RhymeFlowInputError(f"{name} must be a whole number, got {value!r}.")
    return min(max(int(value), low), high)


def _float(data: dict, name: str, default: float) -> float:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RhymeFlowInputError(f"{name} must be a number, got {value!r}.")
    return float(value)


def _choice(data: dict, name: str, default: str, options) -> str:
    value = data.get(name, default)
    if value not in options:
        raise RhymeFlowInputError(f"{name} must be one of {', '.join(options)}, got {value!r}.")
    return value


def keyframe_spec_from(data: dict | None) -> KeyframeSpec:
    """A RhymeFlowKeyframes node's widget values as the KeyframeSpec it would produce (None: the default)."""
    if not data:
        return KeyframeSpec()
    strategy = _choice(data, "strategy", "semantic", STRATEGIES)
    return KeyframeSpec(strategy=strategy, count=_int(data, "count", 2, 1, MAX_FRAMES),
                        threshold=_float(data, "similarity_threshold", 0.98), min_gap=_int(data, "min_gap", 1, 1, MAX_FRAMES),
                        manual=parse_manual_frames(data.get("manual_frames", "")) if strategy == "manual" else ())


def view_from_request(data: dict) -> dict:
    if not isinstance(data, dict):
        raise RhymeFlowInputError("the schedule request must be a JSON object of widget values.")
    schedule = ScheduleSettings(
        warmup_steps=_int(data, "warmup_steps", 10, 0, MAX_STEPS), min_stride=_int(data, "min_stride", 3, 1, MAX_STEPS),
        max_stride=_int(data, "max_stride", 5, 1, MAX_STEPS), transition_1=_float(data, "transition_1", 0.3),
        transition_2=_float(data, "transition_2", 0.7),
        progressive=_choice(data, "stride_schedule", "progressive", ("progressive", "fixed")) == "progressive")
    chosen = data.get("chosen_keyframes")
    if chosen is not None and (not isinstance(chosen, list) or not all(isinstance(f, int) for f in chosen)):
        raise RhymeFlowInputError("chosen_keyframes must be a list of latent frame indices.")
    return schedule_view(steps=_int(data, "steps", 30, 1, MAX_STEPS), frames=_int(data, "frames", 21, 1, MAX_FRAMES),
                         preset=_choice(data, "preset", CUSTOM, PRESET_NAMES), schedule=schedule,
                         keyframes=keyframe_spec_from(data.get("keyframes")), chosen=chosen or None)
