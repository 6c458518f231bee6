"""Everything that depends on the ComfyUI version lives here (docs/host.md §5).

Tested against ComfyUI 0.3.75 and read against v0.33. `rhymeflow_core` must stay importable
without `comfy_api` (a benchmark on a bare GPU box carries only `comfy/`), so the V3 node API
is imported lazily by `v3_api()`.
"""
from __future__ import annotations

import logging

import comfy.model_management as model_management
import comfy.patcher_extension as patcher_extension
import torch
from comfy.ldm.flux.math import apply_rope1 as _apply_rope1
from comfy.ldm.modules.attention import optimized_attention

log = logging.getLogger("RhymeFlow")

WrappersMP = patcher_extension.WrappersMP
apply_rope1 = _apply_rope1
attention = optimized_attention


def v3_api():
    """(ComfyExtension, io) of the V3 node API; `comfy_api.latest` in 0.3.75 and v0.33+."""
    from comfy_api.latest import ComfyExtension, io
    return ComfyExtension, io


def throw_if_interrupted() -> None:
    model_management.throw_exception_if_processing_interrupted()


def cast_to(weight, dtype, device):
    return model_management.cast_to(weight, dtype=dtype, device=device)


def transformer_options_of(args: tuple, kwargs: dict) -> dict:
    """Find `transformer_options` in a DIFFUSION_MODEL wrapper's arguments.

    Wan passes it positionally as the last argument; kwargs and second-to-last are fallbacks
    for other signatures (the same search core EasyCache does).
    """
    if args and isinstance(args[-1], dict):
        return args[-1]
    if isinstance(kwargs.get("transformer_options"), dict):
        return kwargs["transformer_options"]
    if len(args) >= 2 and isinstance(args[-2], dict):
        return args[-2]
    raise RuntimeError("RhymeFlow: could not find transformer_options in the model call")


def unipc_solver(variant: str):
    """A host UniPC instance used only for its update formula (comfy/extra_samplers/uni_pc.py)."""
    from comfy.extra_samplers import uni_pc
    return uni_pc.UniPC(None, uni_pc.SigmaConvert(), predict_x0=True, thresholding=False, variant=variant)


def unipc_update(solver, x, history, t_history, t, order, x_t=None, model_t=None):
    """One host UniPC update: predictor only (model_t None) or corrector with a known model output."""
    solver.model_fn = lambda *_: model_t  # the update asks for the model output at t; we already have it
    return solver.multistep_uni_pc_update(x, history, t_history, t, order, x_t=x_t, use_corrector=model_t is not None)


def model_sampling_of(sampler_model):
    """model_sampling behind the KSamplerX0Inpaint -> guider -> BaseModel chain a KSAMPLER gets."""
    return sampler_model.inner_model.inner_model.model_sampling


def free_memory(device) -> int:
    return model_management.get_free_memory(device)


def unwrapped_forward(diffusion_model, *args, **kwargs):
    """The diffusion model's forward without its DIFFUSION_MODEL wrappers (ours among them): `_forward`,
    a private method, in 0.3.75 and v0.33 alike (WanModel, HunyuanVideo, LTXVModel)."""
    return diffusion_model._forward(*args, **kwargs)


def hunyuan_text_first(hunyuan_model) -> bool:
    """Whether HunyuanVideo orders its joint sequence [text, image] (v0.33+) or [image, text] (0.3.x).

    0.3.x builds the double blocks with `flipped_img_txt=True` (image first); newer ComfyUI
    dropped the flag and always puts text first, in the RoPE ids, the mask and the single blocks.
    """
    blocks = hunyuan_model.double_blocks
    return not (len(blocks) and getattr(blocks[0], "flipped_img_txt", False))


def ltxv_pe_rows(pe, rows):
    """Rows (token indices) of an LTXV RoPE table: a tensor [B, 1, L, ...] on 0.3.x, a
    (rotation_matrix [B, L, heads, ...], split_pe) pair on newer ComfyUI."""
    if isinstance(pe, tuple):
        return (pe[0].index_select(1, rows),) + tuple(pe[1:])
    return pe.index_select(2, rows)


def ltxv_rope(t, pe):
    """LTXV's RoPE on [B, L, inner] queries/keys (norms span all heads, so the whole row is rotated)."""
    if isinstance(pe, tuple):
        from comfy.ldm.lightricks.model import apply_rotary_emb
        return apply_rotary_emb(t, pe)
    return apply_rope1(t.unsqueeze(1), pe).squeeze(1)


def ltxv_timestep_embedding(ltxv_model, timestep, batch: int, dtype):
    """(per-block AdaLN vector, final-layer embedding) for LTXV, one row per token or one per sample."""
    if hasattr(ltxv_model, "_prepare_timestep"):  # newer ComfyUI
        vec, embedded = ltxv_model._prepare_timestep(timestep, batch, dtype)[:2]
        return vec, embedded
    vec, embedded = ltxv_model.adaln_single((timestep * 1000.0).flatten(), {"resolution": None, "aspect_ratio": None},
                                            batch_size=batch, hidden_dtype=dtype)
    return vec.view(batch, -1, vec.shape[-1]), embedded.view(batch, -1, embedded.shape[-1])


def prompt_server():
    """The running ComfyUI server, or None (headless runs and tests have none).

    Looked up in sys.modules rather than imported: importing `server` would build a server module
    (and its routes table) where ComfyUI did not start one.
    """
    import sys
    server = sys.modules.get("server")
    return getattr(getattr(server, "PromptServer", None), "instance", None)


def fix_empty_latent(model, latent: dict):
    """comfy.sample.fix_empty_latent_channels for a LATENT dict, as the host's common_ksampler calls it.

    v0.33+ passes the latent's own downscale ratios (keys absent in 0.3.75 latents); 0.3.75's
    function takes only (model, samples).
    """
    import comfy.sample
    ratios = ("downscale_ratio_spacial", "downscale_ratio_temporal")
    if any(k in latent for k in ratios):
        return comfy.sample.fix_empty_latent_channels(model, latent["samples"], *(latent.get(k) for k in ratios))
    return comfy.sample.fix_empty_latent_channels(model, latent["samples"])


def call_device(transformer_options: dict, device):
    """The device a model call computes on, as the host names it.

    v0.33+ MultiGPU CFG split (comfy/samplers.py `_calc_cond_batch_multigpu`) runs each device's
    model clone in its own thread and sets `multigpu_thread_device`; without it (0.3.75, or no split)
    the call's input tensor's device. Keys the per-device context caches (cache.DeviceCaches).
    """
    return transformer_options.get("multigpu_thread_device", device)


def has_multigpu() -> bool:
    """Whether the host has core MultiGPU (`comfy.multigpu`, v0.33+; not in 0.3.75)."""
    import importlib.util
    return importlib.util.find_spec("comfy.multigpu") is not None


# ---- core context windows (comfy/context_windows.py; docs/algorithm.md §9) ------------------------

def context_window_of(transformer_options: dict):
    """The `IndexListContextWindow` this model call runs on, or None: `IndexListContextHandler.evaluate_context_windows`
    puts it into `transformer_options["context_window"]` before each window's `calc_cond_batch`."""
    return transformer_options.get("context_window")


def window_frames(window) -> tuple[list[int], list[int]]:
    """(the full latent's frame of each frame the model call sees, the frames whose outputs the host keeps).

    0.3.75: the window's `index_list`. v0.33+: `causal_window_fix` prepends the frame before the window
    (`causal_anchor_index`, output stripped), and LTXV guide frames stripped from the latent are appended
    (`guide_frames_indices`, into the guides that follow the window's `total_frames` video frames; output stripped).
    """
    kept = [int(f) for f in window.index_list]
    anchor = getattr(window, "causal_anchor_index", None)
    lead = [int(anchor)] if anchor is not None and anchor >= 0 else []
    total = int(getattr(window, "total_frames", 0) or 0)
    guides = [total + int(g) for g in getattr(window, "guide_frames_indices", None) or []]
    return lead + kept + guides, kept


def window_handler_settings(handler) -> dict:
    """The `IndexListContextHandler` settings RhymeFlow checks; `latent_retain_index_list` is v0.33+."""
    return {"dim": handler.dim, "context_length": handler.context_length, "schedule": handler.context_schedule.name,
            "latent_retain": list(getattr(handler, "latent_retain_index_list", None) or [])}


def context_windows_for(handler, frames: int, model_options: dict) -> list[list[int]]:
    """The windows' frame lists for a latent of `frames` frames (the handler's schedule function, same call in all)."""
    return [list(w) for w in handler.context_schedule.func(frames, handler, model_options)]


def windows_slice_model_conds() -> bool:
    """v0.33+ cuts 5-D model conds (c_concat, the noise mask behind TI2V-5B's per-frame timesteps) to each window
    (`get_resized_cond`, `slice_cond`); 0.3.75 passes them whole."""
    import comfy.context_windows
    return hasattr(comfy.context_windows, "slice_cond")


def output_channels(diffusion_model) -> int:
    """Channels of a diffusion model's output: Wan's `out_dim`, HunyuanVideo's and LTXVModel's `out_channels`."""
    out = getattr(diffusion_model, "out_dim", None)
    return int(out if out is not None else diffusion_model.out_channels)


def compiled_module(module):
    """(the module's own nn.Module, its torch.compile context) for a module the user compiled, else (module, None).

    `torch.compile(module)` returns an `OptimizedModule` holding the module as `_orig_mod` and the
    compile settings (backend, mode, options, dynamic, fullgraph) as `dynamo_ctx`, which wraps any
    function with those settings, as it wraps the module's own `__call__` (torch/_dynamo/eval_frame.py,
    `OptimizedModule._initialize`). The host's `set_torch_compile_wrapper` (comfy_api/torch_helpers/
    torch_compile.py), used by core TorchCompileModel and KJNodes' compile nodes, puts these in place of
    the chosen modules while the model runs. Duck-typed, so torch._dynamo is never imported here.
    """
    original, settings = getattr(module, "_orig_mod", None), getattr(module, "dynamo_ctx", None)
    if isinstance(original, torch.nn.Module) and callable(settings):
        return original, settings
    return module, None
