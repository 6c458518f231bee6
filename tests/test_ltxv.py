"""LTX-Video (ComfyUI's LTXVModel): active passes and sampling, on a tiny real model."""
import comfy.samplers
import pytest
import torch

from helpers import key_err, last_report, patched, rel_err, rhymeflow, sample, sigmas_for, tiny_model
from rhymeflow_core.adapters.ltxv import LTXVAdapter
from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun
from rhymeflow_core.schedule import ScheduleSettings, build_schedule
from tools.tiny_models import LTXV_CAPTION_DIM, LTXV_CHANNELS

FRAMES, SIZE, TEXT = 6, 4, 7
P = SIZE * SIZE


def model():
    return tiny_model("ltxv")


def guide_idxs(batch=1):
    """Positions of one guide frame's tokens at pixel frame 9, built by the host's own LTXVAddGuide
    (its layout differs between ComfyUI versions: newer ones carry start and end coordinates)."""
    from comfy_extras.nodes_lt import LTXVAddGuide
    cond = LTXVAddGuide.add_keyframe_index([[torch.zeros(1, 1, 1), {}]], 9, torch.zeros(1, LTXV_CHANNELS, 1, SIZE, SIZE),
                                           model().model.diffusion_model.vae_scale_factors)
    idxs = cond[0][1]["keyframe_idxs"]
    return idxs.expand(batch, *idxs.shape[1:]).clone()


def direct_inputs(per_token=False, guides=False, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, LTXV_CHANNELS, FRAMES, SIZE, SIZE, generator=g)
    t = torch.rand(batch, FRAMES * P, 1, generator=g) if per_token else torch.full((batch,), 0.7)
    ctx = torch.randn(batch, TEXT, LTXV_CAPTION_DIM, generator=g)
    return x, t, ctx, (guide_idxs(batch) if guides else None)


def _mask_kwargs(inp):
    # Newer hosts read the denoise mask (model_base LTXV passes it) to drop guide tokens; all kept here.
    x, _, _, idxs = inp
    return {} if idxs is None else {"denoise_mask": torch.ones(x.shape[0], 1, *x.shape[2:])}


def stock(inp):
    x, t, ctx, idxs = inp
    with torch.no_grad():
        return model().model.diffusion_model(x, t, ctx, None, frame_rate=25, keyframe_idxs=idxs, **_mask_kwargs(inp))


def run_pass(run, kind, keyframes, inp):
    x, t, ctx, idxs = inp
    run.set_plan(kind, keyframes)
    to = {"uuids": ["cond", "uncond"]}
    with torch.no_grad():
        return LTXVAdapter().forward(model().model.diffusion_model, run, to, (x, t, ctx, None, 25, to, idxs), _mask_kwargs(inp))


@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache"])
@pytest.mark.parametrize("per_token,guides", [(True, True)])   # plain and per-token passes: tests/test_adapters.py
@pytest.mark.parametrize("keyframes", [(0, 5), (0, 2, 5), tuple(range(FRAMES))])
def test_active_pass_on_fresh_cache_equals_stock_forward(context, per_token, guides, keyframes):
    inp = direct_inputs(per_token, guides)
    ref = stock(inp)
    run = RhymeFlowRun(ProjectionConfig(context), LTXVAdapter())
    torch.testing.assert_close(run_pass(run, RECORD, keyframes, inp), ref, rtol=1e-5, atol=1e-6)
    active = run_pass(run, ACTIVE, keyframes, inp)
    assert key_err(active, ref, keyframes) <= 1e-5
    assert not active[:, :, [f for f in range(FRAMES) if f not in keyframes]].any()


def test_active_pass_reads_the_cache_and_per_token_timesteps():
    inp = direct_inputs(per_token=True)
    ref = stock(inp)
    run = RhymeFlowRun(ProjectionConfig("keyframe_only"), LTXVAdapter())
    run_pass(run, RECORD, (0, 5), inp)
    assert key_err(run_pass(run, ACTIVE, (0, 5), inp), ref, (0, 5)) > 1e-3
    x, t, ctx, idxs = inp
    stale = (x.clone(), t, ctx, idxs)
    stale[0][:, :, 1:5] = torch.randn_like(x[:, :, 1:5])
    run = RhymeFlowRun(ProjectionConfig("kv_cache"), LTXVAdapter())
    run_pass(run, RECORD, (0, 5), stale)
    assert key_err(run_pass(run, ACTIVE, (0, 5), inp), ref, (0, 5)) > 1e-4
    # Each keyframe row gets its own timestep: change frame 0's and only the exact stock output fits.
    t2 = t.clone()
    t2[:, :P] = 0.0
    moved = (x, t2, ctx, idxs)
    run = RhymeFlowRun(ProjectionConfig("kv_cache"), LTXVAdapter())
    run_pass(run, RECORD, (0, 5), moved)
    assert key_err(run_pass(run, ACTIVE, (0, 5), moved), stock(moved), (0, 5)) <= 1e-5
    assert key_err(stock(moved), ref, (0, 5)) > 1e-3


# ---- sampling through ComfyUI's CFGGuider / KSAMPLER ------------------------------------------

def ltxv_conds(seed=3, guides=False):
    g = torch.Generator().manual_seed(seed)

    def one(valid):
        mask = torch.zeros(1, TEXT, dtype=torch.long)
        mask[:, :valid] = 1   # the T5 encoder's padding mask, honoured by the cross-attention
        extra = {"frame_rate": 24, "attention_mask": mask}
        if guides:
            extra["keyframe_idxs"] = guide_idxs()
        return [[torch.randn(1, TEXT, LTXV_CAPTION_DIM, generator=g), extra]]
    return one(TEXT), one(4)


def ltxv_latent(seed=1):
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, LTXV_CHANNELS, FRAMES, SIZE, SIZE, generator=g) * 0.5
    return latent, torch.randn(latent.shape, generator=g)


def first_frame_mask(strength=1.0):
    """LTXVImgToVideo's noise mask: frame 0 (and a guide frame) kept, the rest denoised."""
    mask = torch.ones(1, 1, FRAMES, SIZE, SIZE)
    mask[:, :, 0] = 1.0 - strength
    return mask


@pytest.mark.slow
@pytest.mark.parametrize("solver,context,conditioning", [
    ("euler", "kv_cache", "t2v"), ("uni_pc", "hidden_cache", "t2v"), ("euler", "kv_cache", "i2v"),
    ("uni_pc", "kv_cache", "guide")])
def test_every_frame_a_keyframe_reproduces_comfyui_sampler(solver, context, conditioning):
    """i2v: noise mask on frame 0 -> per-token timesteps; guide: an appended guide frame with its own positions."""
    m = model()
    sigmas = sigmas_for(m, 10)
    latent, noise = ltxv_latent()
    cond, uncond = ltxv_conds(guides=conditioning == "guide")
    mask = None
    if conditioning != "t2v":
        mask = first_frame_mask()
        if conditioning == "guide":
            mask[:, :, -1] = 0.0
    dense = sample(m, comfy.samplers.sampler_object(solver), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask)
    p = patched(m, context)
    ours = sample(p, rhymeflow(solver, warmup=3, count=FRAMES), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask)
    # Float summation order only (the newer host's LTXV blocks reach 1.03e-6 with euler).
    assert rel_err(ours, dense) <= (2e-6 if solver == "euler" else 1e-5)
    assert last_report(p).model_calls["active"] > 0
    if mask is not None and solver == "euler":  # uni_pc's last update does not land exactly on the mask (dense neither)
        kept = float((ours[:, :, 0] - latent[:, :, 0]).abs().max())
        assert kept <= 1e-5, "the conditioning frame stays the given latent"


@pytest.mark.slow
def test_pass_counts_follow_the_schedule_and_sparse_keyframes_skip_work():
    m = model()
    steps = 20
    sigmas = sigmas_for(m, steps)
    latent, noise = ltxv_latent()
    cond, uncond = ltxv_conds()
    mask = first_frame_mask()
    dense = sample(m, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask)
    p = patched(m)
    block = m.model.diffusion_model.transformer_blocks[0]
    q_rows = []
    handle = block.attn1.to_q.register_forward_hook(lambda _m, i, _o: q_rows.append(i[0].shape[0] * i[0].shape[1]))
    try:
        ours = sample(p, rhymeflow("euler", 6, 3, 5, count=2), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask)
    finally:
        handle.remove()
    schedule = build_schedule(steps, ScheduleSettings(6, 3, 5))
    report = last_report(p)
    assert (report.full_passes, report.active_passes) == (schedule.full_passes, schedule.active_passes) == (10, 10)
    assert report.conditioned_frames == [0], "the noise mask's kept frame is reported (and is a keyframe)"
    expected = ["active" if r == "active" else "full" for r in schedule.roles()]
    assert ["full" if n == 2 * FRAMES * P else "active" for n in q_rows] == expected
    assert all(n == 2 * 2 * P for n, kind in zip(q_rows, expected, strict=True) if kind == "active")
    err = rel_err(ours, dense)
    assert 1e-4 < err < 0.5, f"RhymeFlow must differ from dense (it skips work) but stay close, rel err {err}"
