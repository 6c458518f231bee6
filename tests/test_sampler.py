"""RhymeFlow sampling through ComfyUI's real CFGGuider -> KSAMPLER -> WAN21 path."""
import comfy.model_management
import comfy.patcher_extension
import comfy.samplers
import pytest
import torch
from comfy_extras.nodes_custom_sampler import Guider_Basic

from helpers import (
    PassProbe,
    capture_runs,
    conds,
    interrupt_at,
    last_report,
    latent_and_noise,
    patched,
    rel_err,
    rhymeflow,
    sample,
    sigmas_for,
)
from rhymeflow_core.report import observe
from rhymeflow_core.run_state import KEY, ProjectionConfig
from rhymeflow_core.schedule import ScheduleSettings, build_schedule

FRAMES, SIZE = 5, 8
FULL_ROWS = FRAMES * (SIZE // 2) ** 2


@pytest.mark.parametrize("solver", ["euler", "uni_pc", "uni_pc_bh2", "dpmpp_2m"])
@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache"])
def test_every_frame_a_keyframe_reproduces_comfyui_sampler(solver, context, tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 14)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    dense = sample(model, comfy.samplers.sampler_object(solver), sigmas, latent, noise)
    with PassProbe(model) as probe:
        ours = sample(patched(model, context), rhymeflow(solver, warmup=3, count=FRAMES), sigmas, latent, noise)
    assert rel_err(ours, dense) <= 1e-5
    assert probe.kinds(FULL_ROWS).count("full") == 14  # all frames -> every pass covers every row


def test_sparse_keyframes_really_skip_and_stay_close(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 20)
    latent, noise = latent_and_noise(9, SIZE)
    dense = sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise)
    ours = sample(patched(model), rhymeflow("euler", warmup=6, count=3), sigmas, latent, noise)
    err = rel_err(ours, dense)
    assert 1e-4 < err < 0.5, f"RhymeFlow must differ from dense (it skips work) but stay close, rel err {err}"


@pytest.mark.parametrize("steps,warmup,n_min,n_max,full,active", [
    (50, 10, 3, 5, 21, 29), (50, 8, 2, 3, 25, 25), (50, 8, 3, 5, 20, 30), (30, 10, 3, 5, 16, 14), (20, 6, 3, 5, 10, 10)])
def test_pass_counts_seen_inside_the_model_follow_the_schedule(steps, warmup, n_min, n_max, full, active, tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, steps)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    p = patched(model)
    with PassProbe(model) as probe:
        sample(p, rhymeflow("uni_pc", warmup, n_min, n_max, count=2), sigmas, latent, noise)
    kinds = probe.kinds(FULL_ROWS)
    assert (kinds.count("full"), kinds.count("active")) == (full, active)
    assert all(c["batch"] == 2 for c in probe.calls), "cond and uncond batched into one call"
    expected = build_schedule(steps, ScheduleSettings(warmup, n_min, n_max)).roles()
    assert kinds == ["active" if r == "active" else "full" for r in expected]
    report = last_report(p)
    assert (report.full_passes, report.active_passes) == (full, active)
    assert report.model_calls["active"] == active


def test_cond_and_uncond_in_separate_calls_keep_separate_caches(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 12)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    # Text lengths 8 and 48 cannot be batched (ComfyUI pads only up to 4x), so each branch is its own call.
    cond, uncond = conds(8, 48)
    dense = sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, cond=cond, uncond=uncond)
    with PassProbe(model) as probe:
        all_key = sample(patched(model), rhymeflow("euler", count=FRAMES), sigmas, latent, noise, cond=cond, uncond=uncond)
    assert all(c["batch"] == 1 for c in probe.calls) and len(probe.calls) == 24
    assert rel_err(all_key, dense) <= 1e-5
    p = patched(model)
    sparse = sample(p, rhymeflow("euler", count=2), sigmas, latent, noise, cond=cond, uncond=uncond)
    assert last_report(p).model_calls["active"] == 2 * build_schedule(12, ScheduleSettings(3, 2, 3)).active_passes
    assert torch.isfinite(sparse).all()


def test_input_model_untouched_and_runs_repeatable_and_cache_freed(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 12)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    stock = comfy.samplers.sampler_object("uni_pc")
    before = sample(model, stock, sigmas, latent, noise)
    wrappers_before = {k: dict(v) for k, v in model.wrappers.items()}
    p = patched(model)
    runs = capture_runs(p)
    first = sample(p, rhymeflow("uni_pc", count=2), sigmas, latent, noise)
    second = sample(p, rhymeflow("uni_pc", count=2), sigmas, latent, noise)
    after = sample(model, stock, sigmas, latent, noise)
    assert torch.equal(first, second)
    assert torch.equal(before, after)
    assert KEY not in model.model_options.get("transformer_options", {})
    assert {k: dict(v) for k, v in model.wrappers.items()} == wrappers_before
    assert isinstance(p.model_options["transformer_options"][KEY], ProjectionConfig)
    distinct = {id(r) for r in runs}
    assert len(distinct) == 2, "each sampling run gets its own state"
    for run in runs:
        assert not run.cache.entries and run.plan is None, "no cache survives a run"
    assert last_report(p).cache_peak_bytes > 0
    # The patched model with a stock sampler samples exactly like the original.
    assert torch.equal(sample(p, stock, sigmas, latent, noise), before)


def test_batch_of_two_videos(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 10)
    latent, noise = latent_and_noise(FRAMES, SIZE, batch=2)
    dense = sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise)
    assert rel_err(sample(patched(model), rhymeflow("euler", count=FRAMES), sigmas, latent, noise), dense) <= 1e-5
    sparse = sample(patched(model), rhymeflow("euler", count=2), sigmas, latent, noise)
    single = sample(patched(model), rhymeflow("euler", count=2), sigmas, latent[:1], noise[:1])
    assert sparse.shape == latent.shape and torch.isfinite(sparse).all()
    assert rel_err(sparse[:1], single) < 0.5


def test_cfg_one_and_basic_guider_have_no_uncond_branch(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 10)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    cond, _ = conds()
    for make in ("cfg1", "basic"):
        for m in (model, patched(model)):
            if make == "basic":
                guider = Guider_Basic(m)  # what the BasicGuider node returns
                guider.set_conds(cond)
            else:
                guider = comfy.samplers.CFGGuider(m)
                guider.set_conds(cond, conds()[1])
                guider.set_cfg(1.0)
            sampler = rhymeflow("euler", count=FRAMES) if m is not model else comfy.samplers.sampler_object("euler")
            with PassProbe(model) as probe:
                out = sample(m, sampler, sigmas, latent, noise, guider=guider)
            assert all(c["batch"] == 1 for c in probe.calls)
            if m is model:
                dense = out
            else:
                assert rel_err(out, dense) <= 1e-5


def test_noise_mask_is_honoured_like_stock(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 10)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    latent = torch.randn(latent.shape, generator=torch.Generator().manual_seed(9))
    mask = torch.ones_like(latent)
    mask[:, :, 0] = 0.0  # keep frame 0
    dense = sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise, mask=mask)
    ours = sample(patched(model), rhymeflow("euler", count=2), sigmas, latent, noise, mask=mask)
    torch.testing.assert_close(ours[:, :, 0], dense[:, :, 0])
    torch.testing.assert_close(ours[:, :, 0], latent[:, :, 0])


def test_partial_denoise_sigmas(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 16)[6:]  # denoise ~0.6: the tail of the schedule
    latent = torch.randn(1, 16, FRAMES, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(6))
    dense = sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise)
    assert rel_err(sample(patched(model), rhymeflow("euler", count=FRAMES), sigmas, latent, noise), dense) <= 1e-5
    p = patched(model)
    sample(p, rhymeflow("euler", warmup=2, count=2), sigmas, latent, noise)
    assert last_report(p).steps == 10


def test_two_expert_split_is_a_synchronisation_point(tiny_model):
    """Wan 2.2 A14B: high-noise expert on the first sigmas, low-noise expert on the rest."""
    high, low = tiny_model(seed=0), tiny_model(seed=1)
    sigmas = sigmas_for(high, 16)
    first, second = sigmas[:9], sigmas[8:]
    latent, noise = latent_and_noise(FRAMES, SIZE)
    zero = torch.zeros_like(noise)

    def two_experts(sampler_high, sampler_low, m_high, m_low):
        mid = sample(m_high, sampler_high, first, latent, noise)
        return sample(m_low, sampler_low, second, mid, zero)

    euler = comfy.samplers.sampler_object("euler")
    dense = two_experts(euler, euler, high, low)
    every = two_experts(rhymeflow("euler", 2, count=FRAMES), rhymeflow("euler", 1, count=FRAMES), patched(high), patched(low))
    assert rel_err(every, dense) <= 1e-5
    with observe() as reports:
        sparse = two_experts(rhymeflow("euler", 2, 2, 3, count=2), rhymeflow("euler", 1, 3, 5, count=2), patched(high), patched(low))
    assert torch.isfinite(sparse).all()
    high_run, low_run = reports
    assert high_run.active_passes == build_schedule(8, ScheduleSettings(2, 2, 3)).active_passes
    assert low_run.active_passes == build_schedule(8, ScheduleSettings(1, 3, 5)).active_passes


def test_progress_callback_every_step_with_full_size_previews(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 12)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    seen = []
    sample(patched(model), rhymeflow("uni_pc", count=2), sigmas, latent, noise,
           callback=lambda i, x0, x, total: seen.append((i, tuple(x0.shape), total)))
    assert [s[0] for s in seen] == list(range(12))
    assert all(s[1] == tuple(latent.shape) and s[2] == 12 for s in seen)


def test_interrupt_stops_within_a_step_and_frees_the_cache(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, 12)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    p = patched(model)
    runs = capture_runs(p)
    with interrupt_at(6) as callback, PassProbe(model) as probe:
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            sample(p, rhymeflow("euler", count=2), sigmas, latent, noise, callback=callback)
    assert len(probe.calls) == 7
    assert runs and not runs[-1].cache.entries


def test_attention_overrides_still_apply_in_active_passes(tiny_model):
    """A SageAttention-style override node sets transformer_options['optimized_attention_override']."""
    model = tiny_model()
    sigmas = sigmas_for(model, 10)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    seen = []

    def override(original, q, k, v, heads, **kwargs):
        seen.append((q.shape[1], k.shape[1]))
        return original(q, k, v, heads, **kwargs)

    p = patched(model)
    p.model_options["transformer_options"]["optimized_attention_override"] = override
    plain = sample(patched(model), rhymeflow("euler", count=2), sigmas, latent, noise)
    with_override = sample(p, rhymeflow("euler", count=2), sigmas, latent, noise)
    assert torch.equal(plain, with_override)
    key_rows, all_rows = 2 * (SIZE // 2) ** 2, FULL_ROWS
    assert (key_rows, all_rows) in seen, "active self-attention: keyframe queries against all keys, through the override"
    assert (all_rows, all_rows) in seen


def test_frames_follow_the_spec_trajectories(tiny_model):
    """docs/algorithm.md §1, step by step: keyframes take an Euler step every step; non-keyframes sit on the
    straight line of their group and end at the clean prediction of the last rhythmic point."""
    model = tiny_model()
    steps = 20
    sigmas = sigmas_for(model, steps)
    latent, noise = latent_and_noise(7, SIZE)
    seen = []
    out = sample(patched(model), rhymeflow("euler", warmup=4, min_stride=3, max_stride=5, count=3), sigmas, latent, noise,
                 callback=lambda i, x0, x, total: seen.append((x.clone(), x0.clone())))
    out = model.model.process_latent_in(out)  # back to the space the sampler works in
    schedule = build_schedule(steps, ScheduleSettings(4, 3, 5))
    key, nonkey = [0, 3, 6], [1, 2, 4, 5]
    close = dict(rtol=1e-5, atol=1e-6)
    for i in range(steps - 1):
        x, d = seen[i]
        s, s_next = sigmas[i], sigmas[i + 1]
        euler = x + (s_next - s) * (x - d) / s
        torch.testing.assert_close(seen[i + 1][0][:, :, key], euler[:, :, key], **close)
    for group in schedule.groups:
        z, d = seen[group.start]
        s = sigmas[group.start]
        for j in range(group.start + 1, group.end):
            line = d + sigmas[j] / s * (z - d)
            torch.testing.assert_close(seen[j][0][:, :, nonkey], line[:, :, nonkey], **close)
            torch.testing.assert_close(seen[j][1][:, :, nonkey], d[:, :, nonkey], **close)  # preview: the group's x0
        end = d + sigmas[group.end] / s * (z - d)
        target = seen[group.end][0] if group.end < steps else out
        torch.testing.assert_close(target[:, :, nonkey], end[:, :, nonkey], **close)
    last = schedule.groups[-1].start
    torch.testing.assert_close(out[:, :, nonkey], seen[last][1][:, :, nonkey], **close)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_weights_through_comfy_ops_casting(dtype):
    """Weights stored in bf16/fp16 and cast per call by comfy.ops (manual cast on the CPU)."""
    from tools import tiny_models
    model = tiny_models.load("wan", dtype=dtype)
    assert model.model.diffusion_model.blocks[0].self_attn.q.weight.dtype == dtype
    sigmas = sigmas_for(model, 10)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    dense = sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise)
    assert rel_err(sample(patched(model), rhymeflow("euler", count=FRAMES), sigmas, latent, noise), dense) <= 1e-5
    assert torch.isfinite(sample(patched(model), rhymeflow("euler", count=2), sigmas, latent, noise)).all()


@pytest.mark.parametrize("easycache_first", [True, False])
def test_easycache_in_either_order_never_skips_a_recording_pass(easycache_first, tiny_model):
    # EasyCache applied before the projection would wrap outside ours and could skip a recording
    # pass; per run we move ours outside it. Either way the schedule's passes all run.
    from comfy_extras.nodes_easycache import EasyCacheNode

    def easy(m):
        return EasyCacheNode.execute(m, 0.5, 0.0, 1.0, False).result[0]

    model = tiny_model()
    p = patched(easy(model)) if easycache_first else easy(patched(model))
    order = list(p.wrappers[comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL])
    assert order.index("easycache") < order.index("rhymeflow") if easycache_first else order.index("easycache") > order.index("rhymeflow")
    sigmas = sigmas_for(model, 16)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    with PassProbe(model) as probe:
        out = sample(p, rhymeflow("euler", 4, 3, 5, count=2), sigmas, latent, noise)
    schedule = build_schedule(16, ScheduleSettings(4, 3, 5))
    report = last_report(p)
    assert report.model_calls["record"] == schedule.full_passes - 4 and report.model_calls["active"] == schedule.active_passes
    assert probe.kinds(FULL_ROWS).count("active") == schedule.active_passes
    assert torch.isfinite(out).all()
    assert list(p.wrappers[comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL]) == order, "the user's MODEL keeps its wrapper order"
