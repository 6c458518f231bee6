"""Block inputs by the model's own code: used by the HunyuanVideo and LTX-Video adapters.

`model_inputs` runs the model's own input preparation (patch embedding, time/guidance vectors,
text refinement, RoPE table, masks) and stops at the first block: it installs a block-replace
patch for that block on a *copy* of transformer_options which raises with the block's
arguments. So everything before the blocks stays ComfyUI's code, whatever the version or the
model's optional inputs (pooled CLIP, ByT5, vision tokens, guide positions, ...).
(Wan's inputs are few and stable, so wan.py embeds them itself and can embed only the keyframes.)
"""
from __future__ import annotations

from .. import compat


class _BlockInputs(Exception):
    def __init__(self, block_args: dict):
        super().__init__("RhymeFlow: block inputs captured")
        self.block_args = block_args


def _capture(block_args, _extra):
    raise _BlockInputs(block_args)


def model_inputs(diffusion_model, to: dict, args: tuple, kwargs: dict, first_block: tuple) -> dict:
    """The argument dict ComfyUI hands to `patches_replace["dit"][first_block]`."""
    patched_to = dict(to)
    replace = dict(to.get("patches_replace", {}))
    replace["dit"] = {**replace.get("dit", {}), first_block: _capture}
    patched_to["patches_replace"] = replace
    args = tuple(patched_to if a is to else a for a in args)
    kwargs = {k: (patched_to if v is to else v) for k, v in kwargs.items()}
    try:
        compat.unwrapped_forward(diffusion_model, *args, **kwargs)
    except _BlockInputs as captured:
        return captured.block_args
    raise RuntimeError(f"RhymeFlow: {type(diffusion_model).__name__} never reached block {first_block}; "
                       "its forward changed. Please report this with your ComfyUI version.")
