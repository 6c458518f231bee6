"""Step caches with RhymeFlow (rhymeflow_core/step_caches.py): they act in the warm-up only, in either node order.

Core EasyCache and LazyCache are ComfyUI's own nodes; TeaCache and MagCache are stand-ins for the hook
those packs install (tests/standins/step_caches.py). Every test samples the tiny real Wan through
ComfyUI's CFGGuider.
"""
import comfy.samplers
import pytest
import torch
from comfy_extras.nodes_easycache import EasyCacheNode, LazyCacheNode
from standins.step_caches import MagCacheStandIn, TeaCacheStandIn

from helpers import PassProbe, last_report, latent_and_noise, patched, rel_err, rhymeflow, sample, sigmas_for
from rhymeflow_core.schedule import ScheduleSettings, build_schedule

FRAMES, SIZE, STEPS, WARMUP = 5, 8, 12, 5
SCHEDULE = build_schedule(STEPS, ScheduleSettings(WARMUP, 2, 3))
RECORDS = sum(g.span > 1 for g in SCHEDULE.groups)


def percent_between(model, high: float, low: float) -> float:
    """A sampling percent whose sigma lies in (low, high]: the step caches' start / end settings are percents."""
    ms = model.get_model_object("model_sampling")
    lo, hi = 0.0, 1.0
    for _ in range(60):   # percent_to_sigma decreases with the percent
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ms.percent_to_sigma(mid) > high else (lo, mid)
    assert low < ms.percent_to_sigma(hi) <= high
    return hi


def core_cache(node, start: float, end: float = 1.0):
    return lambda m: node.execute(m, 3.0, start, end, False).result[0]


def apply(model, cache, cache_first: bool):
    return patched(cache(model)) if cache_first else cache(patched(model))


def run(model, cache, cache_first, count, sigmas):
    latent, noise = latent_and_noise(FRAMES, SIZE)
    with PassProbe(model) as probe:
        out = sample(apply(model, cache, cache_first), rhymeflow("euler", WARMUP, 2, 3, count=count), sigmas, latent, noise)
    return out, probe, last_report()


def dense(model, sigmas):
    latent, noise = latent_and_noise(FRAMES, SIZE)
    return sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise)


# ---- core EasyCache / LazyCache ----------------------------------------------------------------

@pytest.mark.parametrize("cache_first", [True, False])
@pytest.mark.parametrize("node,name", [(EasyCacheNode, "EasyCache"), (LazyCacheNode, "LazyCache")])
def test_every_frame_a_keyframe_equals_dense_with_the_cache_confined_to_the_warm_up(node, name, cache_first, tiny_model):
    # With every frame a keyframe RhymeFlow is the stock sampler; the cache then acts exactly as a
    # dense run whose cache ends with the warm-up, and the cache did skip warm-up steps there.
    model = tiny_model()
    sigmas = sigmas_for(model, STEPS)
    end = percent_between(model, float(sigmas[WARMUP - 1]) - 1e-6, float(sigmas[WARMUP]))
    reference = dense(core_cache(node, 0.0, end)(model), sigmas)
    out, _, report = run(model, core_cache(node, 0.0), cache_first, FRAMES, sigmas)
    assert rel_err(out, reference) <= 1e-5
    assert rel_err(out, dense(model, sigmas)) > 1e-4, "the cache must have acted in the warm-up"
    assert "skipped" in report.warnings[f"step_cache_{name.lower()}"]


@pytest.mark.parametrize("cache_first", [True, False])
@pytest.mark.parametrize("node,name", [(EasyCacheNode, "EasyCache"), (LazyCacheNode, "LazyCache")])
def test_sparse_keyframes_keep_every_recording_and_active_pass(node, name, cache_first, tiny_model):
    # Issue 14: LazyCache from 0.15 skipped the first recording pass and sampling crashed.
    model = tiny_model()
    sigmas = sigmas_for(model, STEPS)
    out, probe, report = run(model, core_cache(node, 0.0), cache_first, 2, sigmas)
    assert torch.isfinite(out).all()
    assert report.model_calls["record"] == RECORDS and report.model_calls["active"] == SCHEDULE.active_passes
    assert probe.kinds(FRAMES * (SIZE // 2) ** 2).count("active") == SCHEDULE.active_passes
    message = report.warnings[f"step_cache_{name.lower()}"]
    assert message.startswith(f"{name} acts only in the warm-up") and "skipped 0" not in message


@pytest.mark.parametrize("cache_first", [True, False])
@pytest.mark.parametrize("node,name", [(EasyCacheNode, "EasyCache"), (LazyCacheNode, "LazyCache")])
def test_a_cache_starting_after_the_warm_up_is_inert_and_says_so(node, name, cache_first, tiny_model):
    # Issue 14: LazyCache from 0.3 / 0.5 silently replaced recording passes; now it changes nothing.
    model = tiny_model()
    sigmas = sigmas_for(model, STEPS)
    start = percent_between(model, float(sigmas[WARMUP + 1]), float(sigmas[WARMUP + 2]))
    plain, _, _ = run(model, lambda m: m, False, 2, sigmas)
    out, _, report = run(model, core_cache(node, start), cache_first, 2, sigmas)
    assert rel_err(out, plain) <= 1e-6
    assert report.warnings[f"step_cache_{name.lower()}"].startswith(f"{name} is inert under RhymeFlow")


# ---- TeaCache / MagCache (stand-ins for the packs' hook) ---------------------------------------

def stand_ins(kind: str, warm_up_only: bool):
    if kind == "TeaCache":
        return TeaCacheStandIn(0.0, (WARMUP - 1) / STEPS if warm_up_only else 1.0)
    return MagCacheStandIn(0.1, WARMUP - 1 if warm_up_only else None)


@pytest.mark.parametrize("cache_first", [True, False])
@pytest.mark.parametrize("kind", ["TeaCache", "MagCache"])
def test_forward_caches_never_replace_a_pass_after_the_warm_up(kind, cache_first, tiny_model):
    # Issue 14: with every frame a keyframe they skipped rhythmic points, so the result was no longer dense.
    model = tiny_model()
    sigmas = sigmas_for(model, STEPS)
    reference_cache = stand_ins(kind, warm_up_only=True)
    reference = dense(reference_cache.apply(model), sigmas)
    cache = stand_ins(kind, warm_up_only=False)
    out, _, report = run(model, cache.apply, cache_first, FRAMES, sigmas)
    assert cache.skips and all(step < WARMUP for step, _ in cache.skips)
    assert cache.skips == reference_cache.skips
    assert rel_err(out, reference) <= 1e-5
    assert report.warnings[f"step_cache_{kind.lower()}"].startswith(f"{kind} acts only in the warm-up")


@pytest.mark.parametrize("kind", ["TeaCache", "MagCache"])
def test_forward_caches_with_sparse_keyframes(kind, tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, STEPS)
    cache = stand_ins(kind, warm_up_only=False)
    out, _, report = run(model, cache.apply, False, 2, sigmas)
    assert torch.isfinite(out).all() and all(step < WARMUP for step, _ in cache.skips)
    assert report.model_calls["record"] == RECORDS and report.model_calls["active"] == SCHEDULE.active_passes


def test_teacache_starting_after_the_warm_up_is_inert(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, STEPS)
    plain, _, _ = run(model, lambda m: m, False, 2, sigmas)
    cache = TeaCacheStandIn(0.6, 1.0)
    out, _, report = run(model, cache.apply, False, 2, sigmas)
    assert not cache.skips and rel_err(out, plain) <= 1e-6
    assert report.warnings["step_cache_teacache"].startswith("TeaCache is inert under RhymeFlow")
