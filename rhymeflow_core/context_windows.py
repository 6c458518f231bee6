"""RhymeFlow under ComfyUI's core context windows (docs/algorithm.md §9).

`ContextWindowsManual` / `WanContextWindowsManual` put an `IndexListContextHandler` into the MODEL's
options; inside every model call of the sampler (`calc_cond_batch`) it runs the model once per window
of latent frames and fuses the windows' outputs (comfy/context_windows.py: `execute`,
`evaluate_context_windows`). The sampling loop keeps working on the whole video, so the run's
keyframes are whole-video frame indices, while each model call sees one window. This module maps
between the two:

* a window's call takes as keyframes the run's keyframes it holds, at their positions in the window;
* each window records and reads its own context cache (its frames are part of the cache signature),
  so the rhythmic-point caches of different windows never mix;
* in an active pass, a window holding no keyframe is not run at all: the host fuses only non-keyframe
  outputs from it, and the sampling loop never reads those (it keeps the rhythmic point's prediction).

Refused before sampling: windows over any dimension but the latent frames, schedules that move the
windows every step (the cache recorded for one set of windows would serve another), and v0.33's
`latent_retain_index_list` (it puts other frames at some window positions).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import compat
from .errors import RhymeFlowInputError

FRAME_DIM = 2                                      # [B, C, F, H, W]: what WanContextWindowsManual sets
FIXED_SCHEDULES = ("standard_static", "batched")   # the same windows at every step (create_windows_static_standard / _batched)
SKIPPED = "skipped"                                # report kind: an active pass's window without keyframes, not run


@dataclass(frozen=True)
class WindowView:
    """One model call's context window, in whole-video frame indices."""
    frames: tuple[int, ...]   # the frame of each frame position the model sees
    kept: frozenset[int]      # the frames whose outputs the host fuses (the window's index list)

    def local(self, keyframes) -> tuple[int, ...]:
        """Positions in this window of the run's keyframes it holds (a frame the host prepends counts too: it is context)."""
        keys = set(keyframes)
        return tuple(p for p, f in enumerate(self.frames) if f in keys)

    def holds_keyframe(self, keyframes) -> bool:
        return not self.kept.isdisjoint(keyframes)

    def signature(self, uuids: tuple) -> tuple:
        """One cache entry per cond and window: (uuid, window frames) per cond, so the cache's per-cond regathering still works."""
        return tuple((uuid, self.frames) for uuid in uuids)


def view_of(transformer_options: dict, frames_seen: int) -> WindowView | None:
    """The window of this model call, or None outside context windows."""
    window = compat.context_window_of(transformer_options)
    if window is None:
        return None
    if window.dim != FRAME_DIM:
        raise RhymeFlowInputError(_DIM_FIX.format(dim=window.dim))
    frames, kept = compat.window_frames(window)
    if len(frames) != frames_seen:
        raise RuntimeError(f"RhymeFlow: the context window lists {len(frames)} frames but the model call has {frames_seen}; "
                           "this window layout is unknown to RhymeFlow. Please report it with your workflow.")
    return WindowView(tuple(frames), frozenset(kept))


def unused_output(diffusion_model, x: torch.Tensor) -> torch.Tensor:
    """Zeros of the stock output's shape for a window that is not run (never read: docs/algorithm.md §9)."""
    return x.new_zeros((x.shape[0], compat.output_channels(diffusion_model)) + tuple(x.shape[2:]))


def windows_for(extra_args: dict, latent_shape) -> list[list[int]] | None:
    """The context windows (whole-video frame lists) the host will run, or None; refuses what RhymeFlow cannot follow."""
    handler = extra_args.get("model_options", {}).get("context_handler")
    if handler is None or not hasattr(handler, "context_schedule"):
        return None
    s = compat.window_handler_settings(handler)
    if len(latent_shape) <= s["dim"] or latent_shape[s["dim"]] <= s["context_length"]:
        return None   # should_use_context: the host runs no windows
    if s["dim"] != FRAME_DIM:
        raise RhymeFlowInputError(_DIM_FIX.format(dim=s["dim"]))
    if s["schedule"] not in FIXED_SCHEDULES:
        raise RhymeFlowInputError(
            f"context_schedule {s['schedule']!r} moves the context windows at every step, so the context cache a "
            "rhythmic point records for its windows would not fit the windows of the next steps; set context_schedule "
            f"to {' or '.join(FIXED_SCHEDULES)} on the context-windows node to use it with RhymeFlow.")
    if s["latent_retain"]:
        raise RhymeFlowInputError(
            "latent_retain_index_list puts other frames into some positions of every context window, which RhymeFlow's "
            "keyframe mapping cannot follow; leave latent_retain_index_list empty on the context-windows node.")
    if extra_args.get("denoise_mask") is not None and not compat.windows_slice_model_conds():
        raise RhymeFlowInputError(
            "this ComfyUI (before v0.33) does not cut a latent's noise mask to each context window, so per-frame timesteps "
            "(Wan 2.2 TI2V-5B, image-to-video latents) would not match the window's frames; update ComfyUI, or sample "
            "this latent without context windows.")
    return compat.context_windows_for(handler, latent_shape[FRAME_DIM], extra_args["model_options"])


_DIM_FIX = ("context windows over dimension {dim} of the latent: RhymeFlow supports context windows over latent frames "
            "only (dim 2 of a video latent, what WanContextWindowsManual sets); set dim to 2 on ContextWindowsManual.")


def to_video(view: WindowView | None, positions) -> set[int]:
    """Frame positions of a model call (in its window, if any) as whole-video frame indices."""
    return set(positions) if view is None else {view.frames[p] for p in positions}
