"""Stand-in for KJNodes' Wan compile node: only the hook it installs.

Mirrors `TorchCompileModelWanVideoV2.patch` in github kijai/ComfyUI-KJNodes,
nodes/model_optimization_nodes.py (lines 534-576 at commit 3f20054): on a clone of the MODEL it calls
the host's `set_torch_compile_wrapper` (comfy_api/torch_helpers/torch_compile.py) with the keys
`diffusion_model.blocks.{i}` when "compile_transformer_blocks_only" is on, else `diffusion_model`.
The host helper then puts `torch.compile(block)` in place of each block while the model runs
(an APPLY_MODEL wrapper with object swaps). Nothing of KJNodes' code is copied.
"""
from __future__ import annotations

from comfy_api.torch_helpers import set_torch_compile_wrapper


def compile_wan(model, backend, blocks_only: bool = True, mode=None, dynamic=None, fullgraph: bool = False):
    """A clone of `model` whose Wan blocks (or whole diffusion model) run compiled during sampling."""
    compiled = model.clone()
    blocks = compiled.get_model_object("diffusion_model").blocks
    keys = [f"diffusion_model.blocks.{i}" for i in range(len(blocks))] if blocks_only else ["diffusion_model"]
    set_torch_compile_wrapper(model=compiled, backend=backend, mode=mode, dynamic=dynamic, fullgraph=fullgraph, keys=keys)
    return compiled
