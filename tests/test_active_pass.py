"""The Wan active pass (docs/algorithm.md §4) against ComfyUI's own WanModel forward."""
import pytest
import torch

from helpers import PassProbe
from rhymeflow_core.adapters.wan import WanAdapter
from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun

FRAMES, SIZE = 6, 8
ROWS_PER_FRAME = (SIZE // 2) ** 2


def inputs(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, FRAMES, SIZE, SIZE, generator=g)
    t = torch.full((batch,), 700.0)
    ctx = torch.randn(batch, 8, 4096, generator=g) * 0.5
    return x, t, ctx


def run_pass(run, dm, kind, keyframes, x, t, ctx):
    run.set_plan(kind, keyframes)
    with torch.no_grad():
        return WanAdapter().forward(dm, run, {"uuids": ["cond", "uncond"]}, (x, t, ctx), {})


@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache"])
@pytest.mark.parametrize("keyframes", [(0, 5), (0, 2, 5), (0, 1, 2, 3, 4, 5)])
def test_active_pass_on_fresh_cache_equals_full_pass(context, keyframes, tiny_model):
    dm = tiny_model().model.diffusion_model
    x, t, ctx = inputs()
    with torch.no_grad():
        stock = dm(x, t, ctx)  # ComfyUI's own forward, no wrappers
    run = RhymeFlowRun(ProjectionConfig(context), WanAdapter())
    recorded = run_pass(run, dm, RECORD, keyframes, x, t, ctx)
    torch.testing.assert_close(recorded, stock, rtol=1e-5, atol=1e-6)
    active = run_pass(run, dm, ACTIVE, keyframes, x, t, ctx)
    k = list(keyframes)
    err = (active[:, :, k] - stock[:, :, k]).abs().max() / stock[:, :, k].abs().max()
    assert err <= 1e-5
    others = [f for f in range(FRAMES) if f not in keyframes]
    assert not active[:, :, others].any(), "non-keyframe outputs of an active pass are zeros, never used"


def test_active_pass_uses_the_cached_context(tiny_model):
    """keyframe_only (no context) must differ from the full pass; the cached modes must not."""
    dm = tiny_model().model.diffusion_model
    x, t, ctx = inputs()
    with torch.no_grad():
        stock = dm(x, t, ctx)
    run = RhymeFlowRun(ProjectionConfig("keyframe_only"), WanAdapter())
    run_pass(run, dm, RECORD, (0, 5), x, t, ctx)
    alone = run_pass(run, dm, ACTIVE, (0, 5), x, t, ctx)
    assert (alone[:, :, [0, 5]] - stock[:, :, [0, 5]]).abs().max() > 1e-3
    # A stale cache (recorded from other latents) changes the keyframe output: the cache is read.
    run = RhymeFlowRun(ProjectionConfig("kv_cache"), WanAdapter())
    x_other = x.clone()
    x_other[:, :, 1:5] = torch.randn_like(x_other[:, :, 1:5])
    run_pass(run, dm, RECORD, (0, 5), x_other, t, ctx)
    stale = run_pass(run, dm, ACTIVE, (0, 5), x, t, ctx)
    assert (stale[:, :, [0, 5]] - stock[:, :, [0, 5]]).abs().max() > 1e-4


@pytest.mark.parametrize("context,kv_rows_per_keyframe_row", [("kv_cache", 1), ("hidden_cache", None)])
def test_rows_processed_in_an_active_pass_are_the_keyframes(context, kv_rows_per_keyframe_row, tiny_model):
    model = tiny_model()
    dm = model.model.diffusion_model
    x, t, ctx = inputs(batch=2)
    run = RhymeFlowRun(ProjectionConfig(context), WanAdapter())
    run_pass(run, dm, RECORD, (0, 5), x, t, ctx)
    for keyframes in [(0, 5), (0, 2, 5), (0, 2, 3, 5)]:
        run = RhymeFlowRun(ProjectionConfig(context), WanAdapter())
        run_pass(run, dm, RECORD, keyframes, x, t, ctx)
        with PassProbe(model) as probe:
            run_pass(run, dm, ACTIVE, keyframes, x, t, ctx)
        (call,) = probe.calls
        key_rows = 2 * len(keyframes) * ROWS_PER_FRAME
        assert call["q"] == key_rows and call["ffn"] == key_rows
        if kv_rows_per_keyframe_row:   # keys projected for keyframe rows only
            assert call["k"] == key_rows
        else:                           # the reference's mode re-projects every row
            assert call["k"] == 2 * FRAMES * ROWS_PER_FRAME
