"""Bad input is refused with a message naming the problem and the fix, before sampling starts."""
import comfy.model_patcher
import comfy.samplers
import pytest
import torch

from helpers import PassProbe, conds, latent_and_noise, patched, rhymeflow, sample, sigmas_for
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.keyframes import KeyframeSpec
from rhymeflow_core.patch import apply_trajectory_projection
from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
from rhymeflow_core.sampling_loop import SamplerSettings
from rhymeflow_core.schedule import ScheduleSettings


def refuses(match, model, sampler, sigmas, latent, noise):
    """The error is raised and the diffusion model never ran."""
    with PassProbe(model) as probe:   # the patched MODEL shares the tiny model's diffusion model
        with pytest.raises(RhymeFlowInputError, match=match):
            sample(model, sampler, sigmas, latent, noise)
    assert probe.calls == [], "refused before any model call"


def test_image_latent(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 10)
    latent = torch.zeros(1, 16, 8, 8)
    refuses("not a video latent", patched(model), rhymeflow(), sigmas, latent, torch.randn_like(latent))
    latent = torch.zeros(1, 16, 1, 8, 8)
    refuses("has 1 frame; RhymeFlow needs a video latent", patched(model), rhymeflow(), sigmas, latent, torch.randn_like(latent))


def test_fewer_frames_than_keyframes(tiny_model):
    model = tiny_model()
    latent, noise = latent_and_noise(3, 8)
    refuses("4 keyframes asked for, but the latent has only 3", patched(model), rhymeflow(count=4), sigmas_for(model, 10), latent, noise)


def test_warmup_not_below_steps(tiny_model):
    model = tiny_model()
    latent, noise = latent_and_noise(5, 8)
    refuses("warm-up of 10 steps leaves nothing to accelerate in 10 steps; set warmup_steps below 10",
            patched(model), rhymeflow(warmup=10), sigmas_for(model, 10), latent, noise)


def test_manual_keyframe_out_of_range(tiny_model):
    model = tiny_model()
    latent, noise = latent_and_noise(5, 8)
    sampler = RhymeFlowSamplerObject(SamplerSettings(ScheduleSettings(3, 2, 3), KeyframeSpec("manual", manual=(0, 7)), "euler"))
    refuses("manual keyframe 7 is out of range .* 5 latent frames", patched(model), sampler, sigmas_for(model, 10), latent, noise)


def test_sampler_with_unpatched_model(tiny_model):
    model = tiny_model()
    latent, noise = latent_and_noise(5, 8)
    with pytest.raises(RhymeFlowInputError, match="needs a MODEL patched by the RhymeFlowTrajectoryProjection node"):
        sample(model, rhymeflow(), sigmas_for(model, 10), latent, noise)


def test_unsupported_models_are_refused_at_patch_time(tiny_model):
    not_a_dit = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(RhymeFlowInputError, match="model class Linear is not supported. Supported: Wan 2.1 T2V"):
        apply_trajectory_projection(not_a_dit)
    control = tiny_model(in_dim=48)
    with pytest.raises(RhymeFlowInputError, match="48 input channels for 16 latent channels .* Supported: Wan 2.1 T2V / I2V"):
        apply_trajectory_projection(control)


def test_wan_subclasses_are_refused_by_class_name(tiny_model):
    """VACE (and Camera, S2V, HuMo, Animate: other WanModel subclasses) run their own forward_orig."""
    model = tiny_model("wan", "vace")
    with pytest.raises(RhymeFlowInputError, match="model class WAN21_Vace \\(diffusion model VaceWanModel\\) is not supported"):
        apply_trajectory_projection(model)


def test_bad_node_options(tiny_model):
    model = tiny_model()
    with pytest.raises(RhymeFlowInputError, match="unknown context mode 'fast'"):
        apply_trajectory_projection(model, "fast")
    with pytest.raises(RhymeFlowInputError, match="unknown keyframe solver 'heun'"):
        SamplerSettings(solver="heun")
    with pytest.raises(RhymeFlowInputError, match="strategy 'manual' needs a frame list"):
        KeyframeSpec("manual")


def test_cfg_one_is_accepted_not_refused(tiny_model):
    model = tiny_model()
    latent, noise = latent_and_noise(5, 8)
    cond, uncond = conds()
    out = sample(patched(model), rhymeflow(count=2), sigmas_for(model, 10), latent, noise, cfg=1.0, cond=cond, uncond=uncond)
    assert torch.isfinite(out).all()
