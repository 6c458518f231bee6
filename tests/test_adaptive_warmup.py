"""Adaptive warm-up end (docs/algorithm.md §10), through ComfyUI's real CFGGuider path."""
import comfy.samplers
import pytest
import torch

from helpers import PassProbe, last_report, latent_and_noise, patched, rel_err, sample, sigmas_for
from rhymeflow_core.keyframes import KeyframeSpec, select_keyframes
from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
from rhymeflow_core.sampling_loop import SamplerSettings
from rhymeflow_core.schedule import ScheduleSettings, build_schedule
from rhymeflow_core.warmup import settle_measure

FRAMES, SIZE = 5, 8
FULL_ROWS = FRAMES * (SIZE // 2) ** 2


def rhymeflow(solver="uni_pc", warmup=5, min_stride=2, max_stride=3, keyframes=KeyframeSpec("uniform", 2), settle=0.5,
              mode="adaptive", nonkey_solver="euler_jump"):
    return RhymeFlowSamplerObject(SamplerSettings(ScheduleSettings(warmup, min_stride, max_stride), keyframes, solver,
                                                  nonkey_solver, mode, settle))


def test_a_settled_prediction_ends_the_warm_up_early_and_the_schedule_follows(tiny_model):
    """The loosest tolerance ends the warm-up at its minimum, 2 steps: keyframes come from step 1's clean
    prediction and the passes the model runs are the schedule rebuilt with warm-up 2 (not the bound's 5)."""
    model = tiny_model()
    sigmas = sigmas_for(model, 14)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    seen = []
    spec = KeyframeSpec("semantic", 3)
    with PassProbe(model) as probe:
        sample(patched(model), rhymeflow(keyframes=spec, settle=100.0), sigmas, latent, noise,
               callback=lambda i, x0, x, total: seen.append(x0.clone()))
    report = last_report()
    rebuilt = build_schedule(14, ScheduleSettings(2, 2, 3))
    assert probe.kinds(FULL_ROWS) == ["active" if r == "active" else "full" for r in rebuilt.roles()]
    assert probe.kinds(FULL_ROWS) != ["active" if r == "active" else "full"
                                      for r in build_schedule(14, ScheduleSettings(5, 2, 3)).roles()]
    assert (report.warmup_mode, report.warmup_bound, report.warmup_steps) == ("adaptive", 5, 2)
    assert (report.full_passes, report.active_passes) == (rebuilt.full_passes, rebuilt.active_passes)
    assert report.schedule.warmup_steps == 2  # what the after-run schedule view draws
    assert report.keyframes == [int(f) for f in select_keyframes(seen[1], spec, set())]
    assert len(report.warmup_measures) == 1


def test_a_prediction_that_never_settles_keeps_the_fixed_warm_up(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 14)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    seen = []
    adaptive = sample(patched(model), rhymeflow(settle=0.01), sigmas, latent, noise,
                      callback=lambda i, x0, x, total: seen.append(x0.clone()))
    report = last_report()
    fixed = sample(patched(model), rhymeflow(mode="fixed"), sigmas, latent, noise)
    assert torch.equal(adaptive, fixed)
    assert (report.warmup_steps, report.warmup_bound) == (5, 5)
    expected = [settle_measure(seen[i - 1], seen[i], sigmas[i - 1], sigmas[i]) for i in range(1, 5)]
    assert report.warmup_measures == pytest.approx(expected, rel=1e-5)
    assert all(m > 0.01 for m in expected)
    assert last_report().warmup_mode == "fixed" and not last_report().warmup_measures


@pytest.mark.parametrize("solver", ["euler", "uni_pc", "uni_pc_bh2", "dpmpp_2m"])
def test_every_frame_a_keyframe_still_reproduces_comfyui_sampler(solver, tiny_model):
    """Both new settings at once, the warm-up ending early: with every frame a keyframe nothing is skipped."""
    model = tiny_model()
    sigmas = sigmas_for(model, 14)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    dense = sample(model, comfy.samplers.sampler_object(solver), sigmas, latent, noise)
    with PassProbe(model) as probe:
        ours = sample(patched(model), rhymeflow(solver, keyframes=KeyframeSpec("uniform", FRAMES), settle=100.0,
                                                nonkey_solver="multistep"), sigmas, latent, noise)
    assert last_report().warmup_steps == 2
    assert rel_err(ours, dense) <= 1e-5
    assert probe.kinds(FULL_ROWS).count("full") == 14


@pytest.mark.parametrize("solver", ["uni_pc", "dpmpp_2m"])
def test_multistep_after_an_adaptive_end_is_still_the_keyframe_solver_at_stride_1(solver, tiny_model):
    """The non-keyframes' coarse schedule is re-timed when the warm-up ends early; at stride 1 it stays the schedule."""
    model = tiny_model()
    sigmas = sigmas_for(model, 12)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    dense = sample(model, comfy.samplers.sampler_object(solver), sigmas, latent, noise)
    ours = sample(patched(model), rhymeflow(solver, 6, 1, 1, settle=100.0, nonkey_solver="multistep"), sigmas, latent, noise)
    assert last_report().warmup_steps == 2 and last_report().keyframes == [0, 4]
    assert rel_err(ours, dense) <= 1e-5


def test_a_bound_of_two_steps_cannot_adapt_and_says_so(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 10)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    sample(patched(model), rhymeflow(warmup=2, settle=100.0), sigmas, latent, noise)
    report = last_report()
    assert report.warmup_steps == 2 and "runs as fixed" in report.warnings["adaptive_warmup"]
