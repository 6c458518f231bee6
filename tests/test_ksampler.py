"""RhymeFlowKSampler (all-in-one) against ComfyUI's own KSampler path on a tiny real Wan model."""
import nodes as comfy_nodes
import pytest
import torch

from helpers import conds, rel_err
from rhymeflow_core.all_in_one import sample_latent, scheduler_sigmas
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.keyframes import KeyframeSpec
from rhymeflow_core.report import observe
from rhymeflow_core.sampling_loop import SamplerSettings
from rhymeflow_core.schedule import ScheduleSettings
from tools import headless

FRAMES, SIZE = 5, 8


def _latent():
    return {"samples": torch.zeros(1, 16, FRAMES, SIZE, SIZE)}


def _ours(model, settings, steps=12, denoise=1.0, preset="custom", latent=None, solver="uni_pc"):
    cond, uncond = conds()
    settings = SamplerSettings(settings.schedule, settings.keyframes, solver)
    return sample_latent(model, 7, steps, 5.0, "simple", cond, uncond, latent or _latent(), denoise, settings, preset,
                         "kv_cache", "auto", source="9")["samples"]


def _ksampler(model, steps=12, denoise=1.0, latent=None, solver="uni_pc"):
    cond, uncond = conds()
    return comfy_nodes.common_ksampler(model, 7, steps, 5.0, solver, "simple", cond, uncond, latent or _latent(),
                                       denoise=denoise)[0]["samples"]


@pytest.mark.parametrize("denoise", [1.0, 0.6])
@pytest.mark.parametrize("solver", ["uni_pc", "euler"])
def test_every_frame_a_keyframe_is_ksampler(denoise, solver, tiny_model):
    # With every frame a keyframe RhymeFlow is dense sampling: same seed, noise, sigmas (denoise cut) and solver.
    model = tiny_model()
    all_frames = SamplerSettings(ScheduleSettings(3, 2, 3), KeyframeSpec("uniform", FRAMES))
    latent = {"samples": torch.randn(1, 16, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(5))}
    ours = _ours(model, all_frames, denoise=denoise, latent=latent, solver=solver)
    dense = _ksampler(model, denoise=denoise, latent=latent, solver=solver)
    assert rel_err(ours, dense) <= 1e-5


def test_two_keyframes_differ_from_dense_and_report_the_preset_schedule(tiny_model):
    model = tiny_model()
    with observe() as reports:
        ours = _ours(model, SamplerSettings(ScheduleSettings(), KeyframeSpec("uniform", 2)), steps=20, preset="balanced")
    assert torch.isfinite(ours).all() and not torch.allclose(ours, _ksampler(model, steps=20))
    (report,) = reports
    assert (report.full_passes, report.active_passes, report.schedule.warmup_steps, report.source) == (9, 11, 4, "9")


def test_input_model_is_not_changed_and_bad_input_is_refused(tiny_model):
    model = tiny_model()
    options_before = repr(model.model_options)
    _ours(model, SamplerSettings(ScheduleSettings(3, 2, 3)), steps=8)
    assert repr(model.model_options) == options_before
    with pytest.raises(RhymeFlowInputError, match="leaves nothing to accelerate"):
        _ours(model, SamplerSettings(ScheduleSettings(10, 2, 3)), steps=8)


def test_denoise_cuts_sigmas_like_ksampler(tiny_model):
    from comfy_extras.nodes_custom_sampler import BasicScheduler
    model = tiny_model()
    for steps, denoise in [(12, 1.0), (12, 0.5), (10, 0.33)]:
        expected = BasicScheduler.execute(model, "simple", steps, denoise).result[0]
        assert torch.equal(scheduler_sigmas(model, "euler", "simple", steps, denoise), expected)
        # KSampler drops the penultimate sigma of a one-step-longer schedule for UniPC.
        unipc = scheduler_sigmas(model, "uni_pc", "simple", steps, denoise)
        assert len(unipc) == steps + 1 and unipc[-1] == 0 and not torch.equal(unipc, expected)
    assert len(scheduler_sigmas(model, "euler", "simple", 12, 0.0)) == 0
    latent = _latent()
    assert _ours(model, SamplerSettings(), denoise=0.0, latent=latent) is latent["samples"]


def test_node_schema_mirrors_ksampler():
    headless.load_nodes()
    ours = comfy_nodes.NODE_CLASS_MAPPINGS["RhymeFlowKSampler"].INPUT_TYPES()
    theirs = comfy_nodes.NODE_CLASS_MAPPINGS["KSampler"].INPUT_TYPES()["required"]
    assert list(theirs) == list(ours["required"])[:len(theirs)]  # KSampler's inputs first, in its order
    assert ours["required"]["scheduler"][0] in (theirs["scheduler"][0], "COMBO")
    assert {"preset", "keyframes"} <= set(ours["optional"]) and ours["optional"]["preset"][1]["default"] == "balanced"
