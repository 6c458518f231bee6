"""Wan image-to-video families on tiny real ComfyUI models: Wan 2.1 I2V / FLF2V (WAN21, image_to_video,
CLIP-vision tokens), Wan 2.2 A14B I2V (in_dim 36, no CLIP tokens) and Wan 2.2 TI2V-5B (WAN22, 48
channels, per-frame timesteps from the denoise mask)."""
import types

import comfy.samplers
import pytest
import torch

from helpers import PassProbe, key_err, last_report, patched, rel_err, rhymeflow, sample, sigmas_for, tiny_model
from rhymeflow_core.adapters import adapter_for
from rhymeflow_core.adapters.wan import WanAdapter
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun
from rhymeflow_core.schedule import ScheduleSettings, build_schedule
from tools import tiny_models
from tools.tiny_models import WAN_CLIP_DIM

FRAMES, SIZE, TEXT = 6, 8, 8
PER_FRAME = (SIZE // 2) ** 2
I2V = ["i2v", "flf2v", "a14b_i2v"]
ALL = I2V + ["ti2v_5b"]
CLIP_TOKENS = {"i2v": 257, "flf2v": 514}


def model(variant):
    return tiny_model("wan", variant)


def channels(variant):
    return 48 if variant == "ti2v_5b" else 16


# ---- the active pass against the stock forward ------------------------------------------------

def direct_inputs(variant, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    dm = model(variant).model.diffusion_model
    x = torch.randn(batch, dm.in_dim, FRAMES, SIZE, SIZE, generator=g)
    t = torch.full((batch,), 700.0)
    if variant == "ti2v_5b":   # WAN22.process_timestep: frame 0 clean (t = 0), the rest at t
        t = torch.full((batch, FRAMES), 700.0)
        t[:, 0] = 0.0
    ctx = torch.randn(batch, TEXT, 4096, generator=g) * 0.5
    clip = torch.randn(batch, CLIP_TOKENS[variant], WAN_CLIP_DIM, generator=g) if variant in CLIP_TOKENS else None
    return x, t, ctx, clip


def run_pass(run, variant, kind, keyframes, inp):
    x, t, ctx, clip = inp
    run.set_plan(kind, keyframes)
    with torch.no_grad():
        return WanAdapter().forward(model(variant).model.diffusion_model, run, {"uuids": ["cond", "uncond"]},
                                    (x, t, ctx, clip), {})


def stock(variant, inp):
    x, t, ctx, clip = inp
    with torch.no_grad():
        return model(variant).model.diffusion_model(x, t, ctx, clip_fea=clip)


@pytest.mark.parametrize("variant", ALL)
def test_active_pass_reads_cache_image_channels_clip_tokens_and_frame_timesteps(variant):
    inp = direct_inputs(variant)
    x, t, ctx, clip = inp
    ref = stock(variant, inp)
    run = RhymeFlowRun(ProjectionConfig("keyframe_only"), WanAdapter())
    run_pass(run, variant, RECORD, (0, 5), inp)
    assert key_err(run_pass(run, variant, ACTIVE, (0, 5), inp), ref, (0, 5)) > 1e-3, "non-keyframe context matters"
    changes = {"image": (x.clone(), t, ctx, clip)}
    if variant == "ti2v_5b":   # no concat channels: the image is the clean first frame of the latent
        changes["image"][0][:, :, 0] += 1.0
    else:
        changes["image"][0][:, channels(variant):] += 1.0
    if clip is not None:
        changes["clip"] = (x, t, ctx, clip + torch.randn(clip.shape, generator=torch.Generator().manual_seed(5)))
    if t.ndim == 2:
        changes["frame timestep"] = (x, t.clone().index_fill_(1, torch.tensor([2]), 300.0), ctx, clip)
    for name, changed in changes.items():
        run = RhymeFlowRun(ProjectionConfig("kv_cache"), WanAdapter())
        run_pass(run, variant, RECORD, tuple(range(FRAMES)), changed)
        out = run_pass(run, variant, ACTIVE, tuple(range(FRAMES)), changed)
        new_ref = stock(variant, changed)
        assert key_err(new_ref, ref, range(FRAMES)) > 1e-4, f"{name} changes the stock output"
        assert key_err(out, new_ref, range(FRAMES)) <= 1e-5, f"{name} reaches the active pass exactly"


def test_per_frame_timesteps_select_each_keyframe_own_modulation():
    """TI2V-5B: an active pass on keyframes (0, 3, 5) must use frame 3's timestep for frame 3's rows."""
    inp = direct_inputs("ti2v_5b")
    x, t, ctx, clip = inp
    t = t.clone()
    t[:, 3] = 250.0
    inp = (x, t, ctx, clip)
    for context in ("kv_cache", "hidden_cache"):
        run = RhymeFlowRun(ProjectionConfig(context), WanAdapter())
        run_pass(run, "ti2v_5b", RECORD, (0, 3, 5), inp)
        assert key_err(run_pass(run, "ti2v_5b", ACTIVE, (0, 3, 5), inp), stock("ti2v_5b", inp), (0, 3, 5)) <= 1e-5


# ---- sampling through ComfyUI's CFGGuider / KSAMPLER ------------------------------------------

def i2v_conds(variant, given=(0,), seed=3, image_scale=1.0):
    """Conditioning as WanImageToVideo / WanFirstLastFrameToVideo build it: the image latent and a
    mask (0 = given frame) for c_concat, and CLIP-vision hidden states where the model has img_emb."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(1, 16, FRAMES, SIZE, SIZE, generator=g) * image_scale
    mask = torch.ones(1, 1, FRAMES, SIZE, SIZE)
    mask[:, :, list(given)] = 0.0
    clip = None
    if variant in CLIP_TOKENS:
        clip = types.SimpleNamespace(penultimate_hidden_states=torch.randn(1, CLIP_TOKENS[variant], WAN_CLIP_DIM, generator=g))

    def one():
        extra = {"concat_latent_image": image, "concat_mask": mask}
        if clip is not None:
            extra["clip_vision_output"] = clip
        return [[torch.randn(1, TEXT, 4096, generator=g) * 0.5, extra]]
    return one(), one()


def ti2v_inputs(given=(0,), seed=1):
    """Wan22ImageToVideoLatent: the image latent in the given frames, noise_mask 0 there."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.zeros(1, 48, FRAMES, SIZE, SIZE)
    latent[:, :, list(given)] = torch.randn(1, 48, len(given), SIZE, SIZE, generator=g)
    mask = torch.ones(1, 1, FRAMES, SIZE, SIZE)
    mask[:, :, list(given)] = 0.0
    cond = [[torch.randn(1, TEXT, 4096, generator=g) * 0.5, {}]]
    uncond = [[torch.randn(1, TEXT, 4096, generator=g) * 0.5, {}]]
    return latent, torch.randn(latent.shape, generator=g), mask, cond, uncond


def family_inputs(variant, given=(0,)):
    if variant == "ti2v_5b":
        return ti2v_inputs(given)
    g = torch.Generator().manual_seed(1)
    latent = torch.zeros(1, 16, FRAMES, SIZE, SIZE)
    cond, uncond = i2v_conds(variant, given)
    return latent, torch.randn(latent.shape, generator=g), None, cond, uncond


@pytest.mark.slow
@pytest.mark.parametrize("variant", ALL)
@pytest.mark.parametrize("solver,context", [("euler", "kv_cache"), ("uni_pc", "hidden_cache")])
def test_every_frame_a_keyframe_reproduces_comfyui_sampler(variant, solver, context):
    m = model(variant)
    sigmas = sigmas_for(m, 10)
    latent, noise, mask, cond, uncond = family_inputs(variant, (0, FRAMES - 1) if variant == "flf2v" else (0,))
    dense = sample(m, comfy.samplers.sampler_object(solver), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask)
    p = patched(m, context)
    ours = sample(p, rhymeflow(solver, warmup=3, count=FRAMES), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask)
    assert rel_err(ours, dense) <= (1e-6 if solver == "euler" else 1e-5)
    report = last_report(p)
    assert report.model_calls["active"] == report.active_passes > 0, "the all-keyframe run did take active passes"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ALL)
def test_pass_counts_saving_and_conditioned_frames_as_keyframes(variant):
    """Frames 0 and 2 given (e.g. a start clip, or a middle frame): both must be keyframes even though
    uniform selection with count 2 picks only the first and last frame."""
    m = model(variant)
    steps = 20
    sigmas = sigmas_for(m, steps)
    latent, noise, mask, cond, uncond = family_inputs(variant, (0, 2))
    dense = sample(m, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask)
    p = patched(m)
    with PassProbe(p) as probe:
        ours = sample(p, rhymeflow("euler", 6, 3, 5, count=2), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask)
    report = last_report(p)
    schedule = build_schedule(steps, ScheduleSettings(6, 3, 5))
    assert (report.full_passes, report.active_passes) == (schedule.full_passes, schedule.active_passes) == (10, 10)
    assert report.conditioned_frames == [0, 2]
    assert report.keyframes == [0, 2, FRAMES - 1]
    assert probe.kinds(FRAMES * PER_FRAME).count("active") == 10
    active_rows = sum(c["q"] for c, kind in zip(probe.calls, probe.kinds(FRAMES * PER_FRAME), strict=True) if kind == "active")
    assert active_rows == 10 * 2 * 3 * PER_FRAME, "active passes project the three keyframes' rows only"
    err = rel_err(ours, dense)
    assert 1e-4 < err < 0.5, f"RhymeFlow must differ from dense (it skips work) but stay close, rel err {err}"
    if mask is not None:
        torch.testing.assert_close(ours[:, :, [0, 2]], latent[:, :, [0, 2]], rtol=1e-5, atol=1e-5,
                                   msg="given frames stay the image latent")


@pytest.mark.slow
@pytest.mark.parametrize("variant", I2V)
def test_image_latent_and_clip_tokens_are_honoured(variant):
    m = model(variant)
    sigmas = sigmas_for(m, 8)
    latent, noise, _, cond, uncond = family_inputs(variant)
    base = sample(patched(m), rhymeflow("euler", count=2), sigmas, latent, noise, cond=cond, uncond=uncond)
    other, _ = i2v_conds(variant, image_scale=2.0)
    for c in (cond, uncond):
        c[0][1] = dict(c[0][1], concat_latent_image=other[0][1]["concat_latent_image"])
    moved = sample(patched(m), rhymeflow("euler", count=2), sigmas, latent, noise, cond=cond, uncond=uncond)
    assert rel_err(moved, base) > 1e-3, "the image latent (c_concat) reaches the RhymeFlow passes"
    if variant in CLIP_TOKENS:
        for c in (cond, uncond):
            c[0][1] = dict(c[0][1], clip_vision_output=types.SimpleNamespace(
                penultimate_hidden_states=c[0][1]["clip_vision_output"].penultimate_hidden_states * -1))
        flipped = sample(patched(m), rhymeflow("euler", count=2), sigmas, latent, noise, cond=cond, uncond=uncond)
        assert rel_err(flipped, moved) > 1e-3, "the CLIP-vision tokens reach the RhymeFlow passes"


# ---- refusals -----------------------------------------------------------------------------------

def test_unsupported_wan_inputs_are_refused_with_the_reason():
    inp = direct_inputs("a14b_i2v")
    x, t, ctx, _ = inp
    dm = model("a14b_i2v").model.diffusion_model
    run = RhymeFlowRun(ProjectionConfig(), WanAdapter())
    run.set_plan(RECORD, (0, 5))
    with pytest.raises(RhymeFlowInputError, match="time_dim_concat"):
        WanAdapter().forward(dm, run, {}, (x, t, ctx, None, x[:, :16, :1]), {})
    with pytest.raises(RhymeFlowInputError, match="per-token timesteps"):
        WanAdapter().forward(dm, run, {}, (x, torch.full((2, 7), 500.0), ctx), {})
    control = tiny_models.load("wan", "t2v")   # not the shared model: this test changes its weights
    control.model.diffusion_model.patch_embedding.weight.data = torch.zeros(128, 48, 1, 2, 2)  # a 48-channel control variant
    with pytest.raises(RhymeFlowInputError, match="48 input channels"):
        adapter_for(control)
