"""Shared pieces for tests that sample through ComfyUI's real CFGGuider / KSAMPLER path."""
from __future__ import annotations

import contextlib

import comfy.model_management
import comfy.samplers
import torch

from conftest import tiny_model as tiny_model  # the one memoised tiny-model accessor, for module-level use
from rhymeflow_core import report
from rhymeflow_core.keyframes import KeyframeSpec
from rhymeflow_core.patch import apply_trajectory_projection
from rhymeflow_core.run_state import KEY
from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
from rhymeflow_core.sampling_loop import SamplerSettings
from rhymeflow_core.schedule import ScheduleSettings


def conds(cond_tokens: int = 8, uncond_tokens: int = 8, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    cond = [[torch.randn(1, cond_tokens, 4096, generator=g) * 0.5, {}]]
    uncond = [[torch.randn(1, uncond_tokens, 4096, generator=g) * 0.5, {}]]
    return cond, uncond


def latent_and_noise(frames: int = 5, size: int = 8, batch: int = 1, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    latent = torch.zeros(batch, 16, frames, size, size)
    return latent, torch.randn(latent.shape, generator=g)


def sigmas_for(model, steps: int, scheduler: str = "simple") -> torch.Tensor:
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps).float()


def rhymeflow(solver="euler", warmup=3, min_stride=2, max_stride=3, strategy="uniform", count=2, progressive=True, **kf):
    return RhymeFlowSamplerObject(SamplerSettings(ScheduleSettings(warmup, min_stride, max_stride, progressive=progressive),
                                             KeyframeSpec(strategy, count, **kf), solver))


def sample(model, sampler, sigmas, latent, noise, cfg=5.0, cond=None, uncond=None, callback=None, mask=None, guider=None):
    if cond is None:
        cond, uncond = conds()
    if guider is None:
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(cond, uncond)
        guider.set_cfg(cfg)
    with torch.no_grad():
        return guider.sample(noise, latent, sampler, sigmas.clone(), denoise_mask=mask, callback=callback,
                             disable_pbar=True, seed=0)


def key_err(out, ref, keyframes) -> float:
    """Relative error of an active pass's keyframe outputs against a reference forward."""
    k = list(keyframes)
    return float((out[:, :, k] - ref[:, :, k]).abs().max() / ref[:, :, k].abs().max())


def rel_err(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


def patched(model, context="kv_cache"):
    return apply_trajectory_projection(model, context, "auto")


def capture_runs(model) -> list:
    """Adds a test DIFFUSION_MODEL wrapper to `model` that records each call's RhymeFlowRun."""
    import comfy.patcher_extension
    runs: list = []

    def capture(executor, *args, **kwargs):
        runs.append(args[-1][KEY])
        return executor(*args, **kwargs)

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test-capture", capture)
    return runs


# Every run's report, through the pack's one observer hook (rhymeflow_core/report.py).
REPORTS: list = []
report.add_observer(REPORTS.append, key="tests")


def last_report(_model=None) -> report.RunReport:
    """The report of the last run that closed (tests sample one run at a time)."""
    return REPORTS[-1]


class PassProbe:
    """Counts, inside the model, the token rows each diffusion-model call sends through block 0.

    Forward hooks on the tiny model's own modules (the test owns that model; hooks are removed
    on exit). `calls` holds (query rows, key/value rows, ffn rows, batch) per diffusion-model call.
    """

    def __init__(self, model):
        self.dm = model.model.diffusion_model
        self.calls: list[dict] = []

    def __enter__(self):
        block = self.dm.blocks[0]
        cur: dict = {}

        def rows(name):
            def hook(_m, inp, _out):
                cur.setdefault(name, 0)
                cur[name] += inp[0].shape[0] * inp[0].shape[1]
            return hook

        def start(_m, inp):
            cur.clear()
            cur["batch"] = inp[0].shape[0]

        def finish(_m, _inp, _out):
            self.calls.append(dict(cur))

        self.handles = [
            self.dm.patch_embedding.register_forward_pre_hook(start),
            block.self_attn.q.register_forward_hook(rows("q")),
            block.self_attn.k.register_forward_hook(rows("k")),
            block.ffn[0].register_forward_hook(rows("ffn")),
            self.dm.head.register_forward_hook(finish),
        ]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()

    def kinds(self, full_rows: int) -> list[str]:
        return ["full" if c["q"] == full_rows * c["batch"] else "active" for c in self.calls]


@contextlib.contextmanager
def interrupt_at(step: int):
    """A sampling callback that requests ComfyUI's interruption at `step`."""
    def callback(i, *_):
        if i == step:
            comfy.model_management.interrupt_current_processing(True)
    try:
        yield callback
    finally:
        comfy.model_management.interrupt_current_processing(False)


class FakeServer:
    """A stand-in for ComfyUI's PromptServer: a route table and the events it was asked to send."""

    def __init__(self):
        from aiohttp import web
        self.routes = web.RouteTableDef()
        self.client_id = "client-1"
        self.sent = []

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))


def install_fake_server(monkeypatch) -> FakeServer:
    """Put a FakeServer where compat.prompt_server() looks (sys.modules["server"].PromptServer.instance)."""
    import sys
    import types
    server = FakeServer()
    module = types.ModuleType("server")
    module.PromptServer = types.SimpleNamespace(instance=server)
    monkeypatch.setitem(sys.modules, "server", module)
    return server
