"""The all-in-one RhymeFlow KSampler, assembled from the same pieces as the node chain.

model -> apply_trajectory_projection -> RhymeFlowSamplerObject -> ComfyUI's own
comfy.sample.sample_custom (CFGGuider inside), with the sigmas KSampler itself computes for the
scheduler, solver and `denoise`. Only the noise/latent preparation of the host's
common_ksampler is repeated here, because sample_custom expects it done.
"""
from __future__ import annotations

import torch

from . import compat
from .patch import apply_trajectory_projection
from .sampler_object import RhymeFlowSamplerObject
from .sampling_loop import SamplerSettings


def scheduler_sigmas(model, solver: str, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """KSampler's own sigmas for this solver: with denoise < 1 the last `steps` steps of a longer
    schedule, and for uni_pc / uni_pc_bh2 the penultimate sigma dropped, as KSampler does."""
    import comfy.samplers

    return comfy.samplers.KSampler(model, steps, "cpu", sampler=solver, scheduler=scheduler, denoise=denoise).sigmas


def sample_latent(model, seed: int, steps: int, cfg: float, scheduler: str, positive, negative, latent: dict,
                  denoise: float, settings: SamplerSettings, preset: str, context: str, cache_device: str,
                  source: str | None = None) -> dict:
    """What KSampler does, with RhymeFlow sampling: returns the sampled LATENT dict."""
    import comfy.sample
    import comfy.utils
    import latent_preview

    patched = apply_trajectory_projection(model, context, cache_device)
    sampler = RhymeFlowSamplerObject(settings, preset, source)
    sigmas = scheduler_sigmas(patched, settings.solver, scheduler, steps, denoise)
    out = {k: v for k, v in latent.items() if k not in ("downscale_ratio_spacial", "downscale_ratio_temporal")}
    if len(sigmas) < 2:  # denoise 0: nothing to sample, like KSampler
        return out
    latent_image = compat.fix_empty_latent(patched, latent)
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index"))
    callback = latent_preview.prepare_callback(patched, len(sigmas) - 1)
    out["samples"] = comfy.sample.sample_custom(
        patched, noise, cfg, sampler, sigmas, positive, negative, latent_image, noise_mask=latent.get("noise_mask"),
        callback=callback, disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed)
    return out
