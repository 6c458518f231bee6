"""The rhythm schedule against every table in docs/algorithm.md §2."""
import pytest

from rhymeflow_core.schedule import ACTIVE, RHYTHMIC, WARMUP, ScheduleSettings, build_schedule

# (steps, warm-up, min stride, max stride, full, active, "start:span ...") from docs/algorithm.md §2.
TABLE = [
    (50, 10, 3, 5, 21, 29, "10:3 13:3 16:3 19:3 22:4 26:4 30:4 34:4 38:5 43:5 48:2"),
    (50, 8, 3, 5, 20, 30, "8:3 11:3 14:3 17:3 20:3 23:4 27:4 31:4 35:4 39:5 44:5 49:1"),
    (50, 6, 3, 5, 18, 32, "6:3 9:3 12:3 15:3 18:3 21:4 25:4 29:4 33:4 37:5 42:5 47:3"),
    (50, 8, 2, 3, 25, 25, None),
    (50, 10, 2, 3, 26, 24, None),
    (50, 15, 2, 3, 29, 21, None),
    (50, 8, 2, 4, 24, 26, None),
    (50, 5, 3, 5, 17, 33, None),
    (30, 10, 3, 5, 16, 14, "10:3 13:3 16:4 20:4 24:5 29:1"),
    (30, 8, 3, 5, 14, 16, "8:3 11:3 14:3 17:4 21:4 25:5"),
    (30, 6, 3, 5, 13, 17, "6:3 9:3 12:3 15:4 19:4 23:5 28:2"),
    (30, 10, 2, 3, 18, 12, "10:2 12:2 14:2 16:3 19:3 22:3 25:3 28:2"),
    (30, 8, 2, 3, 17, 13, "8:2 10:2 12:2 14:2 16:3 19:3 22:3 25:3 28:2"),
    (30, 6, 2, 3, 16, 14, "6:2 8:2 10:2 12:2 14:3 17:3 20:3 23:3 26:3 29:1"),
    (20, 10, 3, 5, 13, 7, "10:3 13:4 17:3"),
    (20, 8, 3, 5, 12, 8, "8:3 11:3 14:4 18:2"),
    (20, 6, 3, 5, 10, 10, "6:3 9:3 12:4 16:4"),
    (20, 10, 2, 3, 14, 6, "10:2 12:2 14:3 17:3"),
    (20, 8, 2, 3, 13, 7, "8:2 10:2 12:3 15:3 18:2"),
    (20, 6, 2, 3, 12, 8, "6:2 8:2 10:3 13:3 16:3 19:1"),
]


@pytest.mark.parametrize("steps,warmup,n_min,n_max,full,active,groups", TABLE)
def test_spec_tables(steps, warmup, n_min, n_max, full, active, groups):
    s = build_schedule(steps, ScheduleSettings(warmup, n_min, n_max))
    assert (s.full_passes, s.active_passes) == (full, active)
    if groups:
        assert " ".join(f"{g.start}:{g.span}" for g in s.groups) == groups
    roles = s.roles()
    assert roles.count(WARMUP) == warmup
    assert roles.count(WARMUP) + roles.count(RHYTHMIC) == full
    assert roles.count(ACTIVE) == active


def test_rounding_is_half_to_even():
    # R = 15: 0.3*15 = 4.5 -> 4 and 0.7*15 = 10.5 -> 10 (half-up would give 10/10 passes).
    s = build_schedule(20, ScheduleSettings(5, 3, 5))
    assert (s.full_passes, s.active_passes) == (9, 11)
    # R = 35 (the example in docs/algorithm.md §2): a = 10, b = 24.
    s = build_schedule(50, ScheduleSettings(15, 2, 3))
    assert [g.start for g in s.groups][:7] == [15, 17, 19, 21, 23, 25, 28]


def test_no_warmup_still_starts_synchronously():
    s = build_schedule(10, ScheduleSettings(0, 3, 3))
    assert s.warmup == 1 and s.detect_step == 0
    assert [g.start for g in s.groups] == [1, 4, 7]


def test_fixed_stride_and_absolute_transitions():
    fixed = build_schedule(50, ScheduleSettings(10, 3, 5, progressive=False))
    assert {g.stride for g in fixed.groups} == {3}
    absolute = build_schedule(50, ScheduleSettings(10, 2, 4, transition_1=5, transition_2=20))
    assert [g.stride for g in absolute.groups][:4] == [2, 2, 2, 3]


def test_ideal_speedup_matches_anchor():
    s = build_schedule(50, ScheduleSettings())
    assert s.ideal_speedup(0.109) == pytest.approx(2.07, abs=0.01)


@pytest.mark.parametrize("steps,full,active", [(50, 21, 29), (30, 16, 14), (20, 13, 7)])
def test_release_defaults_at_template_step_counts(steps, full, active):
    """Decision (README, "Step counts"): warm-up stays 10 absolute steps; at the 20-30 steps of
    ComfyUI's Wan templates that is a conservative schedule, and the README recommends 6 / 4."""
    from rhymeflow_core.sampling_loop import SamplerSettings
    s = build_schedule(steps, SamplerSettings().schedule)
    assert (s.full_passes, s.active_passes) == (full, active)
