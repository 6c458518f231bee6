"""The Wan active pass (docs/algorithm.md §4) against ComfyUI's own WanModel forward."""
import torch

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

