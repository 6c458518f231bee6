"""The interface every per-model active-pass adapter implements (one file per model family)."""
from __future__ import annotations

import torch


class ActivePassAdapter:
    """Runs RECORD and ACTIVE passes for one model family.

    `forward` is called from the DIFFUSION_MODEL wrapper with the diffusion model (the nn.Module)
    and the wrapper's own arguments, and must return the model output with the stock shape.
    In an ACTIVE pass only keyframe rows of the output are meaningful; the rest are zeros.
    """

    name = "base"
    # Human-readable list of what the adapter handles, used in "unsupported model" errors.
    supported = ""

    @classmethod
    def matches(cls, diffusion_model: torch.nn.Module) -> bool:
        raise NotImplementedError

    @classmethod
    def check_model(cls, model_patcher) -> None:
        """Raise RhymeFlowInputError if this variant of the family is not supported yet."""

    def conditioned_frames(self, diffusion_model, args: tuple, kwargs: dict) -> set[int]:
        """Latent frames the model's inputs condition on (always keyframes); read on a run's first call."""
        return set()

    def forward(self, diffusion_model, run, transformer_options: dict, args: tuple, kwargs: dict) -> torch.Tensor:
        raise NotImplementedError
