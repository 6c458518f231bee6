"""Pieces shared by the HunyuanVideo and LTX-Video adapters (wan.py keeps its own copies).

`model_inputs` runs the model's own input preparation (patch embedding, time/guidance vectors,
text refinement, RoPE table, masks) and stops at the first block: it installs a block-replace
patch for that block on a *copy* of transformer_options which raises with the block's
arguments. So everything before the blocks stays ComfyUI's code, whatever the version or the
model's optional inputs (pooled CLIP, ByT5, vision tokens, guide positions, ...).
"""
from __future__ import annotations

import torch

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
        diffusion_model._forward(*args, **kwargs)
    except _BlockInputs as captured:
        return captured.block_args
    raise RuntimeError(f"RhymeFlow: {type(diffusion_model).__name__} never reached block {first_block}; "
                       "its forward changed. Please report this with your ComfyUI version.")


def frame_rows(frames, per_frame: int, device) -> torch.Tensor:
    """Token indices of the given latent frames in a frame-major sequence."""
    return (torch.as_tensor(list(frames), dtype=torch.long, device=device)[:, None] * per_frame
            + torch.arange(per_frame, device=device)[None]).reshape(-1)


def row_plan(run, frames: int, per_frame: int, device):
    """(keyframe rows, non-keyframe rows) of the current plan, memoised for the run."""
    keyframes = run.plan.keyframes
    key = run.row_index(("key", frames, per_frame, keyframes), lambda: frame_rows(keyframes, per_frame, device), device)
    nk = run.row_index(("nk", frames, per_frame, keyframes), lambda: frame_rows(
        sorted(set(range(frames)) - set(keyframes)), per_frame, device), device)
    return key, nk


def scratch_buffer(t: torch.Tensor, nk_rows: torch.Tensor, a: int, dim: int) -> torch.Tensor:
    """Rows along `dim`: `a` scratch rows (keyframes, rewritten by each active pass), then the non-keyframes."""
    shape = list(t.shape)
    shape[dim] = a + nk_rows.numel()
    buf = t.new_empty(shape)
    buf.narrow(dim, a, nk_rows.numel()).copy_(t.index_select(dim, nk_rows))
    return buf


def cache_mode(run, nk_rows) -> str:
    return run.config.context if nk_rows.numel() else "keyframe_only"


def warn_block_patches(run, to: dict) -> None:
    if to.get("patches_replace", {}).get("dit") and not run.memo.get("warned_block_patches"):
        run.memo["warned_block_patches"] = True
        compat.log.warning("RhymeFlow: block-replace patches (e.g. skip-layer guidance) apply only in warm-up passes, "
                           "not in rhythmic or active passes.")


def scatter_frames(out: torch.Tensor, keyframes, frames: int) -> torch.Tensor:
    """[B, C, M, H, W] keyframe outputs -> [B, C, F, H, W] with zeros at non-keyframes (never used)."""
    full = out.new_zeros((out.shape[0], out.shape[1], frames) + tuple(out.shape[3:]))
    full[:, :, list(keyframes)] = out
    return full
