"""Smoke test of the sampler benchmark (tools/bench.py) at a tiny size on the CPU: no timing assertions."""
import re

import pytest

from tools import bench

ROWS = ("dense", "release", "release+override")


def test_bench_table_has_every_row_and_consistent_pass_counts(tmp_path):
    out = tmp_path / "bench.md"
    text, configs = bench.main(["--model", "tiny", "--size", "32x32", "--frames", "17", "--quick", "--quick-steps", "4",
                                "--rows", ",".join(ROWS), "--device", "cpu", "--out", str(out)], log=lambda *_: None)
    assert out.read_text() == text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0] == "| " + " | ".join(bench.COLUMNS) + " |"
    assert [line.split(" | ")[0][2:] for line in table[1:]] == list(ROWS)
    assert all(line.count(" | ") == len(bench.COLUMNS) - 1 for line in table)

    (cfg, results), = configs
    by = {r.row.name: r for r in results}
    assert by["dense"].planned == {"full": 50} and by["dense"].steps_run == bench.DENSE_QUICK_STEPS
    assert by["dense"].calls == {"full": bench.DENSE_QUICK_STEPS * by["dense"].calls_per_step}
    for name in ("release", "release+override"):
        r = by[name]
        # The 50-step release schedule: 21 full passes (11 of them recording) and 29 active ones.
        assert r.planned == {"full": 10, "record": 11, "active": 29}
        # The short run made exactly the calls its own schedule plans, per cond batch.
        short = bench.planned_calls(r.row, r.steps_run, True, frames=5)
        assert r.calls == {k: n * r.calls_per_step for k, n in short.items() if n}
        assert r.ratio > 0 and r.ideal > 0 and r.cache_gb > 0 and r.cache_device == "cpu"
        assert r.estimate > 0 and r.speedup > 0
    # The override was called in the active pass's self-attention (keyframe queries, all keys).
    active_calls = re.search(r", (\d+)x as active self-attention", " ".join(by["release+override"].notes))
    assert active_calls and int(active_calls.group(1)) > 0


@pytest.mark.slow
def test_family_bench_runs_every_family(monkeypatch, tmp_path):
    """tools/family_bench.py at a tiny size: every family samples dense and RhymeFlow with the preset's pass counts."""
    from rhymeflow_core.presets import resolve_schedule
    from rhymeflow_core.schedule import ScheduleSettings, build_schedule
    from tools import family_bench
    monkeypatch.setattr(family_bench, "FRAMES", 5)
    monkeypatch.setattr(family_bench, "TOKENS", (2, 2))
    out = tmp_path / "families.md"
    text = family_bench.main(["--steps", "8", "--out", str(out)])
    assert out.read_text() == text
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| family")]
    assert len(rows) == len(family_bench.FAMILIES)
    schedule = build_schedule(8, resolve_schedule("balanced", ScheduleSettings(), 8))
    for row in rows:
        assert f"| {schedule.full_passes} / {schedule.active_passes} |" in row, row
    conditioned = [r for r in rows if r.endswith("([0]) |")]
    assert len(conditioned) == 3, "Wan I2V, A14B I2V and TI2V-5B keep their image frame as a keyframe"
