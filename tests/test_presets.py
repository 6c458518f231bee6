"""Presets, the schedule view's data (one source of truth for the browser) and the after-run report."""
import asyncio
import sys

import pytest
import torch

from helpers import conds, install_fake_server, last_report, latent_and_noise, patched, sample, sigmas_for
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.keyframes import KeyframeSpec
from rhymeflow_core.presets import PRESETS, resolve_schedule
from rhymeflow_core.report import observe
from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
from rhymeflow_core.sampling_loop import SamplerSettings
from rhymeflow_core.schedule import ScheduleSettings, build_schedule
from rhymeflow_core.schedule_view import active_cost, view_from_request

CUSTOM = ScheduleSettings(warmup_steps=7, min_stride=2, max_stride=4, transition_1=0.25, transition_2=0.5, progressive=False)


# (preset, steps) -> (warm-up, strides, full passes, active passes); the README's preset table.
EXPECTED = {
    ("quality", 20): (6, 2, 3, 12, 8), ("quality", 30): (9, 2, 3, 17, 13), ("quality", 50): (15, 2, 3, 29, 21),
    ("balanced", 20): (4, 3, 5, 9, 11), ("balanced", 30): (6, 3, 5, 13, 17), ("balanced", 50): (10, 3, 5, 21, 29),
    ("fast", 20): (3, 4, 5, 7, 13), ("fast", 30): (5, 4, 5, 11, 19), ("fast", 50): (8, 4, 5, 18, 32),
}


@pytest.mark.parametrize("preset,steps", list(EXPECTED))
def test_presets_scale_with_the_step_count(preset, steps):
    s = resolve_schedule(preset, CUSTOM, steps)
    plan = build_schedule(steps, s)
    assert (s.warmup_steps, s.min_stride, s.max_stride, plan.full_passes, plan.active_passes) == EXPECTED[preset, steps]
    assert (s.transition_1, s.transition_2, s.progressive) == (0.3, 0.7, True)


def test_balanced_is_the_release_setting_and_presets_order_speed():
    assert resolve_schedule("balanced", CUSTOM, 50) == ScheduleSettings()  # the paper's release defaults
    speed = {name: build_schedule(30, resolve_schedule(name, CUSTOM, 30)).ideal_speedup(0.109) for name in PRESETS}
    assert speed["quality"] < speed["balanced"] < speed["fast"]


def test_custom_uses_the_widgets_and_unknown_presets_are_refused():
    assert resolve_schedule("custom", CUSTOM, 30) is CUSTOM
    with pytest.raises(RhymeFlowInputError, match="unknown preset 'turbo'"):
        resolve_schedule("turbo", CUSTOM, 30)
    with pytest.raises(RhymeFlowInputError, match="unknown preset"):
        RhymeFlowSamplerObject(SamplerSettings(), "turbo")


def test_preset_warmup_keeps_a_step_to_accelerate():
    for preset in PRESETS:
        for steps in (2, 3, 4):
            assert 1 <= resolve_schedule(preset, CUSTOM, steps).warmup_steps <= steps - 1


def test_sampler_resolves_the_preset_for_the_run_it_gets(tiny_model):
    model = patched(tiny_model())
    latent, noise = latent_and_noise(5, 8)
    settings = SamplerSettings(CUSTOM, KeyframeSpec("uniform", 2), "euler")
    with observe() as reports:
        sample(model, RhymeFlowSamplerObject(settings, "fast", source="7"), sigmas_for(model, 20), latent, noise)
    (report,) = reports
    assert report.completed and report.preset == "fast" and report.source == "7"
    assert (report.full_passes, report.active_passes) == (7, 13)  # fast at 20 steps, not the custom widgets
    assert report.schedule == resolve_schedule("fast", CUSTOM, 20) and report.warmup_steps == 3
    assert report.keyframes == [0, 4] and report.frames == 5 and report.steps == 20
    assert report.estimated_dense_seconds > 0 and len(report.step_seconds) == 20
    assert report.seconds_saved == pytest.approx(report.estimated_dense_seconds - sum(report.step_seconds))


def test_a_failing_report_observer_never_fails_the_run(tiny_model):
    model = patched(tiny_model())
    latent, noise = latent_and_noise(5, 8)
    settings = SamplerSettings(CUSTOM, KeyframeSpec("uniform", 2), "euler")
    sigmas = sigmas_for(model, 12)

    def broken(_report):
        raise RuntimeError("display problem")

    with observe(broken):
        observed = sample(model, RhymeFlowSamplerObject(settings, "balanced"), sigmas, latent, noise)
    plain = sample(model, RhymeFlowSamplerObject(settings, "balanced"), sigmas, latent, noise)
    assert torch.equal(observed, plain)


# ---- the schedule view's data ----------------------------------------------------------------
def test_view_matches_the_core_schedule():
    view = view_from_request({"steps": 30, "frames": 21, "preset": "custom", "warmup_steps": 6, "min_stride": 3, "max_stride": 5})
    plan = build_schedule(30, ScheduleSettings(6, 3, 5))
    assert view["roles"] == plan.roles() and len(view["roles"]) == 30
    assert (view["full_passes"], view["active_passes"]) == (13, 17)
    assert view["groups"][0] == [6, 9] and view["detect_step"] == 5
    assert view["keyframes"] == [0, 20] and view["keyframes_pending"] == 0 and view["keyframes_source"] == "planned"
    assert view["active_cost"] == 0.109 and view["ideal_speedup"] == pytest.approx(plan.ideal_speedup(0.109))
    assert not view["warnings"]


def test_view_follows_preset_and_keyframes_node():
    view = view_from_request({"steps": 20, "frames": 13, "preset": "fast", "warmup_steps": 99,
                              "keyframes": {"strategy": "uniform", "count": 4, "similarity_threshold": 0.98, "min_gap": 1,
                                            "manual_frames": ""}})
    assert view["warmup_steps"] == 3 and view["roles"][:4] == ["warmup"] * 3 + ["rhythmic"]
    assert view["keyframes"] == [0, 4, 8, 12] and view["active_cost"] == 0.198
    manual = view_from_request({"steps": 20, "frames": 13, "keyframes": {"strategy": "manual", "count": 2, "manual_frames": "0,5,-1"}})
    assert manual["keyframes"] == [0, 5, 12]
    semantic = view_from_request({"steps": 20, "frames": 13, "keyframes": {"strategy": "semantic", "count": 3}})
    assert semantic["keyframes"] == [0, 12] and semantic["keyframes_pending"] == 1  # picked by content at run time
    chosen = view_from_request({"steps": 20, "frames": 13, "chosen_keyframes": [0, 3, 12]})
    assert chosen["keyframes"] == [0, 3, 12] and chosen["keyframes_source"] == "chosen"


def test_view_warns_like_the_sampler_would_refuse():
    view = view_from_request({"steps": 8, "frames": 13, "warmup_steps": 10})
    assert any("leaves nothing to accelerate" in w for w in view["warnings"])
    view = view_from_request({"steps": 20, "frames": 3, "keyframes": {"strategy": "uniform", "count": 5}})
    assert any("only 3 latent frames" in w for w in view["warnings"])


@pytest.mark.parametrize("bad", [{"steps": "x"}, {"preset": "turbo"}, {"stride_schedule": "wild"}, {"chosen_keyframes": "0,1"},
                                 {"keyframes": {"strategy": "manual", "manual_frames": "a"}}, [1, 2]])
def test_view_refuses_bad_requests_with_our_error(bad):
    with pytest.raises(RhymeFlowInputError):
        view_from_request(bad)


def test_active_cost_table():
    assert [active_cost(m, 21) for m in (1, 2, 3, 4, 6)] == [0.109, 0.109, 0.154, 0.198, 0.301]
    assert active_cost(5, 21) == pytest.approx((0.198 + 0.301) / 2)
    assert 0.301 < active_cost(8, 21) < 1.0 and active_cost(21, 21) == 1.0


# ---- the route and the report event on a stand-in server --------------------------------------
@pytest.fixture
def fake_server(monkeypatch):
    return install_fake_server(monkeypatch)


def _pack_routes():
    from tools import headless
    headless.load_nodes()
    return next(m for name, m in sys.modules.items() if name.endswith(".nodes.routes") and hasattr(m, "register_routes"))


def test_route_is_registered_once_and_answers(fake_server):
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    routes = _pack_routes()
    assert routes.register_routes() and routes.register_routes()
    assert [r.path for r in fake_server.routes] == ["/rhymeflow/schedule"]

    async def ask():
        app = web.Application()
        app.add_routes(fake_server.routes)
        async with TestClient(TestServer(app)) as client:
            ok = await client.post("/rhymeflow/schedule", json={"steps": 30, "frames": 21, "preset": "balanced"})
            bad = await client.post("/rhymeflow/schedule", json={"preset": "turbo"})
            junk = await client.post("/rhymeflow/schedule", data="not json")
            return ok.status, await ok.json(), bad.status, await bad.json(), junk.status
    status, view, bad_status, bad, junk_status = asyncio.run(ask())
    assert status == 200 and (view["full_passes"], view["active_passes"]) == (13, 17)
    assert bad_status == 400 and "preset must be one of" in bad["error"] and junk_status == 400


def test_without_a_server_there_is_no_route_and_no_report(monkeypatch):
    monkeypatch.delitem(sys.modules, "server", raising=False)
    routes = _pack_routes()
    assert routes.register_routes() is False
    routes.send_report(last_report())   # nowhere to send: nothing happens


def test_report_event_reaches_the_client_that_queued(fake_server, tiny_model):
    routes = _pack_routes()
    model = patched(tiny_model())
    latent, noise = latent_and_noise(5, 8)
    settings = SamplerSettings(CUSTOM, KeyframeSpec("uniform", 3), "euler")
    assert routes.register_routes()
    # The pack as ComfyUI loaded it (its own module copy) now sends every report through its report hook.
    pack_report = sys.modules[routes.__name__.rsplit(".nodes.routes", 1)[0] + ".rhymeflow_core.report"]
    assert pack_report._observers[routes.EVENT] is routes.send_report
    cond, uncond = conds()
    sample(model, RhymeFlowSamplerObject(settings, "balanced"), sigmas_for(model, 20), latent, noise, cond=cond, uncond=uncond)
    routes.send_report(last_report())
    assert not fake_server.sent, "a run no node asked for (no source) is not sent to the browser"
    sample(model, RhymeFlowSamplerObject(settings, "balanced", source="15"), sigmas_for(model, 20), latent, noise,
           cond=cond, uncond=uncond)
    routes.send_report(last_report())
    ((event, data, sid),) = fake_server.sent
    assert (event, sid, data["node"], data["preset"]) == ("rhymeflow.report", "client-1", "15", "balanced")
    report, view = data["report"], data["view"]
    assert report["keyframes"] == [0, 2, 4] and (report["full_passes"], report["active_passes"]) == (9, 11)
    assert view["keyframes"] == [0, 2, 4] and view["keyframes_source"] == "chosen" and view["warmup_steps"] == 4
    assert (view["full_passes"], view["active_passes"]) == (9, 11) and view["preset"] == "balanced"
    import json
    json.dumps(data)  # the websocket sends JSON


# ---- defaults: a new node scales with the step count; a node saved before presets runs as it did ----------
def test_new_sampler_nodes_default_to_balanced_and_old_prompts_run_as_custom(tmp_path):
    import nodes as comfy_nodes

    from tools import headless
    from tools.workflows import demo_prompt
    headless.load_nodes()
    for node_id in ("RhymeFlowSampler", "RhymeFlowKSampler"):
        preset = comfy_nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["optional"]["preset"]
        assert preset[1]["default"] == "balanced", node_id  # what a node dropped on the canvas starts with
    # An API prompt from before the preset input (no "preset"): its widgets, as it always ran, through the executor.
    old = demo_prompt(steps=10, frames=9, width=64, height=64, warmup=7, dense=False, compare=False, save_latents=False)
    del old["15"]["inputs"]["preset"]
    with headless.observe_reports() as reports:
        result = headless.run_prompt(old, tmp_path)
    assert result.success, result.error
    (report,) = [r for r in reports if r.completed]
    assert (report.preset, report.warmup_steps, report.full_passes) == ("custom", 7, 8)
