"""HunyuanVideo 1.0 / 1.5 (ComfyUI's HunyuanVideo class): active passes and sampling, on tiny real models."""
import types

import comfy.samplers
import pytest
import torch

from helpers import key_err, last_report, patched, rel_err, rhymeflow, sample, sigmas_for, tiny_model
from rhymeflow_core.adapters import adapter_for
from rhymeflow_core.adapters.hunyuan import HunyuanVideoAdapter
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun
from rhymeflow_core.schedule import ScheduleSettings, build_schedule
from tools.tiny_models import HUNYUAN_POOLED_DIM, HUNYUAN_TEXT_DIM

FRAMES, SIZE, TEXT = 6, 8, 7


def model(version):
    return tiny_model("hunyuan", version)


def per_frame(version):
    return (SIZE // 2) ** 2 if version == "1.0" else SIZE ** 2


def latent_channels(version):
    return 16 if version == "1.0" else 32


# ---- the active pass against the stock forward ------------------------------------------------

def direct_inputs(version, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    dm = model(version).model.diffusion_model
    x = torch.randn(batch, dm.in_channels, FRAMES, SIZE, SIZE, generator=g)
    ctx = torch.randn(batch, TEXT, HUNYUAN_TEXT_DIM, generator=g)
    y = torch.randn(batch, HUNYUAN_POOLED_DIM, generator=g) if version == "1.0" else None
    mask = torch.ones(1, TEXT)
    mask[:, 5:] = 0  # padded text tokens, masked out by the model's attention mask
    return dict(x=x, timestep=torch.full((batch,), 0.7), context=ctx, y=y, guidance=torch.full((batch,), 6.0),
                attention_mask=mask)


def stock(version, inp):
    with torch.no_grad():
        return model(version).model.diffusion_model(**inp)


def run_pass(run, version, kind, keyframes, inp):
    run.set_plan(kind, keyframes)
    to = {"uuids": ["cond", "uncond"]}
    args = (inp["x"], inp["timestep"], inp["context"], inp["y"], None, None, inp["guidance"], inp["attention_mask"],
            None, None, False, None, to)
    with torch.no_grad():
        return HunyuanVideoAdapter().forward(model(version).model.diffusion_model, run, to, args, {})


@pytest.mark.parametrize("version", ["1.0", "1.5"])
def test_active_pass_reads_the_cache_and_the_text(version):
    inp = direct_inputs(version)
    ref = stock(version, inp)
    run = RhymeFlowRun(ProjectionConfig("keyframe_only"), HunyuanVideoAdapter())
    run_pass(run, version, RECORD, (0, 5), inp)
    assert key_err(run_pass(run, version, ACTIVE, (0, 5), inp), ref, (0, 5)) > 1e-3, "non-keyframe context matters"
    # Stale cache: recorded from other non-keyframe latents, so the keyframe output must move.
    other = dict(inp, x=inp["x"].clone())
    other["x"][:, :, 1:5] = torch.randn_like(other["x"][:, :, 1:5])
    run = RhymeFlowRun(ProjectionConfig("kv_cache"), HunyuanVideoAdapter())
    run_pass(run, version, RECORD, (0, 5), other)
    assert key_err(run_pass(run, version, ACTIVE, (0, 5), inp), ref, (0, 5)) > 1e-4
    # Text tokens are queries of every pass: new text / guidance after the recording is honoured exactly.
    run = RhymeFlowRun(ProjectionConfig("kv_cache"), HunyuanVideoAdapter())
    run_pass(run, version, RECORD, tuple(range(FRAMES)), inp)
    changed = dict(inp, context=inp["context"] * 1.5, guidance=torch.full((2,), 3.0))
    assert key_err(run_pass(run, version, ACTIVE, tuple(range(FRAMES)), changed), stock(version, changed), range(FRAMES)) <= 1e-5


class RowProbe:
    """Rows entering the first double block's image/text projections and the first single block."""

    def __init__(self, version):
        self.dm = model(version).model.diffusion_model
        self.rows = {"img": 0, "txt": 0, "single": 0}

    def __enter__(self):
        def count(name):
            def hook(_m, inp, _out):
                self.rows[name] += inp[0].shape[0] * inp[0].shape[1]
            return hook
        d, s = self.dm.double_blocks[0], self.dm.single_blocks[0]
        self.handles = [d.img_attn.qkv.register_forward_hook(count("img")),
                        d.txt_attn.qkv.register_forward_hook(count("txt")),
                        s.linear1.register_forward_hook(count("single"))]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("version", ["1.0", "1.5"])
def test_active_pass_processes_keyframe_rows_and_text_only(version):
    inp = direct_inputs(version)
    p = per_frame(version)
    for keyframes in [(0, 5), (0, 2, 5)]:
        run = RhymeFlowRun(ProjectionConfig("kv_cache"), HunyuanVideoAdapter())
        with RowProbe(version) as full:
            run_pass(run, version, RECORD, keyframes, inp)
        with RowProbe(version) as active:
            run_pass(run, version, ACTIVE, keyframes, inp)
        assert full.rows == {"img": 2 * FRAMES * p, "txt": 2 * TEXT, "single": 2 * (FRAMES * p + TEXT)}
        key = 2 * len(keyframes) * p
        assert active.rows == {"img": key, "txt": 2 * TEXT, "single": key + 2 * TEXT}


# ---- sampling through ComfyUI's CFGGuider / KSAMPLER ------------------------------------------

def hunyuan_conds(version, seed=3, mask=False, image=None, vision=False):
    g = torch.Generator().manual_seed(seed)

    def one():
        # 1.5's text encoder has no pooled output; ComfyUI still reads the key.
        extra = {"pooled_output": torch.randn(1, HUNYUAN_POOLED_DIM, generator=g) if version == "1.0" else None}
        if mask:
            m = torch.ones(1, TEXT, dtype=torch.long)
            m[:, 4:] = 0
            extra["attention_mask"] = m
        if image is not None:
            extra["concat_latent_image"] = image
            extra["concat_mask"] = torch.cat([torch.zeros(1, 1, 1, SIZE, SIZE), torch.ones(1, 1, FRAMES - 1, SIZE, SIZE)], 2)
        if vision:
            extra["clip_vision_output"] = types.SimpleNamespace(last_hidden_state=torch.randn(1, 5, 1152, generator=g))
        return [[torch.randn(1, TEXT, HUNYUAN_TEXT_DIM, generator=g), extra]]
    return one(), one()


def hunyuan_latent(version, seed=1):
    g = torch.Generator().manual_seed(seed)
    latent = torch.zeros(1, latent_channels(version), FRAMES, SIZE, SIZE)
    return latent, torch.randn(latent.shape, generator=g)


@pytest.mark.slow
@pytest.mark.parametrize("version", ["1.0", "1.5"])
@pytest.mark.parametrize("solver,cfg,context", [("euler", 5.0, "kv_cache"), ("uni_pc", 5.0, "hidden_cache"),
                                                ("euler", 1.0, "kv_cache")])
def test_every_frame_a_keyframe_reproduces_comfyui_sampler(version, solver, cfg, context):
    """cfg 1.0 is HunyuanVideo's usual setting: embedded guidance only, one branch per step."""
    m = model(version)
    sigmas = sigmas_for(m, 10)
    latent, noise = hunyuan_latent(version)
    cond, uncond = hunyuan_conds(version)
    dense = sample(m, comfy.samplers.sampler_object(solver), sigmas, latent, noise, cfg=cfg, cond=cond, uncond=uncond)
    p = patched(m, context)
    ours = sample(p, rhymeflow(solver, warmup=3, count=FRAMES), sigmas, latent, noise, cfg=cfg, cond=cond, uncond=uncond)
    assert rel_err(ours, dense) <= (1e-6 if solver == "euler" else 1e-5)
    report = last_report(p)
    assert report.model_calls["active"] == report.active_passes > 0, "the all-keyframe run did take active passes"


@pytest.mark.slow
@pytest.mark.parametrize("version", ["1.0", "1.5"])
def test_pass_counts_follow_the_schedule_and_sparse_keyframes_skip_work(version):
    m = model(version)
    steps = 20
    sigmas = sigmas_for(m, steps)
    latent, noise = hunyuan_latent(version)
    cond, uncond = hunyuan_conds(version)
    dense = sample(m, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, cond=cond, uncond=uncond)
    p = patched(m)
    with RowProbe(version) as probe:
        ours = sample(p, rhymeflow("euler", 6, 3, 5, count=2), sigmas, latent, noise, cond=cond, uncond=uncond)
    schedule = build_schedule(steps, ScheduleSettings(6, 3, 5))
    report = last_report(p)
    assert (report.full_passes, report.active_passes) == (schedule.full_passes, schedule.active_passes) == (10, 10)
    assert report.model_calls["active"] == 10   # cond + uncond batched into one call per step
    full_rows, key_rows = 2 * FRAMES * per_frame(version), 2 * 2 * per_frame(version)
    assert probe.rows["img"] == 10 * full_rows + 10 * key_rows, "active passes project keyframe image rows only"
    err = rel_err(ours, dense)
    assert 1e-4 < err < 0.5, f"RhymeFlow must differ from dense (it skips work) but stay close, rel err {err}"


@pytest.mark.slow
def test_text_mask_and_embedded_guidance_are_honoured():
    # One branch (cfg 1, the distilled-guidance setting): the host cannot batch two masked conds.
    m = model("1.0")
    sigmas = sigmas_for(m, 8)
    latent, noise = hunyuan_latent("1.0")
    cond, uncond = hunyuan_conds("1.0", mask=True)

    def both(cond):
        dense = sample(m, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, cfg=1.0, cond=cond, uncond=uncond)
        ours = sample(patched(m), rhymeflow("euler", count=FRAMES), sigmas, latent, noise, cfg=1.0, cond=cond, uncond=uncond)
        assert rel_err(ours, dense) <= 1e-6
        return ours

    masked = both(cond)
    cond[0][1].pop("attention_mask")
    assert rel_err(both(cond), masked) > 1e-4, "the text mask reaches the RhymeFlow passes"
    cond[0][1]["guidance"] = 2.0
    assert rel_err(both(cond), masked) > 1e-4, "the embedded guidance reaches the RhymeFlow passes"


@pytest.mark.slow
def test_v15_image_latents_mask_and_vision_tokens_are_honoured():
    m = model("1.5")
    sigmas = sigmas_for(m, 8)
    latent, noise = hunyuan_latent("1.5")
    image = torch.randn(1, 32, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(9))
    cond, uncond = hunyuan_conds("1.5", image=image, vision=True)
    dense = sample(m, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, cond=cond, uncond=uncond)
    ours = sample(patched(m), rhymeflow("euler", count=FRAMES), sigmas, latent, noise, cond=cond, uncond=uncond)
    assert rel_err(ours, dense) <= 1e-6
    plain, _ = hunyuan_conds("1.5")
    t2v = sample(patched(m), rhymeflow("euler", count=FRAMES), sigmas, latent, noise, cond=plain, uncond=uncond)
    assert rel_err(t2v, ours) > 1e-3, "image latents and vision tokens change the RhymeFlow result"
    sparse = sample(patched(m), rhymeflow("euler", count=2), sigmas, latent, noise, cond=cond, uncond=uncond)
    assert torch.isfinite(sparse).all()


@pytest.mark.slow
def test_v10_token_replace_image_to_video():
    """HunyuanImageToVideo 'v2 (replace)': the image is the latent's first frame, kept by the noise mask, and
    the model modulates frame 0's tokens with the clean timestep (guiding_frame_index 0). One branch (cfg 1,
    embedded guidance): the host's own token-replace modulation does not broadcast over a cond+uncond batch."""
    m = model("1.0")
    sigmas = sigmas_for(m, 12)
    latent, noise = hunyuan_latent("1.0")
    latent[:, :, 0] = torch.randn(1, 16, SIZE, SIZE, generator=torch.Generator().manual_seed(8))
    mask = torch.ones(1, 1, FRAMES, SIZE, SIZE)
    mask[:, :, 0] = 0.0
    cond, uncond = hunyuan_conds("1.0")
    for c in (cond, uncond):
        c[0][1]["guiding_frame_index"] = 0
    dense = sample(m, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask, cfg=1.0)
    for context in ("kv_cache", "hidden_cache"):
        ours = sample(patched(m, context), rhymeflow("euler", count=FRAMES), sigmas, latent, noise, cond=cond, uncond=uncond,
                      mask=mask, cfg=1.0)
        assert rel_err(ours, dense) <= 1e-6, context
    plain = [[c[0][0], {k: v for k, v in c[0][1].items() if k != "guiding_frame_index"}] for c in (cond, uncond)]
    no_replace = sample(patched(m), rhymeflow("euler", count=FRAMES), sigmas, latent, noise, cond=[plain[0]], uncond=[plain[1]],
                        mask=mask, cfg=1.0)
    assert rel_err(no_replace, dense) > 1e-4, "the token-replace modulation reaches the RhymeFlow passes"
    p = patched(m)
    sparse = sample(p, rhymeflow("euler", 4, 2, 3, count=2), sigmas, latent, noise, cond=cond, uncond=uncond, mask=mask, cfg=1.0)
    report = last_report(p)
    assert report.conditioned_frames == [0] and report.model_calls["active"] > 0
    assert 1e-4 < rel_err(sparse, dense) < 0.5
    assert float((sparse[:, :, 0] - latent[:, :, 0]).abs().max()) <= 1e-5, "the image frame stays the given latent"


@pytest.mark.slow
def test_v15_byt5_glyph_tokens_are_honoured():
    """ByT5 tokens join the text stream before the first block, so they are queries in every pass too."""
    m = tiny_model("hunyuan", "1.5", byt5=True)
    assert m.model.diffusion_model.byt5_in is not None, "ComfyUI detected the ByT5 mapper"
    sigmas = sigmas_for(m, 8)
    latent, noise = hunyuan_latent("1.5")
    cond, uncond = hunyuan_conds("1.5")
    plain = sample(patched(m), rhymeflow("euler", count=FRAMES), sigmas, latent, noise, cond=cond, uncond=uncond)
    for c in (cond, uncond):
        c[0][1]["conditioning_byt5small"] = torch.randn(1, 5, 1472, generator=torch.Generator().manual_seed(4))
    dense = sample(m, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, cond=cond, uncond=uncond)
    ours = sample(patched(m), rhymeflow("euler", count=FRAMES), sigmas, latent, noise, cond=cond, uncond=uncond)
    assert rel_err(ours, dense) <= 1e-6
    assert rel_err(ours, plain) > 1e-3, "the ByT5 tokens change the RhymeFlow result"


# ---- refusals -----------------------------------------------------------------------------------

def test_image_variants_and_unsupported_inputs_are_refused():
    dm = model("1.0").model.diffusion_model
    fake = types.SimpleNamespace(model=type("HunyuanImage21", (), {"diffusion_model": dm})())
    with pytest.raises(RhymeFlowInputError, match="HunyuanImage21.*Supported"):
        adapter_for(fake)
    inp = direct_inputs("1.0")
    run = RhymeFlowRun(ProjectionConfig(), HunyuanVideoAdapter())
    run.set_plan(RECORD, (0, 5))
    to = {}
    args = (inp["x"], inp["timestep"], inp["context"], inp["y"], None, None, inp["guidance"], None,
            None, inp["x"][:, :, :1], False, None, to)
    with pytest.raises(RhymeFlowInputError, match="reference latents"):
        HunyuanVideoAdapter().forward(dm, run, to, args, {})
