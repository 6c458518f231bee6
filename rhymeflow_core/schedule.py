"""The rhythm schedule: synchronous warm-up, then groups that start at rhythmic points.

docs/algorithm.md §1 and §2. Every step index gets one of three roles:
  WARMUP   - full pass, every frame advanced by the keyframe solver;
  RHYTHMIC - full pass at the start of a group; non-keyframes jump to the group end;
  ACTIVE   - active pass inside a group; only keyframes advance.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import RhymeFlowInputError

WARMUP, RHYTHMIC, ACTIVE = "warmup", "rhythmic", "active"


@dataclass(frozen=True)
class ScheduleSettings:
    warmup_steps: int = 10
    min_stride: int = 3
    max_stride: int = 5
    transition_1: float = 0.3
    transition_2: float = 0.7
    progressive: bool = True


@dataclass(frozen=True)
class Group:
    start: int  # the rhythmic point
    end: int    # exclusive; all frames are synchronized again at `end`
    stride: int  # the nominal stride (end - start can be shorter at the last group)

    @property
    def span(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Schedule:
    steps: int
    warmup: int          # number of synchronous steps before the first group (>= 1)
    detect_step: int     # keyframes are chosen from this step's clean prediction
    groups: tuple[Group, ...]
    # Step -> index into `groups` (-1 in warm-up), built once: `role` and `group_at` are O(1), so a
    # whole schedule (`roles()`, the sampling loop) is linear in the step count.
    _group_of_step: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        index = [-1] * self.steps
        for k, g in enumerate(self.groups):
            index[g.start:g.end] = [k] * (g.end - g.start)
        object.__setattr__(self, "_group_of_step", tuple(index))

    def role(self, i: int) -> str:
        if i < self.warmup:
            return WARMUP
        return RHYTHMIC if self.group_at(i).start == i else ACTIVE

    def group_at(self, i: int) -> Group:
        k = self._group_of_step[i] if 0 <= i < self.steps else -1
        if k < 0:
            raise IndexError(f"step {i} is in no group")
        return self.groups[k]

    @property
    def full_passes(self) -> int:
        return self.warmup + len(self.groups)

    @property
    def active_passes(self) -> int:
        return self.steps - self.full_passes

    def ideal_speedup(self, active_cost: float) -> float:
        """Model-cost speedup over dense if an active pass costs `active_cost` full passes."""
        return self.steps / (self.full_passes + self.active_passes * active_cost)

    def roles(self) -> list[str]:
        roles = [WARMUP] * min(self.warmup, self.steps) + [ACTIVE] * max(self.steps - self.warmup, 0)
        for g in self.groups:
            roles[g.start] = RHYTHMIC
        return roles


def _transition_offset(p: float, remaining: int) -> int:
    # Fractions in (0, 1] scale R with Python's round (half to even, as the reference);
    # larger values are absolute offsets, truncated.
    value = round(p * remaining) if 0 < p <= 1 else int(p)
    return min(max(value, 0), remaining)


def build_schedule(steps: int, settings: ScheduleSettings = ScheduleSettings()) -> Schedule:
    if steps < 1:
        raise RhymeFlowInputError("RhymeFlow needs at least one sampling step; raise `steps` on the scheduler node.")
    warmup = min(max(settings.warmup_steps, 0), steps - 1)
    remaining = steps - warmup
    n_min = max(settings.min_stride, 1)
    n_max = max(settings.max_stride, n_min)
    a = _transition_offset(settings.transition_1, remaining)
    b = max(_transition_offset(settings.transition_2, remaining), a)

    groups = []
    i = max(warmup, 1)  # with no warm-up, step 0 is still a synchronous step (docs/algorithm.md §2)
    while i < steps:
        offset = i - warmup + 1
        if not settings.progressive or offset <= a:
            stride = n_min
        elif offset <= b:
            stride = min(n_min + 1, n_max)
        else:
            stride = n_max
        end = min(steps, i + stride)
        groups.append(Group(i, end, stride))
        i = end
    first = max(warmup, 1)
    return Schedule(steps=steps, warmup=first, detect_step=first - 1, groups=tuple(groups))


def few_steps_warnings(schedule: Schedule) -> dict[str, str]:
    """What a short schedule cannot do well, by topic (said once per run: RunReport.warn).

    At 4-8 steps (distill LoRAs) a preset's warm-up rounds to one step: the keyframes are chosen
    from the first, very noisy prediction, and the trajectories RhymeFlow extrapolates between
    rhythmic points are far from straight (docs/algorithm.md §5). With no group longer than one step
    nothing is ever skipped.
    """
    warnings = {}
    if schedule.warmup < 2:
        warnings["short_warmup"] = (
            f"the warm-up is {schedule.warmup} step of {schedule.steps}: keyframes come from the first, very noisy "
            "prediction and the non-keyframes extrapolate from early, curved trajectories. Use at least 2 warm-up steps "
            "(warmup_steps, or more steps for a preset); for distilled few-step models sample without RhymeFlow.")
    if not any(g.span > 1 for g in schedule.groups):
        warnings["no_active_pass"] = (
            f"no group of this schedule ({schedule.steps} steps, warm-up {schedule.warmup}) has room for an active "
            "pass, so every step is a full pass and RhymeFlow saves nothing. Lower warmup_steps, raise the strides, "
            "or use more steps.")
    return warnings
