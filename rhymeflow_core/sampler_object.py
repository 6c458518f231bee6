"""The SAMPLER object handed to SamplerCustomAdvanced, and the checks run before sampling."""
from __future__ import annotations

import comfy.samplers

from .sampler import SamplerSettings, check_inputs, sample_rhymeflow


class RhymeFlowKSampler(comfy.samplers.KSAMPLER):
    """A KSAMPLER that carries its settings where the OUTER_SAMPLE wrapper can check them early."""

    def __init__(self, settings: SamplerSettings):
        super().__init__(sample_rhymeflow, extra_options={"settings": settings})
        self.settings = settings


def early_check(args: tuple, kwargs: dict) -> None:
    """OUTER_SAMPLE arguments: (noise, latent_image, sampler, sigmas, ...)."""
    sampler = args[2] if len(args) > 2 else kwargs.get("sampler")
    sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
    latent = args[1] if len(args) > 1 else kwargs.get("latent_image")
    if isinstance(sampler, RhymeFlowKSampler) and sigmas is not None and latent is not None:
        check_inputs(sampler.settings, latent.shape, sigmas)
