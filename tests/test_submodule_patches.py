"""Patches on a block sub-module's `forward` (docs/compile.md, "Sub-module patches").

KJNodes' Enhance-A-Video replaces every Wan block's `self_attn.forward` by an object patch
(tests/standins/kjnodes_enhance.py). Recording and active passes compute self-attention from its
parts (`q`, `k`, `v`, `o`), and the patch needs every frame's queries, so it cannot apply there: the
run says so once, naming the module, and the patch still runs in every full pass.
"""
from __future__ import annotations

import logging

import comfy.samplers
import pytest
from comfy.ldm.wan.model import WanSelfAttention
from standins.kjnodes_compile import compile_wan
from standins.kjnodes_enhance import enhance_wan

from helpers import last_report, latent_and_noise, patched, rhymeflow, sample, sigmas_for, tiny_model

FRAMES, STEPS = 6, 10
SEED = 5   # a tiny model of its own: object patches stay on the module until ComfyUI unloads the model


@pytest.fixture
def enhanced():
    """(tiny Wan with Enhance-A-Video's hook, its call counter); afterwards ModelPatcher.unpatch_model puts the
    original forwards back (object_patches_backup, shared by the clones that sampled)."""
    model, patch = enhance_wan(tiny_model("wan", seed=SEED))
    yield model, patch
    model.unpatch_model()
    for block in tiny_model("wan", seed=SEED).model.diffusion_model.blocks:
        assert getattr(block.self_attn.forward, "__func__", None) is WanSelfAttention.forward


def run(p, sampler=None):
    latent, noise = latent_and_noise(frames=FRAMES)
    return sample(p, sampler or rhymeflow("euler", warmup=3, min_stride=2, max_stride=3, count=2),
                  sigmas_for(p, STEPS), latent, noise)


def test_a_replaced_self_attention_forward_is_named_once_and_runs_in_full_passes(enhanced, caplog):
    enhanced, patch = enhanced
    with caplog.at_level(logging.WARNING, logger="RhymeFlow"):
        run(patched(enhanced))
    report = last_report()
    message = report.warnings["forward_patches"]
    assert message.startswith("blocks.0.self_attn.forward and 1 more replaced by a patch") and "warm-up passes only" in message
    assert sum(message in r.getMessage() for r in caplog.records) == 1, "said once per run"
    blocks = len(enhanced.model.diffusion_model.blocks)
    assert report.model_calls["record"] > 0 and report.model_calls["active"] > 0
    assert patch.calls == report.model_calls["full"] * blocks, "the patch ran in every full pass, and only there"


def test_the_patch_is_found_behind_compiled_blocks(enhanced):
    enhanced, _ = enhanced
    run(patched(compile_wan(enhanced, "eager")))
    assert "blocks.0.self_attn.forward" in last_report().warnings["forward_patches"]


def test_no_warning_outside_rhymeflow_or_once_the_patch_is_undone(enhanced):
    enhanced, patch = enhanced
    run(patched(enhanced), sampler=comfy.samplers.sampler_object("euler"))   # a stock sampler: every pass full
    report = last_report()
    assert "forward_patches" not in report.warnings
    assert patch.calls == report.model_calls["full"] * len(enhanced.model.diffusion_model.blocks) > 0
    # Undone, the host leaves the class's own bound forward as an instance attribute: not a patch.
    enhanced.unpatch_model()
    run(patched(tiny_model("wan", seed=SEED)))
    assert "forward_patches" not in last_report().warnings
