"""Partial passes (docs/algorithm.md §11): an active pass whose queries are the keyframes plus some
non-keyframes refreshing now, whose fresh K/V overwrite their cached rows.

1. On a fresh cache a partial pass is the stock forward on its query rows (1e-5), for every Wan
   variant; the rows it sends through the blocks, measured inside the model, are the query rows.
2. The refreshed rows stay in the cache: they equal what a rhythmic point on the same input records.
3. Families and settings without partial passes refuse them clearly.
4. A run with a budget: its active rows land within 5 % of the budget's target, the schedule's
   pass counts are unchanged, and a budget of 0 is the paper's run exactly.
"""
from __future__ import annotations

import pytest
import torch
from test_adapters import BATCH, CASES, FRAMES, QueryRows

from helpers import key_err, patched, sample, sigmas_for
from rhymeflow_core.cache import _Prefetcher
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.keyframes import KeyframeSpec
from rhymeflow_core.report import observe
from rhymeflow_core.run_state import ACTIVE, RECORD
from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
from rhymeflow_core.sampling_loop import SamplerSettings, refresh_count
from rhymeflow_core.schedule import ScheduleSettings, build_schedule

WAN = [c for c in CASES if c.family == "wan"]
OTHERS = [c for c in CASES if c.family != "wan"]
KEYFRAMES, REFRESH = (0, 5), (3, 1)   # refresh order is the ranking's, not the frames'


@pytest.mark.parametrize("case", WAN, ids=str)
def test_partial_pass_on_a_fresh_cache_is_stock_on_its_query_rows(case):
    inp = case.inputs()
    ref = case.stock(inp)
    run = case.new_run("kv_cache")
    with QueryRows(case) as rows:
        case.run_pass(run, RECORD, KEYFRAMES, inp)
        run.set_plan(ACTIVE, KEYFRAMES, REFRESH)
        to = {"uuids": ["cond", "uncond"]}
        args, kwargs = case.call(inp, to)
        with torch.no_grad():
            out = run.adapter.forward(case.dm, run, to, args, kwargs)
    queries = KEYFRAMES + REFRESH
    assert key_err(out, ref, queries) <= 1e-5
    assert not out[:, :, [f for f in range(FRAMES) if f not in queries]].any(), "other frames' outputs are zeros"
    assert rows.calls == [BATCH * FRAMES * case.per_frame, BATCH * len(queries) * case.per_frame]
    run.close()


def _cached(run, block=0):
    (entry,) = run.cache.entries.values()
    return tuple(t.clone() for t in entry[block])


def _on_host(run):
    """The host placement's path (buffers without scratch rows, staged one block ahead), with plain CPU copies."""
    cache = run.caches.first
    cache.device, cache._prefetch = torch.device("cpu"), _Prefetcher(torch.device("cpu"))


@pytest.mark.parametrize("placement", ["resident", "host"])
@pytest.mark.parametrize("case", WAN[:1] + WAN[-1:], ids=str)
def test_refreshed_rows_stay_in_the_cache_as_a_rhythmic_point_would_record_them(case, placement):
    old, new = case.inputs(seed=0), case.inputs(seed=1)
    run = case.new_run("kv_cache")
    if placement == "host":
        _on_host(run)
    case.run_pass(run, RECORD, KEYFRAMES, old)
    stale = _cached(run)
    run.set_plan(ACTIVE, KEYFRAMES, REFRESH)
    to = {"uuids": ["cond", "uncond"]}
    args, kwargs = case.call(new, to)
    with torch.no_grad():
        run.adapter.forward(case.dm, run, to, args, kwargs)
    refreshed = _cached(run)
    fresh_run = case.new_run("kv_cache")
    case.run_pass(fresh_run, RECORD, KEYFRAMES, new)
    fresh = _cached(fresh_run)
    per, scratch = case.per_frame, len(KEYFRAMES) * case.per_frame
    lead = 0 if placement == "host" else scratch   # host buffers hold no scratch rows
    nonkey = [f for f in range(FRAMES) if f not in KEYFRAMES]
    for f in nonkey:
        at = slice(scratch + nonkey.index(f) * per, scratch + (nonkey.index(f) + 1) * per)
        mine = slice(lead + nonkey.index(f) * per, lead + (nonkey.index(f) + 1) * per)
        for r, s, n in zip(refreshed, stale, fresh, strict=True):
            expected = n[:, at] if f in REFRESH else s[:, mine]
            torch.testing.assert_close(r[:, mine], expected, rtol=1e-5, atol=1e-5)
    run.close()
    fresh_run.close()


def _partial_pass_after_record(case, context: str, match: str) -> None:
    """A RECORD, then a partial pass that must be refused with `match`."""
    inp = case.inputs()
    run = case.new_run(context)
    case.run_pass(run, RECORD, KEYFRAMES, inp)
    with pytest.raises(RhymeFlowInputError, match=match):
        run.set_plan(ACTIVE, KEYFRAMES, REFRESH)
        to = {"uuids": ["cond", "uncond"]}
        args, kwargs = case.call(inp, to)
        run.adapter.forward(case.dm, run, to, args, kwargs)
    run.close()


@pytest.mark.parametrize("case", OTHERS, ids=str)
def test_other_families_refuse_partial_passes(case):
    _partial_pass_after_record(case, "kv_cache", "partial passes .* Wan only")


def test_hidden_cache_refuses_partial_passes():
    _partial_pass_after_record(WAN[0], "hidden_cache", "kv_cache")


# ---- whole runs ----------------------------------------------------------------------------------
STEPS, SCHEDULE = 20, ScheduleSettings(6, 3, 5)


def _sampler(budget, count=2):
    return RhymeFlowSamplerObject(SamplerSettings(SCHEDULE, KeyframeSpec("uniform", count), "euler", refresh_budget=budget))


def _run(budget, context="kv_cache"):
    case = WAN[0]
    latent, noise = case.latent()
    cond, uncond = case.conds()
    with observe() as reports, QueryRows(case) as rows:
        out = sample(patched(case.model, context), _sampler(budget), sigmas_for(case.model, STEPS), latent, noise,
                     cond=cond, uncond=uncond)
    (report,) = reports
    return out, report, rows.calls


@pytest.mark.parametrize("budget", [0.3, 0.5])
def test_a_budget_lands_within_5_percent_of_its_target_cost(budget):
    case, schedule = WAN[0], build_schedule(STEPS, SCHEDULE)
    _, report, calls = _run(budget)
    assert report.completed and (report.full_passes, report.active_passes) == (schedule.full_passes, schedule.active_passes)
    per_call = report.rows["record"] // (len(schedule.groups) * FRAMES)   # rows of one frame in one call's batch
    calls_per_step = len(calls) // STEPS
    keys, nonkey = len(report.keyframes), FRAMES - len(report.keyframes)
    target = schedule.active_passes * calls_per_step * (keys + budget * nonkey) * per_call
    assert abs(report.rows["active"] - target) <= 0.05 * target
    assert report.rows["active"] > schedule.active_passes * calls_per_step * keys * per_call, "partial passes ran"
    assert sum(calls) == sum(report.rows.values()), "the report counts the rows the model saw"
    refreshed = report.rows["active"] - schedule.active_passes * calls_per_step * keys * per_call
    assert report.refreshes * calls_per_step * per_call == refreshed, "the report names every refreshed frame the model ran"
    assert all(not set(frames) & set(report.keyframes) for frames in report.refreshed)
    assert [bool(f) for f in report.refreshed] == [schedule.role(i) == "active" for i in range(STEPS)]
    assert case.per_frame * 2 == per_call * calls_per_step   # CFG's cond and uncond rows, batched or not


def test_a_budget_of_zero_is_the_paper_and_a_budget_changes_the_result():
    paper, _, _ = _run(0.0)
    default = sample(patched(WAN[0].model), RhymeFlowSamplerObject(SamplerSettings(SCHEDULE, KeyframeSpec("uniform", 2), "euler")),
                     sigmas_for(WAN[0].model, STEPS), *WAN[0].latent(), cond=WAN[0].conds()[0], uncond=WAN[0].conds()[1])
    assert torch.equal(paper, default)
    refreshed, _, _ = _run(0.5)
    assert torch.isfinite(refreshed).all() and not torch.equal(paper, refreshed)


@pytest.mark.parametrize("budget", [-0.1, 1.5, float("nan")])
def test_a_budget_outside_0_to_1_is_refused(budget):
    with pytest.raises(RhymeFlowInputError, match="refresh_budget"):
        SamplerSettings(refresh_budget=budget)


def test_a_budget_with_hidden_cache_is_refused_before_any_model_call():
    case = WAN[0]
    with QueryRows(case) as rows, pytest.raises(RhymeFlowInputError, match="context=hidden_cache"):
        sample(patched(case.model, "hidden_cache"), _sampler(0.3), sigmas_for(case.model, STEPS), *case.latent(),
               cond=case.conds()[0], uncond=case.conds()[1])
    assert rows.calls == []


def test_refresh_counts_add_up_to_the_budget():
    for budget, nonkey, passes in [(0.3, 4, 11), (0.1, 7, 30), (1.0, 3, 5), (0.0, 4, 9)]:
        counts = [refresh_count(budget, nonkey, j) for j in range(passes)]
        assert all(0 <= c <= nonkey for c in counts)
        assert abs(sum(counts) - budget * nonkey * passes) <= 0.5


@pytest.mark.parametrize("node", ["RhymeFlowSampler", "RhymeFlowKSampler"])
def test_the_nodes_take_an_optional_last_budget_that_defaults_to_the_paper(node):
    import sys

    import nodes as comfy_nodes

    from tools import headless
    headless.load_nodes()
    optional = comfy_nodes.NODE_CLASS_MAPPINGS[node].INPUT_TYPES()["optional"]
    sampler_settings = sys.modules[comfy_nodes.NODE_CLASS_MAPPINGS["RhymeFlowSampler"].__module__].sampler_settings
    assert list(optional)[-1] == "refresh_budget" and optional["refresh_budget"][1]["default"] == 0.0
    settings = sampler_settings("euler", 6, 3, 5, 0.3, 0.7, "progressive", None, 0.25)
    assert settings.refresh_budget == 0.25
    assert sampler_settings("euler", 6, 3, 5, 0.3, 0.7, "progressive").refresh_budget == 0.0
