"""Non-keyframes on a multistep solver (docs/algorithm.md §10), through ComfyUI's real CFGGuider path."""
import comfy.samplers
import pytest
import torch

from helpers import PassProbe, last_report, latent_and_noise, patched, rel_err, sample, sigmas_for
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.keyframes import KeyframeSpec
from rhymeflow_core.nonkey_solver import evaluation_steps
from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
from rhymeflow_core.sampling_loop import SamplerSettings
from rhymeflow_core.schedule import ScheduleSettings, build_schedule

FRAMES, SIZE = 5, 8
FULL_ROWS = FRAMES * (SIZE // 2) ** 2


def rhymeflow(solver, warmup=3, min_stride=2, max_stride=3, count=2, nonkey_solver="multistep", **more):
    return RhymeFlowSamplerObject(SamplerSettings(ScheduleSettings(warmup, min_stride, max_stride),
                                                  KeyframeSpec("uniform", count), solver, nonkey_solver, **more))


@pytest.mark.parametrize("solver", ["euler", "uni_pc", "uni_pc_bh2", "dpmpp_2m"])
def test_multistep_equals_the_keyframe_solver_when_every_group_has_length_1(solver, tiny_model):
    """Groups of one step: the non-keyframes' coarse schedule is the schedule, so with the multistep update every
    frame follows the keyframe solver and the run is ComfyUI's sampler of that name. The Euler jump is not."""
    model = tiny_model()
    sigmas = sigmas_for(model, 12)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    dense = sample(model, comfy.samplers.sampler_object(solver), sigmas, latent, noise)
    with PassProbe(model) as probe:
        ours = sample(patched(model), rhymeflow(solver, warmup=3, min_stride=1, max_stride=1), sigmas, latent, noise)
    assert last_report().keyframes == [0, 4] and last_report().nonkey_solver == "multistep"
    assert probe.kinds(FULL_ROWS) == ["full"] * 12
    assert rel_err(ours, dense) <= 1e-5
    jump = sample(patched(model), rhymeflow(solver, 3, 1, 1, nonkey_solver="euler_jump"), sigmas, latent, noise)
    if solver == "euler":
        assert rel_err(jump, dense) <= 1e-5    # for a one-step solver the multistep update is the jump
    else:
        assert rel_err(jump, dense) > 1e-4, "the paper's Euler jump must differ from a multistep solver"


@pytest.mark.parametrize("solver", ["uni_pc", "dpmpp_2m"])
def test_multistep_keeps_the_schedule_and_changes_only_the_non_keyframe_update(solver, tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 20)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    runs = {}
    for mode in ("euler_jump", "multistep"):
        with PassProbe(model) as probe:
            runs[mode] = sample(patched(model), rhymeflow(solver, 4, 3, 5, nonkey_solver=mode), sigmas, latent, noise)
        report = last_report()
        assert probe.kinds(FULL_ROWS) == ["active" if r == "active" else "full"
                                          for r in build_schedule(20, ScheduleSettings(4, 3, 5)).roles()]
        assert (report.full_passes, report.active_passes, report.nonkey_solver) == (9, 11, mode)
    assert rel_err(runs["multistep"], runs["euler_jump"]) > 1e-4


def test_dpmpp_2m_non_keyframes_take_variable_2m_steps_on_their_own_points(tiny_model):
    """Step by step, from the previews: at each rhythmic point the non-keyframes move to the group end by
    DPM-Solver++(2M) with the previous evaluation point's clean prediction (r = h_last / h), in between they sit
    on the straight line to that end, and their preview is that line's clean prediction."""
    model = tiny_model()
    steps = 20
    sigmas = sigmas_for(model, steps)
    latent, noise = latent_and_noise(7, SIZE)
    seen = []
    out = sample(patched(model), rhymeflow("dpmpp_2m", 4, 3, 5, count=3), sigmas, latent, noise,
                 callback=lambda i, x0, x, total: seen.append((x.clone(), x0.clone())))
    out = model.model.process_latent_in(out)
    schedule = build_schedule(steps, ScheduleSettings(4, 3, 5))
    nonkey = [1, 2, 4, 5]
    close = dict(rtol=1e-5, atol=1e-6)
    points = evaluation_steps(schedule)
    for k, i in enumerate(points[schedule.warmup:], start=schedule.warmup):
        end = schedule.group_at(i).end
        (z, d), d_prev = seen[i], seen[points[k - 1]][1]
        s, s_end, s_prev = sigmas[i], sigmas[end], sigmas[points[k - 1]]
        h = s.log() - s_end.log() if s_end > 0 else None
        if h is None:
            expected = d                                     # first order into sigma 0, as dpmpp_2m
        else:
            r = (s_prev.log() - s.log()) / h
            d2 = (1 + 1 / (2 * r)) * d - 1 / (2 * r) * d_prev
            expected = s_end / s * z - torch.expm1(-h) * d2
        target = seen[end][0] if end < steps else out
        torch.testing.assert_close(target[:, :, nonkey], expected[:, :, nonkey], **close)
        line_x0 = z - s / (s_end - s) * (expected - z)
        for j in range(i + 1, end):
            torch.testing.assert_close(seen[j][0][:, :, nonkey], (line_x0 + sigmas[j] / s * (z - line_x0))[:, :, nonkey], **close)
            torch.testing.assert_close(seen[j][1][:, :, nonkey], line_x0[:, :, nonkey], **close)


@pytest.mark.parametrize("bad,fix", [(dict(nonkey_solver="rk4"), "euler_jump"), (dict(warmup_mode="auto"), "adaptive"),
                                     (dict(warmup_settle=0.0), "above 0")])
def test_bad_settings_are_refused_before_sampling(bad, fix, tiny_model):
    with pytest.raises(RhymeFlowInputError, match=fix):
        SamplerSettings(**bad)
    import nodes as comfy_nodes

    from tools import headless
    headless.load_nodes()
    with pytest.raises(Exception, match=fix) as refused:  # the node builds its settings when it runs, before sampling
        comfy_nodes.NODE_CLASS_MAPPINGS["RhymeFlowSampler"].execute(
            "uni_pc", 10, 3, 5, 0.3, 0.7, "progressive", "balanced", None, bad.get("nonkey_solver", "euler_jump"),
            bad.get("warmup_mode", "fixed"), bad.get("warmup_settle", 0.5))
    assert type(refused.value).__name__ == "RhymeFlowInputError"  # the pack as the host loads it: its own module copy
