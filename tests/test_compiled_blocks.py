"""Compiled blocks (docs/compile.md): recording and active passes run through the user's torch.compile.

KJNodes' Wan compile node compiles each block (tests/standins/kjnodes_compile.py, the host's own
set_torch_compile_wrapper). A counting backend counts compiles and compiled calls by pass kind,
measured inside the model; torch._dynamo's counters give graph breaks. Attention goes through the
host's `optimized_attention_override` hook to ComfyUI's attention_pytorch, because the CPU default
(sub-quadratic attention) reads free memory with psutil, a graph break in stock and our passes alike.
"""
from __future__ import annotations

import collections

import comfy.ldm.modules.attention as host_attention
import comfy.patcher_extension
import comfy.samplers
import pytest
import torch
import torch._dynamo
from comfy_api.torch_helpers import set_torch_compile_wrapper
from standins.kjnodes_compile import compile_wan
from torch._dynamo.utils import counters

from helpers import last_report, latent_and_noise, patched, rel_err, rhymeflow, sample, sigmas_for, tiny_model
from rhymeflow_core.patch import pass_kind

FRAMES, STEPS = 6, 10


class CountingBackend:
    """A torch.compile backend that runs dynamo's graph as is, counting compiles and calls by pass kind."""

    def __init__(self):
        self.kind = None
        self.compiles: collections.Counter = collections.Counter()
        self.calls: collections.Counter = collections.Counter()

    def __call__(self, graph, _example_inputs):
        self.compiles[self.kind] += 1

        def run(*args):
            self.calls[self.kind] += 1
            return graph.forward(*args)
        return run

    def tagged(self, model):
        """A clone of `model` whose outermost DIFFUSION_MODEL wrapper tells the backend the pass kind of each call."""
        tagged = model.clone()

        def tag(executor, *args, **kwargs):
            self.kind = pass_kind(args[-1]) or "full"
            return executor(*args, **kwargs)
        tagged.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test-tag", tag)
        return tagged


def pytorch_attention(_func, *args, **kwargs):
    return host_attention.attention_pytorch(*args, **kwargs)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def build(order: str, backend, context="kv_cache", attention=True):
    """Tiny Wan with compiled blocks and the projection, applied in `order`."""
    model = tiny_model("wan")
    if isinstance(backend, CountingBackend):
        model = backend.tagged(model)
    if order == "compile_first":
        p = patched(compile_wan(model, backend), context)
    else:
        p = compile_wan(patched(model, context), backend)
    if attention:
        p.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = pytorch_attention
    return p


def run(p, count=2, steps=STEPS, sampler=None):
    latent, noise = latent_and_noise(frames=FRAMES)
    sampler = sampler or rhymeflow("euler", warmup=3, min_stride=2, max_stride=3, count=count)
    return sample(p, sampler, sigmas_for(p, steps), latent, noise)


@pytest.mark.parametrize("order", ["compile_first", "project_first"])
def test_recording_and_active_passes_run_compiled_without_recompiling_every_step(order):
    backend = CountingBackend()
    p = build(order, backend)
    run(p)
    report, blocks = last_report(), len(p.model.diffusion_model.blocks)
    calls = report.model_calls
    assert calls["record"] > 0 and calls["active"] > 0
    assert "forward_patches" not in report.warnings
    # One compiled region per block in full and recording passes; two in active passes (before and after the
    # cache read). Before this, recording and active passes made no compiled calls at all.
    assert dict(backend.calls) == {"full": calls["full"] * blocks, "record": calls["record"] * blocks,
                                   "active": calls["active"] * 2 * blocks}
    assert not counters["graph_break"], dict(counters["graph_break"])
    # Compiles happen on the first pass of each kind (and the first block, whose input is a strided view);
    # measured: full 2, record 2, active 4. A longer run and a second run compile nothing new.
    first = dict(backend.compiles)
    assert sum(first.values()) <= 8, first
    backend.compiles.clear()
    run(p, steps=2 * STEPS)
    assert not backend.compiles, dict(backend.compiles)


@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache"])
def test_compiled_passes_equal_eager_passes(context):
    eager = run(patched(tiny_model("wan"), context))
    compiled = run(build("compile_first", CountingBackend(), context, attention=False))
    assert rel_err(compiled, eager) <= 1e-5
    assert last_report().model_calls["active"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("order", ["compile_first", "project_first"])
def test_every_frame_a_keyframe_equals_dense_with_the_same_inductor_compile(order):
    dense = run(compile_wan(tiny_model("wan"), "inductor"), sampler=comfy.samplers.sampler_object("euler"))
    ours = run(build(order, "inductor", attention=False), count=FRAMES)
    assert rel_err(ours, dense) <= 1e-5
    assert last_report().model_calls["active"] > 0
    assert counters["stats"]["unique_graphs"] > 0, "dynamo compiled graphs for inductor"


@pytest.mark.slow
def test_whole_model_compile_still_works():
    """Core TorchCompileModel's route (set_torch_compile_wrapper with the default key, `diffusion_model`):
    our wrapper runs inside the compiled forward; the result equals eager RhymeFlow."""
    eager = run(patched(tiny_model("wan")), steps=6)
    backend = CountingBackend()
    model = patched(backend.tagged(tiny_model("wan")))
    set_torch_compile_wrapper(model, backend=backend)
    compiled = run(model, steps=6)
    assert rel_err(compiled, eager) <= 1e-5
    report = last_report()
    assert report.model_calls["record"] > 0 and report.model_calls["active"] > 0
    assert backend.calls["full"] and backend.calls["record"] and backend.calls["active"], dict(backend.calls)
