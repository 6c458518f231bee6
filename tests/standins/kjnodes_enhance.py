"""Stand-in for KJNodes' Enhance-A-Video for Wan: only the hook it installs.

Mirrors `WanVideoEnhanceAVideoKJ.enhance` in github kijai/ComfyUI-KJNodes,
nodes/model_optimization_nodes.py (lines 986-1024 at commit 3f20054): on a clone of the MODEL, for
every block, `add_object_patch(f"diffusion_model.blocks.{idx}.self_attn.forward", bound_method)`,
a replacement self-attention forward that scales its output by a score computed over all frames
(`get_feta_scores`, lines 922-970). Here the replacement runs the stock `WanSelfAttention.forward`
and scales by a constant, counting its calls, which is all the tests need: whether the patch ran.
"""
from __future__ import annotations

import types

from comfy.ldm.wan.model import WanSelfAttention


class EnhancePatch:
    def __init__(self, weight: float):
        self.weight, self.calls = weight, 0

    def forward_for(self, attn):
        def forward(module, x, freqs, transformer_options={}):  # noqa: B006  the host's signature
            self.calls += 1
            return WanSelfAttention.forward(module, x, freqs, transformer_options=transformer_options) * self.weight
        return types.MethodType(forward, attn)


def enhance_wan(model, weight: float = 1.5):
    """(a clone of `model` with every block's self_attn.forward replaced, the patch object that counts its calls)."""
    patched = model.clone()
    patch = EnhancePatch(weight)
    for idx, block in enumerate(patched.get_model_object("diffusion_model").blocks):
        patched.add_object_patch(f"diffusion_model.blocks.{idx}.self_attn.forward", patch.forward_for(block.self_attn))
    return patched, patch
