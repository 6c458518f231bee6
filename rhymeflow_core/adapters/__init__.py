"""Adapter registry: the model families RhymeFlow can run active passes on."""
from __future__ import annotations

from ..errors import RhymeFlowInputError
from .base import ActivePassAdapter
from .hunyuan import HunyuanVideoAdapter
from .ltxv import LTXVAdapter
from .wan import WanAdapter

ADAPTERS: tuple[type[ActivePassAdapter], ...] = (WanAdapter, HunyuanVideoAdapter, LTXVAdapter)


def adapter_for(model_patcher) -> ActivePassAdapter:
    """The adapter for a ComfyUI MODEL, or a clear error naming what is supported."""
    diffusion_model = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    for adapter in ADAPTERS:
        if diffusion_model is not None and adapter.matches(diffusion_model):
            adapter.check_model(model_patcher)
            return adapter()
    base = getattr(model_patcher, "model", model_patcher)
    found = type(base).__name__
    if diffusion_model is not None:
        found += f" (diffusion model {type(diffusion_model).__name__})"
    supported = "; ".join(a.supported for a in ADAPTERS)
    raise RhymeFlowInputError(
        f"model class {found} is not supported. Supported: {supported}. "
        "Load a supported model, or sample this one without RhymeFlow.")
