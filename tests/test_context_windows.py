"""RhymeFlow under ComfyUI's core context windows (docs/algorithm.md §9), against the real host nodes
(comfy_extras/nodes_context_windows.py) and the real IndexListContextHandler, in both node orders."""
from __future__ import annotations

import inspect

import comfy.samplers
import comfy_extras.nodes_context_windows as host_nodes
import pytest
import torch

from helpers import PassProbe, last_report, latent_and_noise, patched, rel_err, rhymeflow, sample, sigmas_for, tiny_model
from rhymeflow_core import compat
from rhymeflow_core.context_windows import SKIPPED
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.run_state import ACTIVE, FULL, RECORD
from rhymeflow_core.sampling_loop import find_run

FRAMES, SIZE = 8, 8
P = (SIZE // 2) ** 2   # token rows per latent frame of the tiny Wan model (patch 1x2x2)
# Both nodes give windows of 4 latent frames overlapping by 2: [0-3], [2-5], [4-7] with standard_static.
WAN = (host_nodes.WanContextWindowsManualNode, dict(context_length=13, context_overlap=8))
MANUAL = (host_nodes.ContextWindowsManualNode, dict(context_length=4, context_overlap=2, dim=2))
NODES = {"wan": WAN, "manual": MANUAL}


def with_windows(model, node="wan", **settings):
    """The host node's execute, with the arguments this host version's schema has (v0.33 added freenoise, ...)."""
    cls, base = NODES[node]
    args = dict(context_schedule="standard_static", context_stride=1, closed_loop=False, fuse_method="pyramid",
                freenoise=False, cond_retain_index_list="", split_conds_to_windows=False, latent_retain_index_list="",
                causal_window_fix=True, **base)
    args.update(settings)
    params = inspect.signature(cls.execute).parameters
    return cls.execute(model, **{k: v for k, v in args.items() if k in params}).result[0]


def both(model, node, order):
    """Context windows before or after RhymeFlow Trajectory Projection."""
    return patched(with_windows(model, node)) if order == "windows-first" else with_windows(patched(model), node)


def dense(model, sigmas, latent, noise, solver="euler"):
    return sample(model, comfy.samplers.sampler_object(solver), sigmas, latent, noise)


CASES = [(node, order) for node in NODES for order in ("windows-first", "projection-first")]


@pytest.mark.parametrize("node,order", CASES)
def test_every_frame_a_keyframe_equals_dense_sampling_with_the_same_windows(node, order):
    model = tiny_model("wan")
    latent, noise = latent_and_noise(frames=FRAMES, size=SIZE)
    sigmas = sigmas_for(model, 8)
    ref = dense(with_windows(model, node), sigmas, latent, noise)
    out = sample(both(model, node, order), rhymeflow(warmup=2, count=FRAMES), sigmas, latent, noise)
    assert rel_err(out, ref) < 1e-5
    rep = last_report()
    assert rep.keyframes == list(range(FRAMES)) and rep.completed
    # Nothing to cache, and no window without keyframes: every window runs in every pass.
    assert rep.model_calls.get(RECORD, 0) == rep.model_calls.get(SKIPPED, 0) == 0 and rep.model_calls[ACTIVE] > 0


def pass_probe(keyframes, x_at):
    """A KSAMPLER function that makes one FULL, one RECORD and one ACTIVE call on the same input (a fresh
    cache), through the real guider, CFG and context-window handler, and keeps their outputs."""
    outputs = {}

    def fn(model, x, sigmas, extra_args=None, callback=None, disable=None):
        run = find_run(extra_args)
        run.report.frames = x.shape[2]
        x_in, s = x_at(x), sigmas[2] * x.new_ones([x.shape[0]])
        for kind in (FULL, RECORD, ACTIVE):
            run.set_plan(kind, keyframes)
            outputs[kind] = model(x_in, s, **extra_args)
        return x

    return comfy.samplers.KSAMPLER(fn), outputs


@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache"])
@pytest.mark.parametrize("keyframes", [(0, 3, 7), (0, 7)])
def test_active_pass_on_a_fresh_cache_equals_the_windowed_full_pass_at_keyframes(keyframes, context):
    """Each window maps the whole-video keyframes to its own positions and reads its own cache: on a fresh cache
    the fused keyframe outputs equal the full pass's (frame 3 lies in two windows). With keyframes (0, 7) the middle
    window holds none and is not run; (0, 3, 7) runs every window."""
    model = tiny_model("wan")
    latent, noise = latent_and_noise(frames=FRAMES, size=SIZE)
    sampler, outputs = pass_probe(keyframes, lambda x: x * 0.8)
    with PassProbe(model) as probe:
        sample(with_windows(patched(model, context)), sampler, sigmas_for(model, 8), latent, noise)
    key = list(keyframes)
    assert rel_err(outputs[RECORD], outputs[FULL]) < 1e-5
    assert rel_err(outputs[ACTIVE][:, :, key], outputs[FULL][:, :, key]) < 1e-5
    rep = last_report()
    per_window = {FULL: 3, RECORD: 3, ACTIVE: 2 if keyframes == (0, 7) else 3}
    calls = rep.model_calls[FULL] // 3   # one or two calls per window (ComfyUI may or may not batch cond and uncond)
    assert {k: rep.model_calls.get(k, 0) for k in per_window} == {k: n * calls for k, n in per_window.items()}
    assert rep.model_calls.get(SKIPPED, 0) == (1 if keyframes == (0, 7) else 0) * calls
    # Inside the model: every full / record call has 4 frames of queries (or 5 with v0.33's causal anchor frame);
    # the active calls only the keyframes each window holds.
    active = [c for c in probe.calls if c["q"] < 4 * P * c["batch"]]
    assert len(probe.calls) == sum(rep.model_calls[k] for k in per_window) and len(active) == rep.model_calls[ACTIVE]
    assert sum(c["q"] for c in active) == rep.rows[ACTIVE]


@pytest.mark.parametrize("node,order", CASES)
def test_a_run_with_windows_skips_windows_without_keyframes_and_counts_rows(node, order):
    model = tiny_model("wan")
    latent, noise = latent_and_noise(frames=FRAMES, size=SIZE)
    sigmas = sigmas_for(model, 10)
    with PassProbe(model) as probe:
        out = sample(both(model, node, order), rhymeflow(warmup=3, count=2), sigmas, latent, noise)
    rep = last_report()
    assert rep.keyframes == [0, FRAMES - 1] and torch.isfinite(out).all()
    calls = rep.model_calls[FULL] // (3 * (rep.full_passes - _records(rep)))
    # Warm-up and stride-1 rhythmic points in 3 windows; records in 3; active passes run the 2 windows holding
    # frame 0 or 7 (one keyframe query frame each) and skip the middle one.
    assert rep.model_calls[RECORD] == 3 * _records(rep) * calls
    assert rep.model_calls[ACTIVE] == 2 * rep.active_passes * calls
    assert rep.model_calls[SKIPPED] == rep.active_passes * calls
    assert rep.rows[ACTIVE] == sum(c["q"] for c in probe.calls if c["q"] == P * c["batch"]) > 0
    assert len(probe.calls) == sum(rep.model_calls[k] for k in (FULL, RECORD, ACTIVE))
    assert rel_err(out, dense(with_windows(model, node), sigmas, latent, noise)) > 1e-4   # the active passes changed the result


def _records(rep) -> int:
    return sum(1 for g in _groups(rep) if g > 1)


def _groups(rep) -> list[int]:
    from rhymeflow_core.schedule import build_schedule
    return [g.span for g in build_schedule(rep.steps, rep.schedule).groups]


@pytest.mark.parametrize("settings,fix", [
    (dict(context_schedule="standard_uniform"), "standard_static"),
    (dict(context_schedule="looped_uniform"), "standard_static"),
])
def test_windows_that_move_every_step_are_refused_before_sampling(settings, fix):
    model = tiny_model("wan")
    latent, noise = latent_and_noise(frames=FRAMES, size=SIZE)
    with PassProbe(model) as probe, pytest.raises(RhymeFlowInputError, match=fix):
        sample(with_windows(patched(model), "wan", **settings), rhymeflow(warmup=2), sigmas_for(model, 6), latent, noise)
    assert probe.calls == []


def test_windows_over_another_dimension_are_refused_before_sampling():
    model = tiny_model("wan")
    latent, noise = latent_and_noise(frames=FRAMES, size=SIZE)
    with PassProbe(model) as probe, pytest.raises(RhymeFlowInputError, match="dim to 2"):
        sample(with_windows(patched(model), "manual", dim=3), rhymeflow(warmup=2), sigmas_for(model, 6), latent, noise)
    assert probe.calls == []


def test_latent_retain_index_list_is_refused_before_sampling():
    if "latent_retain_index_list" not in inspect.signature(host_nodes.ContextWindowsManualNode.execute).parameters:
        pytest.skip("this ComfyUI has no latent_retain_index_list (added after 0.3.75)")
    model = tiny_model("wan")
    latent, noise = latent_and_noise(frames=FRAMES, size=SIZE)
    with pytest.raises(RhymeFlowInputError, match="latent_retain_index_list"):
        sample(with_windows(patched(model), "manual", latent_retain_index_list="0"), rhymeflow(warmup=2),
               sigmas_for(model, 6), latent, noise)


def test_windows_the_host_does_not_use_are_no_concern():
    """A video no longer than one window runs without windows (should_use_context), whatever their schedule."""
    model = tiny_model("wan")
    latent, noise = latent_and_noise(frames=4, size=SIZE)
    sigmas = sigmas_for(model, 6)
    out = sample(with_windows(patched(model), "wan", context_schedule="looped_uniform"), rhymeflow(warmup=2), sigmas, latent, noise)
    assert rel_err(out, sample(patched(model), rhymeflow(warmup=2), sigmas, latent, noise)) < 1e-6


def image_inputs(variant, given, seed=1):
    """As WanImageToVideo (c_concat: image latent and a mask, 0 = given) or Wan22ImageToVideoLatent (the image in the
    latent, noise_mask 0 there) build them: (latent, noise, denoise mask, cond, uncond)."""
    g = torch.Generator().manual_seed(seed)
    channels = 48 if variant == "ti2v_5b" else 16
    image = torch.randn(1, channels, FRAMES, SIZE, SIZE, generator=g)
    mask = torch.ones(1, 1, FRAMES, SIZE, SIZE)
    mask[:, :, list(given)] = 0.0
    latent = torch.zeros(1, channels, FRAMES, SIZE, SIZE)
    extra = {}
    if variant == "ti2v_5b":
        latent[:, :, list(given)] = image[:, :, list(given)]
    else:
        extra = {"concat_latent_image": image, "concat_mask": mask}
    cond, uncond = ([[torch.randn(1, 8, 4096, generator=g) * 0.5, dict(extra)]] for _ in range(2))
    return latent, torch.randn(latent.shape, generator=g), mask if variant == "ti2v_5b" else None, cond, uncond


@pytest.mark.parametrize("variant", ["a14b_i2v", "ti2v_5b"])
def test_image_conditioned_frames_in_windows_are_keyframes_by_whole_video_index(variant):
    """Wan I2V (concat mask, read in every window) and TI2V-5B (per-frame timesteps, sliced per window): the frames
    the image conditions become keyframes by their whole-video index; every frame a keyframe equals dense with windows."""
    model = tiny_model("wan", variant)
    given = (0, 5)
    latent, noise, mask, cond, uncond = image_inputs(variant, given)
    sigmas = sigmas_for(model, 8)

    def run(m, sampler):
        return sample(m, sampler, sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask)

    if not compat.windows_slice_model_conds():
        if variant == "ti2v_5b":   # the host's dense sampling runs, with the whole video's timesteps on each window
            with pytest.raises(RhymeFlowInputError, match="noise mask"):
                run(with_windows(patched(model), "wan"), rhymeflow(warmup=2, count=2))
            return
        pytest.skip("this ComfyUI does not slice c_concat to context windows (0.3.75): dense sampling fails too")
    ref = run(with_windows(model, "wan"), comfy.samplers.sampler_object("euler"))
    assert rel_err(run(with_windows(patched(model), "wan"), rhymeflow(warmup=2, count=FRAMES)), ref) < 1e-5
    out = run(with_windows(patched(model), "wan"), rhymeflow(warmup=2, count=2))
    rep = last_report()
    assert rep.conditioned_frames == list(given) and rep.keyframes == [0, 5, FRAMES - 1]
    assert torch.isfinite(out).all() and rep.model_calls[ACTIVE] > 0
