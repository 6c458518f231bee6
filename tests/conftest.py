"""Bootstraps the real ComfyUI host for the tests (COMFYUI_PATH, else the tree `make test` set up)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _comfy_root() -> Path:
    env = os.environ.get("COMFYUI_PATH")
    if env:
        return Path(env).resolve()
    marker = ROOT / ".host" / "comfyui_path"
    if marker.exists():
        return Path(marker.read_text().strip())
    raise RuntimeError("No ComfyUI host: run `make test` (sets one up) or set COMFYUI_PATH.")


COMFY_ROOT = _comfy_root()
# The host first: ComfyUI's `nodes` module must win over this pack's `nodes/` folder.
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(COMFY_ROOT))

import comfy.cli_args  # noqa: E402
import utils.extra_config  # noqa: E402,F401  as main.py: before `nodes` puts comfy/ (and comfy/utils.py) first on sys.path

comfy.cli_args.args.cpu = True  # before comfy.model_management is imported (comfyui-host.md §6)
comfy.cli_args.args.disable_smart_memory = True

# Bind ComfyUI's top-level `nodes` module now: pytest may later put this pack's root (which has a
# `nodes/` package) ahead of the host on sys.path while probing the root __init__.py.
import nodes as _comfy_nodes  # noqa: E402

assert hasattr(_comfy_nodes, "NODE_CLASS_MAPPINGS"), f"`nodes` is not ComfyUI's: {_comfy_nodes.__file__}"
