"""ComfyUI-RhymeFlow: training-free frame-decoupled sampling for DiT video models (arXiv 2606.06309)."""

WEB_DIRECTORY = "./web"

if __package__:  # loaded by ComfyUI as a package; pytest may also import this file bare while probing the tree
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
