"""The fidelity harness end to end on a tiny subset (the full run is `python -m tools.fidelity`)."""
import json

import pytest

from rhymeflow_core.presets import PRESETS
from rhymeflow_core.schedule import ScheduleSettings, build_schedule
from tools import fidelity
from tools.fidelity_frontier import frontier_steps, interpolate
from tools.fidelity_profiles import PROFILES, REAL_RATIO, real_ratio


def test_frontier_spans_a_quarter_to_four_fifths_of_every_reference():
    for reference in (20, 30, 50):
        steps = frontier_steps(reference)
        assert len(steps) >= 6 and all(0.25 <= n / reference <= 0.8 for n in steps)
        assert steps[0] / reference < 0.3 and steps[-1] / reference >= 0.79
    assert {20, 25, 30} <= set(frontier_steps(50))  # the sensitivity shares 40 / 50 / 60 %


def test_frontier_interpolates_between_its_points_only():
    pts = [(10.0, 20.0), (20.0, 30.0)]
    assert interpolate(pts, 15.0) == 25.0 and interpolate(pts, 25.0) is None


def test_real_size_ratio_scales_with_the_rows():
    assert real_ratio(2, 21) == pytest.approx(REAL_RATIO)
    assert real_ratio(2, 13) == pytest.approx(REAL_RATIO * 21 / 13)
    assert PROFILES["wan"].shift == 8 and PROFILES["wan"].cfg == 6 and PROFILES["demo"].shift == 3


@pytest.mark.slow
def test_harness_runs_end_to_end_on_a_subset(tmp_path):
    fidelity.main(["--quick", "--references", "8", "--methods", "balanced,dense", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "fidelity.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    balanced = rows["preset balanced"]
    # The cost counts the passes the model really ran: the schedule's, at the measured and the real-size ratio.
    p = PRESETS["balanced"]
    schedule = build_schedule(8, ScheduleSettings(p.warmup_steps(8), p.min_stride, p.max_stride))
    ratio = data["meta"]["active_cost"]["2"]
    assert 0 < ratio < 1 and schedule.active_passes > 0
    assert balanced["cost"] == pytest.approx(schedule.full_passes + schedule.active_passes * ratio)
    assert balanced["cost_real"] == pytest.approx(schedule.full_passes + schedule.active_passes * real_ratio(2, 13))
    frontier = [r for r in data["rows"] if r["group"] == "frontier"]
    assert len(frontier) == len(frontier_steps(8)) and all(r["cost"] == r["steps"] for r in frontier)
    for r in rows.values():
        assert r["n"] == 1 and 5 < r["psnr"] < 100 and 0 < r["ssim"] <= 1
    assert "Δ dB here" in (tmp_path / "fidelity.md").read_text()
    assert (tmp_path / "fidelity.png").stat().st_size > 1000
