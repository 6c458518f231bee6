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
    fidelity.main(["--quick", "--references", "8", "--methods", "balanced,dense", "--out", str(tmp_path)])  # + its partial passes
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
    partial = rows["preset balanced + refresh_budget 0.25"]   # partial passes: more query rows per active pass
    assert balanced["cost_real"] < partial["cost_real"] < balanced["cost_real"] + schedule.active_passes * real_ratio(11, 13)
    assert "Δ dB here" in (tmp_path / "fidelity.md").read_text()
    assert (tmp_path / "fidelity.png").stat().st_size > 1000


def _shard(out, seed, rows, reference=30):
    from tools import fidelity_report
    meta = {"command": f"python -m tools.fidelity --shard {seed}/2", "date": "2026-11-30", "commit": "x", "device": "cpu",
            "profile": "wan", "shift": 8, "cfg": 6, "solver": "uni_pc", "frames": 13, "pairs": 1, "prompts": ["p"],
            "seeds": [seed], "prompt_set": "busy", "minutes": 1.0, "active_cost": {2: 0.2, 4: 0.3},
            "dense_seconds": {reference: 2.0 * seed}, "real_ratio": {2: 0.18, 4: 0.35}}
    fidelity_report.write_shard({reference: rows}, meta, out)


def _result(psnr, cost):
    return {"psnr": psnr, "ssim": 0.5, "temporal_error": 0.3, "cost": cost, "cost_real": cost, "seconds": 1.0}


def test_shards_merge_into_one_table_and_a_later_row_keeps_its_own_count(tmp_path):
    from tools import fidelity_report
    def dense(psnr, steps=15):
        return fidelity.Method(f"dense, {steps} steps", kind="dense", steps=steps, group="frontier",
                               results=[_result(psnr, float(steps))])
    _shard(tmp_path / "a", 1, [dense(12.0), fidelity.Method("preset balanced", results=[_result(13.0, 15.0)])])
    _shard(tmp_path / "b", 2, [dense(14.0), fidelity.Method("preset balanced", results=[_result(15.0, 15.0)])])
    _shard(tmp_path / "c", 1, [fidelity.Method("custom 2.5x", results=[_result(11.0, 12.0)])])   # a later, one-row run
    _shard(tmp_path / "d", 1, [dense(10.0, 5), dense(12.0, 10)], reference=20)                    # ... and another reference
    fidelity_report.merge([tmp_path / d for d in "abcd"], tmp_path / "m", ["--merge", "a,b,c,d"])
    data = json.loads((tmp_path / "m" / "fidelity.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert (rows["dense, 15 steps"]["n"], rows["dense, 15 steps"]["psnr"]) == (2, 13.0)
    assert (rows["preset balanced"]["n"], rows["preset balanced"]["psnr"]) == (2, 14.0)
    assert rows["custom 2.5x"]["n"] == 1 and data["meta"]["pairs"] == 2 and data["meta"]["seeds"] == [1, 2]
    assert data["meta"]["dense_seconds"] == {"30": pytest.approx(8 / 3), "20": 2.0}   # each reference over its shards
    page = (tmp_path / "m" / "fidelity.md").read_text()
    assert "4 processes, 4.0 process-minutes" in page and "**Reference: dense, 20 steps**" in page


def test_partial_pass_cost_counts_the_rows_the_model_computed():
    from rhymeflow_core.report import RunReport
    # 13 frames of 64 rows, CFG batch 2: a full call 1664 rows; active calls with 2 keyframes plus 9 refreshes in 6 calls.
    report = RunReport(keyframes=[0, 12], model_calls={"full": 4, "record": 2, "active": 6},
                       rows={"full": 4 * 1664, "record": 2 * 1664, "active": (6 * 2 + 9) * 128})
    assert fidelity.query_frames(report, 13) == pytest.approx(3.5)
    assert fidelity.ratio_at({2: 0.2, 4: 0.3}, 3.5) == pytest.approx(0.275)
    here, real = fidelity.pass_costs(None, report, {2: 0.2, 4: 0.3}, 13)
    assert here == pytest.approx(6 + 6 * 0.275) and real == pytest.approx(6 + 6 * real_ratio(3.5, 13))
