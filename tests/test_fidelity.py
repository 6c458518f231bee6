"""The fidelity harness end to end on a tiny subset (the full run is `python -m tools.fidelity`)."""
import json

import pytest

from rhymeflow_core.schedule import ScheduleSettings, build_schedule
from tools import fidelity


@pytest.mark.slow
def test_harness_runs_end_to_end_on_a_subset(tmp_path):
    fidelity.main(["--prompts", "1", "--seeds", "1", "--steps", "14", "--methods", "release, kv_cache,dense,EasyCache",
                   "--out", str(tmp_path)])
    data = json.loads((tmp_path / "fidelity.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    release = rows["RhymeFlow release, kv_cache"]
    # The cost counts the passes the model really ran: the schedule's, at the measured active/full ratio.
    ratio = data["meta"]["active_cost"]["2"]
    schedule = build_schedule(14, ScheduleSettings(10, 3, 5))
    assert 0 < ratio < 1 and schedule.active_passes > 0
    assert abs(release["cost"] - (schedule.full_passes + schedule.active_passes * ratio)) < 1e-6
    dense_matched = next(r for name, r in rows.items() if name.startswith("dense,"))
    assert dense_matched["cost"] == round(release["cost"])
    for r in rows.values():
        assert r["n"] == 1 and 5 < r["psnr"] < 100 and 0 < r["ssim"] <= 1
    assert (tmp_path / "fidelity_table.md").read_text().count("\n") == 2 + 1 + len(rows)
    assert (tmp_path / "fidelity.png").stat().st_size > 1000
