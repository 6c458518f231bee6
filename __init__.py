"""ComfyUI-RhymeFlow: training-free frame-decoupled sampling for DiT video models (arXiv 2606.06309)."""
from .nodes import comfy_entrypoint

WEB_DIRECTORY = "./web"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
