"""One rank of tests/test_parallel.py's two-process gloo group: runs the cases it is sent, answers with results.

Spawned (start method spawn) with the parent's sys.path; `import conftest` runs the same host bootstrap as
pytest's process (`conftest.bootstrap_host`: CPU host, one thread) before comfy.model_management loads.
Each case runs the real tiny WanModel twice in this process: with the Ulysses group active (the other rank
computing its share) and without it (the single-process adapter), and reports the differences.
"""
from __future__ import annotations

import traceback
from datetime import timedelta

import torch
import torch.distributed as dist

import conftest  # noqa: F401  the host bootstrap, before anything imports comfy.model_management
from helpers import REPORTS, latent_and_noise, patched, rel_err, rhymeflow, sample, sigmas_for, tiny_model
from rhymeflow_core import parallel
from rhymeflow_core.adapters import adapter_for
from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun
from tools.tiny_models import WAN_CLIP_DIM, WAN_TEXT_DIM

DIM = 512                  # 4 heads of 128 (ComfyUI detects Wan's heads as dim // 128): 2 per rank
BATCH, FRAMES, SIZE, TEXT = 2, 5, 6, 7   # 3 x 3 = 9 rows a frame, 45 rows: odd, so the last share is padded


def serve(rank: int, world: int, port: int, inbox, outbox) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    group = parallel.SequenceGroup.of(dist.group.WORLD)
    model()   # built before the first case, so a case's time is its own
    outbox.put((rank, "ready"))
    try:
        for name, kwargs in iter(inbox.get, None):
            try:
                outbox.put((rank, CASES[name](group, **kwargs)))
            except Exception as e:
                outbox.put((rank, {"error": type(e).__name__, "message": str(e), "trace": traceback.format_exc()}))
    finally:
        dist.destroy_process_group()


def model(variant="t2v", dim=DIM):
    return tiny_model("wan", variant, dim=dim, ffn_dim=256)


def inputs(variant: str, seed: int) -> tuple:
    g = torch.Generator().manual_seed(seed)
    dm = model(variant).model.diffusion_model
    x = torch.randn(BATCH, dm.patch_embedding.weight.shape[1], FRAMES, SIZE, SIZE, generator=g)
    t = torch.full((BATCH,), 700.0 - seed)
    if variant == "ti2v_5b":   # WAN22.process_timestep: the start frame clean, the rest at t
        t = torch.full((BATCH, FRAMES), 700.0 - seed)
        t[:, 0] = 0.0
    clip = torch.randn(BATCH, 257, WAN_CLIP_DIM, generator=g) if variant == "i2v" else None
    return x, t, torch.randn(BATCH, TEXT, WAN_TEXT_DIM, generator=g) * 0.5, clip


class QueryRows:
    """Rows entering block 0's query projection in this process, one entry per pass."""

    def __init__(self, dm):
        self.calls, self.module = [], dm.blocks[0].self_attn.q

    def __enter__(self):
        self.handle = self.module.register_forward_hook(lambda _m, i, _o: self.calls.append(i[0].shape[0] * i[0].shape[1]))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _passes(variant, context, keyframes, to):
    """RECORD on one input, then ACTIVE on another (so the cache is stale, as in sampling): both outputs."""
    run = RhymeFlowRun(ProjectionConfig(context), adapter_for(model(variant)))
    outs = []
    for kind, seed in ((RECORD, 0), (ACTIVE, 1)):
        run.set_plan(kind, keyframes)
        with torch.no_grad():
            outs.append(run.adapter.forward(model(variant).model.diffusion_model, run, to, inputs(variant, seed), {}))
    run.close()
    return outs


def passes(group, variant="t2v", context="kv_cache", keyframes=(0, 2, 4)) -> dict:
    uuids = {"uuids": ["cond", "uncond"]}
    with QueryRows(model(variant).model.diffusion_model) as rows:
        record, active = _passes(variant, context, keyframes, {**uuids, parallel.GROUP_KEY: group})
    ref_record, ref_active = _passes(variant, context, keyframes, dict(uuids))
    k = list(keyframes)
    return {"record": rel_err(record, ref_record), "active": rel_err(active[:, :, k], ref_active[:, :, k]),
            "zeros": not active[:, :, [f for f in range(FRAMES) if f not in k]].any(), "rows": rows.calls[:2]}


def sampling(group, steps=8) -> dict:
    m = model()
    latent, noise = latent_and_noise(FRAMES, SIZE)
    outs, reports = [], []
    for active in (True, False):
        pm = patched(m)
        if active:
            pm.model_options["transformer_options"][parallel.GROUP_KEY] = group
        with QueryRows(m.model.diffusion_model) as rows:
            outs.append(sample(pm, rhymeflow("euler", 3, 2, 3, count=2), sigmas_for(m, steps), latent, noise))
        reports.append(REPORTS[-1])
        if active:   # the sequence-parallel run's rows, measured inside the model
            calls = rows.calls
    return {"err": rel_err(outs[0], outs[1]), "calls": [r.model_calls for r in reports], "rows": calls,
            "keyframes": [list(r.keyframes) for r in reports], "completed": [r.completed for r in reports]}


def failing(group, failing_rank=1, how="raise") -> dict:
    """One rank fails before its pass (an input refused, or ComfyUI's interrupt flag); the pass must end on both."""
    import comfy.model_management

    from rhymeflow_core.adapters.wan import WanAdapter
    from rhymeflow_core.errors import RhymeFlowInputError

    original = WanAdapter.check_call

    def check_call(self, *args):
        if how == "raise":
            raise RhymeFlowInputError(f"refused on rank {group.rank}")
        comfy.model_management.interrupt_current_processing(True)

    if group.rank == failing_rank:
        WanAdapter.check_call = check_call
    try:
        return passes(group)
    finally:
        WanAdapter.check_call = original
        comfy.model_management.interrupt_current_processing(False)


def refused(group, what: str) -> dict:
    if what == "ring":
        group = parallel.SequenceGroup(group.group, group.rank, group.world, ring=2)
    if what == "pipefusion":
        group = parallel.SequenceGroup(group.group, group.rank, group.world, pipeline=2)
    uuids = {"uuids": ["cond"], parallel.GROUP_KEY: group}
    variant, dim, context = "t2v", (384 if what == "heads" else DIM), ("hidden_cache" if what == "hidden_cache" else "kv_cache")
    run = RhymeFlowRun(ProjectionConfig(context), adapter_for(model(variant, dim)))
    run.set_plan(RECORD, (0, 2))
    x, t, c, _ = inputs(variant, 0)
    with torch.no_grad():
        run.adapter.forward(model(variant, dim).model.diffusion_model, run, uuids, (x[:1], t[:1], c[:1], None), {})
    return {}


CASES = {"passes": passes, "sampling": sampling, "failing": failing, "refused": refused}
