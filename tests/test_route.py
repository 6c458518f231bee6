"""POST /rhymeflow/schedule on a stand-in server: every malformed body is a fast 400 that names the problem
and the fix, large schedules stay cheap, and the counts the view shows are the host's own (latent frames
as ComfyUI's latent nodes make them, steps as its schedulers and SplitSigmas give them)."""
from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path

import pytest

from helpers import install_fake_server
from rhymeflow_core.sampling_loop import refresh_count
from rhymeflow_core.schedule import build_schedule
from rhymeflow_core.schedule_view import LATENT_NODES, MAX_FRAMES, MAX_STEPS, active_cost, latent_frames, run_line, view_from_request

PACK = Path(__file__).resolve().parents[1]
CPU_BUDGET = 0.100  # seconds of server CPU per request: the handler's thread, from the request to its response


@pytest.fixture
def pack_routes(monkeypatch):
    """The pack's routes module, as ComfyUI loaded it, registered on a stand-in PromptServer."""
    server = install_fake_server(monkeypatch)
    from tools import headless
    headless.load_nodes()
    routes = next(m for name, m in sys.modules.items() if name.endswith(".nodes.routes") and hasattr(m, "register_routes"))
    assert routes.register_routes()
    return routes, server


def _post_all(server, bodies: list) -> list[tuple[int, dict, float]]:
    """(status, JSON answer, server CPU seconds) for each body: a dict or list is sent as JSON, bytes / str as they are.

    The server's CPU is the CPU time of the event loop's thread while the route handles the request
    (reading the body, the view, the JSON answer), as ComfyUI's event loop would spend it."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    spent = []

    @web.middleware
    async def timed(request, handler):
        start = time.thread_time()
        try:
            return await handler(request)
        finally:
            spent.append(time.thread_time() - start)

    async def run():
        app = web.Application(client_max_size=100 * 1024 * 1024, middlewares=[timed])  # ComfyUI's limit: the upload size
        app.add_routes(server.routes)
        out = []
        async with TestClient(TestServer(app)) as client:
            for body in bodies:
                raw = body if isinstance(body, (bytes, str)) else json.dumps(body, allow_nan=True)
                res = await client.post("/rhymeflow/schedule", data=raw, headers={"Content-Type": "application/json"})
                answer = await res.json(content_type=None)
                out.append((res.status, answer, spent[-1]))
        return out
    return asyncio.run(run())


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


MALFORMED = {
    "keyframes as text": {"keyframes": "semantic"},
    "keyframes as a list": {"keyframes": [0, 12]},
    "keyframes with an unknown field": {"keyframes": {"strategy": "uniform", "frames": 3}},
    "keyframe count as text": {"keyframes": {"strategy": "uniform", "count": "3"}},
    "manual list 0,,x": {"keyframes": {"strategy": "manual", "manual_frames": "0,,x"}},
    "manual list empty": {"keyframes": {"strategy": "manual", "manual_frames": ""}},
    "manual list not text": {"keyframes": {"strategy": "manual", "manual_frames": [0, 1]}},
    "NaN steps": b'{"steps": NaN}',
    "Infinity steps": b'{"steps": Infinity}',
    "-Infinity transition": b'{"transition_1": -Infinity}',
    "1e400 steps": b'{"steps": 1e400}',
    "1e400 transition": b'{"transition_2": 1e400}',
    "huge integer": b'{"steps": 1' + b"0" * 5000 + b"}",
    "fractional steps": {"steps": 30.5},
    "boolean steps": {"steps": True},
    "steps beyond the cap": {"steps": MAX_STEPS + 1},
    "zero steps": {"steps": 0},
    "frames beyond the cap": {"frames": MAX_FRAMES + 1},
    "negative warm-up": {"warmup_steps": -1},
    "stride beyond its widget": {"max_stride": 101},
    "transition as text": {"transition_1": "0.3"},
    "deeply nested": _nest(100_000).encode()[:60_000],
    "deeply nested, balanced": _nest(20_000),
    "nested inside a field": '{"keyframes": ' + _nest(5000) + "}",
    "not JSON": b"not json",
    "not UTF-8": b'{"preset": "\xff\xfe"}',
    "empty body": b"",
    "JSON list": [1, 2],
    "JSON text": "\"steps\"",
    "JSON null": b"null",
    "unknown field": {"stpes": 30},
    "unknown preset": {"preset": "turbo"},
    "preset not text": {"preset": 3},
    "chosen keyframes out of range": {"frames": 13, "chosen_keyframes": [0, 13]},
    "chosen keyframes negative": {"frames": 13, "chosen_keyframes": [-1, 12]},
    "chosen keyframes repeated": {"frames": 13, "chosen_keyframes": [0, 0, 12]},
    "chosen keyframes as text": {"chosen_keyframes": "0,12"},
    "chosen keyframes booleans": {"frames": 13, "chosen_keyframes": [True, 12]},
    "chosen keyframes empty": {"chosen_keyframes": []},
    "refresh budget above 1": {"refresh_budget": 1.5},
    "refresh budget as text": {"refresh_budget": "0.25"},
    "steps and sigmas": {"steps": 30, "sigmas": [{"class_type": "BasicScheduler", "widgets": {"steps": 30}}]},
    "frames and latent": {"frames": 13, "latent": [{"class_type": "EmptyHunyuanLatentVideo", "widgets": {"length": 49}}]},
    "length without family": {"length": 49},
    "unknown family": {"length": 49, "family": "sora"},
    "sigmas not a list": {"sigmas": {"class_type": "BasicScheduler"}},
    "sigmas entry without class": {"sigmas": [{"widgets": {"steps": 30}}]},
    "sigmas steps as text": {"sigmas": [{"class_type": "BasicScheduler", "widgets": {"steps": "30"}}]},
    "sigmas with no step left": {"sigmas": [{"class_type": "SplitSigmas", "slot": 1, "widgets": {"step": 30}},
                                            {"class_type": "BasicScheduler", "widgets": {"steps": 30, "denoise": 1.0}}]},
    "latent length negative": {"latent": [{"class_type": "EmptyLTXVLatentVideo", "widgets": {"length": -8}}]},
    "latent too long": {"latent": [{"class_type": "EmptyHunyuanLatentVideo", "widgets": {"length": 20000}}]},
    "chain too long": {"latent": [{"class_type": "KSampler", "widgets": {}}] * 40},
    "widget value an object": {"latent": [{"class_type": "EmptyHunyuanLatentVideo", "widgets": {"length": {"v": 49}}}]},
    "larger than 64 KiB": {"keyframes": {"strategy": "manual", "manual_frames": "0," * 40_000}},
}


def test_every_malformed_body_is_a_fast_400_that_says_what_to_fix(pack_routes):
    _, server = pack_routes
    answers = _post_all(server, list(MALFORMED.values()))
    slow = []
    for (name, _), (status, answer, cpu) in zip(MALFORMED.items(), answers, strict=True):
        assert status == 400, f"{name}: HTTP {status} {answer}"
        message = answer.get("error", "")
        assert message.startswith("RhymeFlow: ") and len(message) > 30, f"{name}: {answer}"
        if cpu > CPU_BUDGET:
            slow.append(f"{name}: {cpu * 1000:.0f} ms")
    assert not slow, slow


@pytest.mark.parametrize("body,needle", [
    ({"keyframes": "semantic"}, "keyframes must be an object"),
    (b'{"steps": NaN}', "NaN is not a number JSON allows"),
    (b'{"steps": 1e400}', "too large"),
    (_nest(20_000), "nests too deeply"),
    ({"frames": 13, "chosen_keyframes": [0, 13]}, "from 0 to 12"),
    ({"keyframes": {"strategy": "manual", "manual_frames": "0,,x"}}, "'x' is not a frame number"),
    ({"steps": 20000}, "Lower the scheduler's steps"),
    ({"stpes": 30}, "unknown field(s) 'stpes'"),
])
def test_the_message_names_the_problem(pack_routes, body, needle):
    _, server = pack_routes
    ((status, answer, _),) = _post_all(server, [body])
    assert status == 400 and needle in answer["error"], answer


def _valid_body(rng: random.Random) -> dict:
    return {"sigmas": [{"class_type": "BasicScheduler", "slot": 0, "widgets": {"scheduler": "simple", "steps": rng.randint(2, 60),
                                                                               "denoise": 1.0}}],
            "latent": [{"class_type": "EmptyHunyuanLatentVideo", "slot": 0, "widgets": {"length": rng.choice([5, 49, 81])}}],
            "warmup_steps": 1, "min_stride": 3, "max_stride": 5, "transition_1": 0.3, "transition_2": 0.7,
            "stride_schedule": "progressive", "preset": rng.choice(["custom", "balanced"]), "refresh_budget": rng.choice([0, 0.25]),
            "keyframes": {"strategy": "uniform", "count": 2, "similarity_threshold": 0.98, "min_gap": 1, "manual_frames": ""}}


# For each field a value it can never take: a mutated valid body must come back 400.
BAD_VALUES = [None, "x", -1, 1.5, 1e300, True, [], {}, [1, "a"], {"a": {"b": 1}}, "9" * 300]
PATHS = [("warmup_steps",), ("min_stride",), ("max_stride",), ("transition_1",), ("stride_schedule",), ("preset",),
         ("refresh_budget",),
         ("keyframes", "strategy"), ("keyframes", "count"), ("keyframes", "min_gap"), ("keyframes", "similarity_threshold"),
         ("sigmas",), ("sigmas", 0, "widgets", "steps"), ("sigmas", 0, "class_type"), ("latent",),
         ("latent", 0, "widgets", "length"), ("latent", 0, "slot")]


# The few (field, value) pairs among BAD_VALUES that are in fact fine.
VALID_MUTATIONS = {
    (("transition_1",), "1.5"),                           # a fraction of the post-warm-up steps
    (("sigmas",), "None"), (("sigmas",), "[]"),          # no scheduler: 30 steps, said to be assumed
    (("latent",), "None"), (("latent",), "[]"),          # no latent: 21 frames, said to be assumed
    (("sigmas", 0, "class_type"), "'x'"),                 # a node the view does not know: steps assumed
    (("latent", 0, "slot"), "None"),                      # the slot is optional
}


def _is_valid(path, value) -> bool:
    return (path, repr(value)) in VALID_MUTATIONS


def test_fuzz_mutated_and_random_bodies(pack_routes):
    """A bounded fuzz: valid bodies with one field broken (400), and random JSON (400 or 200, never 500)."""
    _, server = pack_routes
    rng = random.Random(20260606)
    mutated, expect = [], []
    for _ in range(120):
        body = _valid_body(rng)
        path, value = rng.choice(PATHS), rng.choice(BAD_VALUES)
        target = body
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        mutated.append(body)
        expect.append(_is_valid(path, value))

    def random_json(depth=0):
        kind = rng.randrange(8 if depth < 4 else 5)
        if kind == 0:
            return rng.choice([None, True, False])
        if kind == 1:
            return rng.choice([0, -1, 3, 30, 10**6, 2**63]) if rng.random() < 0.5 else rng.uniform(-1e6, 1e6)
        if kind in (2, 3, 4):
            return "".join(rng.choice("abc0,;- x\u00e9") for _ in range(rng.randrange(12)))
        if kind == 5:
            return [random_json(depth + 1) for _ in range(rng.randrange(4))]
        keys = ["steps", "frames", "keyframes", "preset", "sigmas", "latent", "model", "chosen_keyframes", "warmup_steps", "zzz"]
        return {rng.choice(keys): random_json(depth + 1) for _ in range(rng.randrange(4))}
    randoms = [random_json() for _ in range(120)]

    answers = _post_all(server, mutated + randoms)
    for body, ok, (status, answer, cpu) in zip(mutated, expect, answers[:len(mutated)], strict=True):
        assert status == (200 if ok else 400), (body, status, answer)
        assert cpu < CPU_BUDGET, (body, cpu)
    for body, (status, answer, cpu) in zip(randoms, answers[len(mutated):], strict=True):
        assert status in (200, 400), (body, status, answer)
        assert status == 200 or answer["error"].startswith("RhymeFlow: "), answer
        assert cpu < CPU_BUDGET, (body, cpu)


def test_the_largest_schedules_are_cheap(pack_routes):
    """10,000 steps at stride 1 took 1.5 s of server CPU when each step's group was a linear scan."""
    _, server = pack_routes
    big = {"steps": MAX_STEPS, "min_stride": 1, "max_stride": 1, "warmup_steps": 0}
    bodies = [big, {**big, "frames": MAX_FRAMES, "keyframes": {"strategy": "uniform", "count": 1024}}, {**big, "steps": 9999}]
    answers = _post_all(server, bodies * 2)
    for status, view, cpu in answers:
        assert status == 200 and len(view["roles"]) >= 9999
        assert cpu < CPU_BUDGET, f"{cpu * 1000:.0f} ms"


def test_schedule_is_linear_in_steps():
    plan = build_schedule(200_000)
    start = time.process_time()
    roles = plan.roles()
    assert [plan.group_at(i).start for i in (10, 11, 199_999)] == [10, 10, plan.groups[-1].start]
    assert roles[:11] == ["warmup"] * 10 + ["rhythmic"] and len(roles) == 200_000
    assert time.process_time() - start < 1.0
    with pytest.raises(IndexError):
        plan.group_at(3)  # warm-up steps are in no group
    with pytest.raises(IndexError):
        plan.group_at(200_000)


# ---- the counts are the host's -----------------------------------------------------------------
def _host_latent_frames(class_type: str, length: int) -> int | None:
    """Latent frames the host's own node makes for `length` pixel frames (nodes that need no inputs)."""
    import nodes
    cls = nodes.NODE_CLASS_MAPPINGS.get(class_type)
    if cls is None:
        return None
    out = cls.execute(width=64, height=64, length=length, batch_size=1)  # V3 nodes: a classmethod
    latent = out[0] if isinstance(out, tuple) else out.result[0]
    return latent["samples"].shape[2]


@pytest.mark.parametrize("class_type", ["EmptyHunyuanLatentVideo", "EmptyLTXVLatentVideo", "EmptyHunyuanVideo15Latent"])
def test_latent_frames_match_the_hosts_latent_nodes(pack_routes, class_type):
    host = [_host_latent_frames(class_type, n) for n in (1, 2, 4, 5, 8, 9, 17, 49, 73, 97)]
    if host[0] is None:
        pytest.skip(f"{class_type} is not in this host")
    widget, temporal = LATENT_NODES[class_type]
    ours = [latent_frames(n, temporal) for n in (1, 2, 4, 5, 8, 9, 17, 49, 73, 97)]
    assert ours == host
    view = view_from_request({"latent": [{"class_type": class_type, "slot": 0, "widgets": {widget: 97}}]})
    assert view["frames"] == host[-1] and view["assumed"] == ["steps"]  # no scheduler in this request


def _workflow_request(name: str) -> dict:
    """The request the browser sends for the first RhymeFlowSampler of an example workflow (chains nearest first)."""
    from tools.workflows import ui_to_api
    prompt = ui_to_api(json.loads((PACK / "example_workflows" / name).read_text()))

    def entry(nid, slot=0):
        node = prompt[nid]
        return {"class_type": node["class_type"], "slot": slot,
                "widgets": {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}}

    def chain(link, key):
        out = []
        while link:
            out.append(entry(link[0], link[1]))
            link = prompt[link[0]]["inputs"].get(key)
        return out
    sampler = next(nid for nid, n in prompt.items() if n["class_type"] == "RhymeFlowSampler")
    runner = next(n for n in prompt.values() if n["inputs"].get("sampler") == [sampler, 0])
    body = {k: v for k, v in prompt[sampler]["inputs"].items() if k not in ("solver", "keyframes")}
    body["sigmas"] = chain(runner["inputs"]["sigmas"], "sigmas")
    body["latent"] = chain(runner["inputs"]["latent_image"], "latent_image")
    return body


@pytest.mark.parametrize("workflow,steps,frames,source", [
    ("rhymeflow_ltxv.json", 30, 13, "EmptyLTXVLatentVideo: 97 pixel frames, 8x in time + 1"),
    ("rhymeflow_hunyuan_video.json", 30, 19, "EmptyHunyuanLatentVideo: 73 pixel frames, 4x in time + 1"),
    ("rhymeflow_demo.json", 30, 13, "EmptyHunyuanLatentVideo: 49 pixel frames, 4x in time + 1"),
])
def test_example_workflows_show_the_hosts_counts(pack_routes, workflow, steps, frames, source):
    """LTX-Video: 97 pixel frames are 13 latent frames (8x), not 25 (the old JavaScript divided by 4 for every family)."""
    _, server = pack_routes
    ((status, view, _),) = _post_all(server, [_workflow_request(workflow)])
    assert status == 200, view
    assert (view["steps"], view["frames"], view["frames_source"], view["assumed"]) == (steps, frames, source, [])
    assert view["keyframes"] == [0, frames - 1] and f"{steps} steps" in view["lines"][0] and f"{frames} latent frames" in view["lines"][0]


def test_steps_through_split_sigmas_and_denoise():
    basic = {"class_type": "BasicScheduler", "slot": 0, "widgets": {"steps": 20, "denoise": 1.0}}
    split = [{"class_type": "SplitSigmas", "slot": s, "widgets": {"step": 8}} for s in (0, 1)]
    assert [view_from_request({"sigmas": [half, basic]})["steps"] for half in split] == [8, 12]
    split_denoise = [{"class_type": "SplitSigmasDenoise", "slot": s, "widgets": {"denoise": 0.25}} for s in (0, 1)]
    assert [view_from_request({"sigmas": [half, basic]})["steps"] for half in split_denoise] == [15, 5]
    ays = {"class_type": "AlignYourStepsScheduler", "widgets": {"model_type": "SVD", "steps": 30, "denoise": 0.5}}
    assert view_from_request({"sigmas": [ays]})["steps"] == 15
    assert view_from_request({"sigmas": [{"class_type": "RhymeFlowKSampler", "widgets": {"steps": 25, "denoise": 0.6}}]})["steps"] == 25
    unknown = view_from_request({"sigmas": [{"class_type": "MySigmas", "widgets": {"steps": 12}}]})
    assert unknown["steps"] == 30 and "steps" in unknown["assumed"] and "MySigmas" in unknown["lines"][0]


def test_frames_from_length_and_family_and_unknown_latents():
    assert view_from_request({"length": 97, "family": "ltxv"})["frames"] == 13
    assert view_from_request({"length": 97, "family": "hunyuan"})["frames"] == 25
    assert view_from_request({"length": 81, "family": "wan"})["frames"] == 21
    assert view_from_request({"length": 13, "family": "demo"})["frames"] == 13  # no VAE: one latent frame is one frame
    custom_latent = [{"class_type": "SomePackVideoLatent", "widgets": {"num_frames": 97}}]
    ltx_model = [{"class_type": "RhymeFlowTrajectoryProjection", "widgets": {}},
                 {"class_type": "UNETLoader", "widgets": {"unet_name": "ltx-video-2b-v0.9.5.safetensors"}}]
    view = view_from_request({"latent": custom_latent, "model": ltx_model})
    assert view["frames"] == 13 and "LTX-Video" in view["frames_source"]
    view = view_from_request({"latent": custom_latent})
    assert view["frames"] == 21 and "frames" in view["assumed"] and "cannot size" in view["lines"][0]
    through = [{"class_type": "SamplerCustomAdvanced", "slot": 0, "widgets": {}},
               {"class_type": "EmptyLTXVLatentVideo", "slot": 0, "widgets": {"length": 121}}]
    assert view_from_request({"latent": through})["frames"] == 16


def test_labels_match_the_drawing():
    view = view_from_request({"steps": 10, "frames": 13, "warmup_steps": 0})
    assert view["roles"][0] == "warmup" and view["warmup_passes"] == 1 and view["warmup_steps"] == 0
    assert "warm-up 1 (warmup_steps 0: the first step is always a full pass)" in view["lines"][2]
    preset = view_from_request({"steps": 30, "frames": 21, "preset": "fast", "warmup_steps": 12})
    assert preset["preset_values"] == {"warmup_steps": 5, "min_stride": 4, "max_stride": 5, "transition_1": 0.3,
                                       "transition_2": 0.7, "stride_schedule": "progressive"}
    assert set(preset["preset_values"]) == set(preset["preset_widgets"]) and "preset fast" in preset["lines"][1]
    assert view_from_request({"steps": 30, "frames": 21})["preset_values"] == {}
    assert [item["key"] for item in view["legend"]] == ["warmup", "rhythmic", "active", "skipped", "keyframe"]
    assert all(view["colors"][item["key"]] == item["color"] for item in view["legend"])


def test_partial_passes_are_drawn_and_priced_as_the_sampler_runs_them():
    base = {"steps": 10, "frames": 13, "warmup_steps": 3, "keyframes": {"strategy": "uniform", "count": 2}}
    paper, view = view_from_request(base), view_from_request({**base, "refresh_budget": 0.25})
    assert paper["refresh"] == [] and "refresh" not in [item["key"] for item in paper["legend"]]
    active = [i for i, role in enumerate(view["roles"]) if role == "active"]
    assert [len(view["refresh"][i]) for i in active] == [refresh_count(0.25, 11, j) for j in range(len(active))]
    assert all(not view["refresh"][i] for i, role in enumerate(view["roles"]) if role != "active")
    assert not set().union(*map(set, view["refresh"])) & set(view["keyframes"]), "keyframes are never refresh frames"
    assert view["active_cost"] == pytest.approx(active_cost(2 + 14 / 5, 13)) and view["ideal_speedup"] < paper["ideal_speedup"]
    assert "partial passes: refresh_budget 0.25 of 11 non-keyframes, 14 refreshes over 5 active passes" in "\n".join(view["lines"])
    assert view["legend"][-1]["key"] == "refresh" and view["refresh_source"] == "planned"


def test_partial_passes_the_sampler_would_refuse_are_said_in_red():
    def model(context, unet):
        return [{"class_type": "RhymeFlowTrajectoryProjection", "widgets": {"context": context}},
                {"class_type": "UNETLoader", "widgets": {"unet_name": unet}}]
    base = {"steps": 30, "frames": 21, "refresh_budget": 0.2}
    assert view_from_request({**base, "model": model("kv_cache", "wan2.1_t2v_1.3B_bf16.safetensors")})["warnings"] == []
    hidden = view_from_request({**base, "model": model("hidden_cache", "wan2.1_t2v_1.3B_bf16.safetensors")})["warnings"]
    assert len(hidden) == 1 and "not supported with context=hidden_cache" in hidden[0] and "Set refresh_budget to 0" in hidden[0]
    hunyuan = view_from_request({**base, "model": model("kv_cache", "hunyuan_video_t2v_720p_bf16.safetensors")})["warnings"]
    assert "the HunyuanVideo model family" in hunyuan[0]
    assert view_from_request({**base, "refresh_budget": 0, "model": model("hidden_cache", "hunyuan.safetensors")})["warnings"] == []


def test_run_line_reports_slower_runs_as_slower():
    assert "slower by 10.90 s than dense" in run_line({"seconds_saved": -10.9, "estimated_dense_seconds": 20.0,
                                                       "sampler_seconds": 30.9, "full_passes": 5, "active_passes": 5})
    assert "saved about 4.05 s" in run_line({"seconds_saved": 4.05, "estimated_dense_seconds": 34.5, "sampler_seconds": 30.45})


def test_report_event_carries_the_run_line(pack_routes):
    routes, _ = pack_routes
    package = routes.__name__.rsplit(".nodes.routes", 1)[0]
    report = sys.modules[f"{package}.rhymeflow_core.report"]
    schedule = sys.modules[f"{package}.rhymeflow_core.schedule"]
    keyframes = sys.modules[f"{package}.rhymeflow_core.keyframes"]
    presets = sys.modules[f"{package}.rhymeflow_core.presets"]
    run = report.RunReport(steps=10, frames=13, completed=True, preset="balanced", keyframes=[0, 12], full_passes=5,
                           active_passes=5, sampler_seconds=30.9, estimated_dense_seconds=20.0, seconds_saved=-10.9,
                           source="15", schedule=presets.resolve_schedule("balanced", schedule.ScheduleSettings(), 10),
                           keyframe_spec=keyframes.KeyframeSpec())
    event = routes.report_event(run)
    view = event["view"]
    assert view["lines"][-1].startswith("last run:") and "slower by 10.90 s" in view["lines"][-1]
    assert view["preset"] == "balanced" and "preset balanced" in view["lines"][1] and view["keyframes_source"] == "chosen"
    json.dumps(event)
    # A run with partial passes: the view draws the frames it refreshed, not a plan.
    refreshed = [[] for _ in range(10)]
    refreshed[5], refreshed[8] = [3, 7], [4]
    run.refresh_budget, run.refreshed = 0.1, refreshed
    view = routes.report_event(run)["view"]
    assert view["refresh"] == refreshed and view["refresh_source"] == "chosen" and "the last run refreshed" in "\n".join(view["lines"])
