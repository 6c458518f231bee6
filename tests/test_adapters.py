"""The adapter template's promises, for every model family and variant (tiny real ComfyUI models).

1. A RECORD pass is the stock forward; an ACTIVE pass on a fresh cache is the stock forward on the
   keyframe rows (1e-5), and its non-keyframe outputs are zeros (never used).
2. An ACTIVE pass sends only keyframe rows through the blocks, measured inside the model.
3. A whole sampling run: every model call is counted by kind in the run report, and the rows the
   report counts are the rows the model saw.
Family-specific behaviour (conditioning, text tokens, refusals, samplers) is in tests/test_<family>.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from helpers import key_err, patched, rhymeflow, sample, sigmas_for, tiny_model
from rhymeflow_core.adapters import adapter_for
from rhymeflow_core.report import observe
from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun
from rhymeflow_core.schedule import ScheduleSettings, build_schedule
from tools.tiny_models import HUNYUAN_POOLED_DIM, HUNYUAN_TEXT_DIM, LTXV_CAPTION_DIM, WAN_CLIP_DIM, WAN_TEXT_DIM

FRAMES, TEXT, BATCH = 6, 7, 2
CLIP_TOKENS = {"i2v": 257, "flf2v": 514}


@dataclass(frozen=True)
class Case:
    family: str
    variant: str
    size: int          # latent height and width
    patch: int         # spatial patch size

    def __str__(self):
        return f"{self.family}-{self.variant}"

    @property
    def model(self):
        return tiny_model(self.family, self.variant)

    @property
    def dm(self):
        return self.model.model.diffusion_model

    @property
    def per_frame(self) -> int:
        return (self.size // self.patch) ** 2

    def query_module(self):
        """The module of the first block whose input rows are the pass's video-token queries."""
        if self.family == "wan":
            return self.dm.blocks[0].self_attn.q
        if self.family == "hunyuan":
            return self.dm.double_blocks[0].img_attn.qkv
        return self.dm.transformer_blocks[0].attn1.to_q

    # ---- direct calls: the stock forward and the adapter's passes on the same inputs ----------
    def inputs(self, seed=0) -> dict:
        g = torch.Generator().manual_seed(seed)
        dm = self.dm
        channels = {"wan": getattr(dm, "in_dim", None), "hunyuan": getattr(dm, "in_channels", None), "ltxv": 128}[self.family]
        inp = {"x": torch.randn(BATCH, channels, FRAMES, self.size, self.size, generator=g)}
        if self.family == "wan":
            inp["timestep"] = torch.full((BATCH,), 700.0)
            if self.variant == "ti2v_5b":   # WAN22.process_timestep: frame 0 clean, the rest at t
                inp["timestep"] = torch.full((BATCH, FRAMES), 700.0)
                inp["timestep"][:, 0] = 0.0
            inp["context"] = torch.randn(BATCH, TEXT, WAN_TEXT_DIM, generator=g) * 0.5
            inp["clip_fea"] = (torch.randn(BATCH, CLIP_TOKENS[self.variant], WAN_CLIP_DIM, generator=g)
                               if self.variant in CLIP_TOKENS else None)
        elif self.family == "hunyuan":
            mask = torch.ones(1, TEXT)
            mask[:, 5:] = 0
            inp.update(timestep=torch.full((BATCH,), 0.7), context=torch.randn(BATCH, TEXT, HUNYUAN_TEXT_DIM, generator=g),
                       y=torch.randn(BATCH, HUNYUAN_POOLED_DIM, generator=g) if self.variant == "1.0" else None,
                       guidance=torch.full((BATCH,), 6.0), attention_mask=mask)
        else:
            inp.update(timestep=torch.rand(BATCH, FRAMES * self.per_frame, 1, generator=g),   # per-token timesteps
                       context=torch.randn(BATCH, TEXT, LTXV_CAPTION_DIM, generator=g))
        return inp

    def stock(self, inp):
        with torch.no_grad():
            if self.family == "ltxv":
                return self.dm(inp["x"], inp["timestep"], inp["context"], None, frame_rate=25)
            return self.dm(**inp)

    def call(self, inp, to):
        """(args, kwargs) as the host's DIFFUSION_MODEL wrapper receives them."""
        if self.family == "wan":
            return (inp["x"], inp["timestep"], inp["context"], inp["clip_fea"]), {}
        if self.family == "hunyuan":
            return (inp["x"], inp["timestep"], inp["context"], inp["y"], None, None, inp["guidance"], inp["attention_mask"],
                    None, None, False, None, to), {}
        return (inp["x"], inp["timestep"], inp["context"], None, 25, to), {}

    def run_pass(self, run, kind, keyframes, inp):
        run.set_plan(kind, keyframes)
        to = {"uuids": ["cond", "uncond"]}
        args, kwargs = self.call(inp, to)
        with torch.no_grad():
            return run.adapter.forward(self.dm, run, to, args, kwargs)

    def new_run(self, context):
        return RhymeFlowRun(ProjectionConfig(context), adapter_for(self.model))

    # ---- sampling through ComfyUI's CFGGuider ---------------------------------------------------
    def conds(self, seed=3):
        g = torch.Generator().manual_seed(seed)

        def one():
            if self.family == "wan":
                return [[torch.randn(1, TEXT, WAN_TEXT_DIM, generator=g) * 0.5, {}]]
            if self.family == "hunyuan":   # 1.5's text encoder has no pooled output; ComfyUI still reads the key
                pooled = torch.randn(1, HUNYUAN_POOLED_DIM, generator=g) if self.variant == "1.0" else None
                return [[torch.randn(1, TEXT, HUNYUAN_TEXT_DIM, generator=g), {"pooled_output": pooled}]]
            extra = {"frame_rate": 24, "attention_mask": torch.ones(1, TEXT, dtype=torch.long)}
            return [[torch.randn(1, TEXT, LTXV_CAPTION_DIM, generator=g), extra]]
        return one(), one()

    def latent(self, seed=1):
        g = torch.Generator().manual_seed(seed)
        channels = self.model.model.latent_format.latent_channels
        latent = torch.zeros(1, channels, FRAMES, self.size, self.size)
        return latent, torch.randn(latent.shape, generator=g)


CASES = [Case("wan", v, 8, 2) for v in ("t2v", "i2v", "flf2v", "a14b_i2v", "ti2v_5b")] + \
        [Case("hunyuan", "1.0", 8, 2), Case("hunyuan", "1.5", 8, 1), Case("ltxv", "t2v", 4, 1)]


class QueryRows:
    """Rows entering a case's query projection of the first block, one entry per model call."""

    def __init__(self, case: Case):
        self.module, self.calls = case.query_module(), []

    def __enter__(self):
        self.handle = self.module.register_forward_hook(lambda _m, i, _o: self.calls.append(i[0].shape[0] * i[0].shape[1]))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache"])
@pytest.mark.parametrize("keyframes", [(0, 5), (0, 2, 5), tuple(range(FRAMES))], ids=["2", "3", "all"])
def test_record_is_stock_and_active_on_a_fresh_cache_is_stock_on_keyframes(case, context, keyframes):
    inp = case.inputs()
    ref = case.stock(inp)
    run = case.new_run(context)
    torch.testing.assert_close(case.run_pass(run, RECORD, keyframes, inp), ref, rtol=1e-5, atol=1e-6)
    active = case.run_pass(run, ACTIVE, keyframes, inp)
    assert key_err(active, ref, keyframes) <= 1e-5
    assert not active[:, :, [f for f in range(FRAMES) if f not in keyframes]].any(), "non-keyframe outputs are zeros"
    run.close()


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache", "keyframe_only"])
def test_active_pass_sends_only_keyframe_rows_through_the_blocks(case, context):
    inp = case.inputs()
    for keyframes in [(0, 5), (0, 2, 3, 5)]:
        run = case.new_run(context)
        with QueryRows(case) as rows:
            case.run_pass(run, RECORD, keyframes, inp)
            case.run_pass(run, ACTIVE, keyframes, inp)
        full, key = BATCH * FRAMES * case.per_frame, BATCH * len(keyframes) * case.per_frame
        assert rows.calls[:2] == [full, key]
        # hidden_cache re-projects the cached block inputs to keys/values every pass (the reference code's
        # mode): a fused qkv projection (HunyuanVideo) sees those rows too; nothing else ever does.
        fused_reprojection = context == "hidden_cache" and case.family == "hunyuan"
        assert rows.calls[2:] == ([full] if fused_reprojection else [])
        run.close()


# Whole runs are slow on a CPU: the fast loop keeps one family, `make test` runs them all.
RUN_CASES = [c if c == CASES[0] else pytest.param(c, marks=pytest.mark.slow) for c in CASES]


@pytest.mark.parametrize("case", RUN_CASES, ids=str)
def test_a_run_counts_every_call_and_the_rows_the_model_saw(case):
    steps, settings = 20, ScheduleSettings(6, 3, 5)
    schedule = build_schedule(steps, settings)
    latent, noise = case.latent()
    cond, uncond = case.conds()
    with observe() as reports, QueryRows(case) as rows:
        sample(patched(case.model), rhymeflow("euler", 6, 3, 5, count=2), sigmas_for(case.model, steps), latent, noise,
               cond=cond, uncond=uncond)
    (report,) = reports
    assert report.completed and (report.full_passes, report.active_passes) == (schedule.full_passes, schedule.active_passes)
    per_step = len(rows.calls) // steps            # 1 when CFG batches cond and uncond, 2 when it does not
    warmup, groups = schedule.warmup, len(schedule.groups)
    assert report.model_calls == {"full": warmup * per_step, "record": groups * per_step,
                                  "active": schedule.active_passes * per_step}
    full_rows = (BATCH // per_step) * FRAMES * case.per_frame
    key_rows = (BATCH // per_step) * len(report.keyframes) * case.per_frame
    assert len(report.keyframes) < FRAMES, "sparse keyframes: active passes skip work"
    roles = [r for r in schedule.roles() for _ in range(per_step)]
    assert rows.calls == [key_rows if r == "active" else full_rows for r in roles], "rows measured inside the model"
    assert report.rows == {"full": warmup * per_step * full_rows, "record": groups * per_step * full_rows,
                           "active": schedule.active_passes * per_step * key_rows}
