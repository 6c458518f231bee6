"""Guidance nodes with RhymeFlow: whole-latent statistics, skip-layer guidance, few-steps warnings.

ComfyUI's own CFGZeroStar (comfy_extras/nodes_cfg.py), APG (nodes_apg.py) and SkipLayerGuidanceDiT
(nodes_slg.py) on the tiny real Wan, through CFGGuider (rhymeflow_core/pass_outputs.py).
"""
import comfy.samplers
import pytest
import torch
from comfy_extras.nodes_apg import APG
from comfy_extras.nodes_cfg import CFGZeroStar
from comfy_extras.nodes_slg import SkipLayerGuidanceDiT

from helpers import PassProbe, last_report, latent_and_noise, patched, rel_err, rhymeflow, sample, sigmas_for
from rhymeflow_core.schedule import ScheduleSettings, build_schedule

FRAMES, SIZE, STEPS, WARMUP = 5, 8, 12, 4
SCHEDULE = build_schedule(STEPS, ScheduleSettings(WARMUP, 2, 3))
GUIDANCE = {"CFGZeroStar": lambda m: CFGZeroStar.execute(m).result[0],
            "APG": lambda m: APG.execute(m, 0.5, 2.0, 0.5).result[0]}


def spy(model, seen: list):
    """A pre-CFG function ahead of the guidance node's: records the branch predictions guidance functions get."""
    m = model.clone()
    m.set_model_sampler_pre_cfg_function(lambda args: seen.append([c.clone() for c in args["conds_out"]]) or args["conds_out"])
    return m


@pytest.mark.parametrize("name", list(GUIDANCE))
def test_every_frame_a_keyframe_reproduces_dense_guidance(name, tiny_model):
    model = GUIDANCE[name](tiny_model())
    sigmas = sigmas_for(model, STEPS)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    reference = sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise)
    out = sample(patched(model), rhymeflow("euler", WARMUP, 2, 3, count=FRAMES), sigmas, latent, noise)
    assert rel_err(out, reference) <= 1e-5


@pytest.mark.parametrize("projection_first", [True, False])
@pytest.mark.parametrize("name", list(GUIDANCE))
def test_guidance_sees_the_rhythmic_point_in_non_keyframe_rows(name, projection_first, tiny_model):
    # Issue 14: CFGZeroStar's alpha and APG's norms saw empty non-keyframe rows in active passes.
    # Now those rows hold the rhythmic point's prediction (per branch), so whole-latent statistics
    # are taken over the latent the sampler actually holds.
    model = tiny_model()
    seen: list = []
    guided = GUIDANCE[name](spy(patched(model), seen)) if projection_first else patched(GUIDANCE[name](spy(model, seen)))
    sigmas = sigmas_for(model, STEPS)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    sample(guided, rhymeflow("euler", WARMUP, 2, 3, count=2), sigmas, latent, noise)
    keyframes, roles = last_report().keyframes, SCHEDULE.roles()
    nonkey = [f for f in range(FRAMES) if f not in keyframes]
    assert len(seen) == STEPS and roles.count("active") > 0
    for i, branches in enumerate(seen):
        if roles[i] == "rhythmic":
            point = [b[:, :, nonkey] for b in branches]
        elif roles[i] == "active":
            for k, rows in enumerate(point):   # cond, uncond
                assert rows.abs().max() > 0.1
                assert rel_err(branches[k][:, :, nonkey], rows) <= 1e-5, (i, k)
    assert last_report().model_calls["active"] == SCHEDULE.active_passes


def slg(model, end_percent: float):
    return SkipLayerGuidanceDiT.execute(model, 3.0, 0.0, end_percent, double_layers="0", single_layers="").result[0]


@pytest.mark.parametrize("projection_first", [True, False])
def test_skip_layer_guidance_runs_no_pass_after_the_warm_up(projection_first, tiny_model):
    # Issue 14: its extra cond pass ran (and re-recorded) in every recording and active pass, and was discarded.
    model = tiny_model()
    sigmas = sigmas_for(model, STEPS)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    ms = model.get_model_object("model_sampling")
    lo, hi = 0.0, 1.0
    for _ in range(60):   # an end percent between the last warm-up sigma and the next one
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ms.percent_to_sigma(mid) >= float(sigmas[WARMUP - 1]) else (lo, mid)
    assert float(sigmas[WARMUP]) < ms.percent_to_sigma(hi) < float(sigmas[WARMUP - 1])

    def run(m):
        with PassProbe(model) as probe:
            out = sample(m, rhymeflow("euler", WARMUP, 2, 3, count=2), sigmas, latent, noise, cfg=3.0)
        return out, len(probe.calls), last_report()

    whole_run = (lambda m: patched(slg(m, 1.0))) if projection_first else (lambda m: slg(patched(m), 1.0))
    out, calls, report = run(whole_run(model))
    warm_up_only, calls_warm_up_only, _ = run(patched(slg(model, hi)))
    plain, plain_calls, _ = run(patched(model))
    assert rel_err(out, warm_up_only) <= 1e-6 and rel_err(out, plain) > 1e-4   # acted in the warm-up, nowhere else
    assert calls == calls_warm_up_only == plain_calls + WARMUP                  # one extra pass per warm-up step only
    assert report.model_calls["record"] == sum(g.span > 1 for g in SCHEDULE.groups)
    assert report.model_calls["active"] == SCHEDULE.active_passes
    assert "answered from the first" in report.warnings["repeated_pass"]


@pytest.mark.parametrize("steps,warmup,topics", [
    (4, 1, {"short_warmup"}), (6, 1, {"short_warmup"}), (6, 2, set()), (4, 3, {"no_active_pass"}), (5, 3, set())])
def test_few_steps_warn_once_with_what_to_do(steps, warmup, topics, tiny_model):
    model = tiny_model()
    latent, noise = latent_and_noise(FRAMES, SIZE)
    sample(patched(model), rhymeflow("euler", warmup, 2, 3, count=2), sigmas_for(model, steps), latent, noise)
    warnings = last_report().warnings
    assert {t for t in ("short_warmup", "no_active_pass") if t in warnings} == topics
    assert all(("Use at least 2 warm-up steps" if t == "short_warmup" else "Lower warmup_steps") in warnings[t] for t in topics)
    assert torch.isfinite(latent).all()
