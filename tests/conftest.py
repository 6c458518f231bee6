"""Bootstraps the real ComfyUI host for the tests (COMFYUI_PATH, else the tree `make test` set up), and
the tests' one accessor of tiny random-weight models (`tiny_model`: a plain function and a fixture)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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


def bootstrap_host() -> None:
    """Make the real host importable and configured, before anything imports comfy.model_management.
    Run once here for pytest's process, and by each child process of tests/test_parallel.py (sp_worker.py)."""
    # The host first: ComfyUI's `nodes` module must win over this pack's `nodes/` folder.
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(COMFY_ROOT))

    import comfy.cli_args
    import utils.extra_config  # noqa: F401  as main.py: before `nodes` puts comfy/ (and comfy/utils.py) first on sys.path

    # Before comfy.model_management is imported (docs/host.md §2); tools/gpu_check.sh sets
    # RHYMEFLOW_TEST_DEVICE=cuda to run tests/test_cuda.py on the GPU.
    comfy.cli_args.args.cpu = os.environ.get("RHYMEFLOW_TEST_DEVICE") != "cuda"
    comfy.cli_args.args.disable_smart_memory = True

    # One intra-op thread unless OMP_NUM_THREADS says otherwise: the tests' tensors are small, and on a shared
    # 2-core machine torch's default (a thread per core) mostly spins waiting for the other thread. Measured
    # with other jobs running: `pytest -m "not slow"` 8 min with two threads, 34 s with one; everything 25 / 5 min.
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)

    # Bind ComfyUI's top-level `nodes` module now: pytest may later put this pack's root (which has a
    # `nodes/` package) ahead of the host on sys.path while probing the root __init__.py.
    import nodes as comfy_nodes

    assert hasattr(comfy_nodes, "NODE_CLASS_MAPPINGS"), f"`nodes` is not ComfyUI's: {comfy_nodes.__file__}"


bootstrap_host()


# ---- tiny models --------------------------------------------------------------------------------

_TINY_MODELS: dict = {}


def tiny_model(family: str = "wan", variant: str | None = None, seed: int = 0, **sizes):
    """A tiny real ComfyUI MODEL of `family` (tools/tiny_models.py: wan, hunyuan, ltxv), built once per
    (family, variant, seed, sizes) and shared by every test that asks for it: tests must not mutate it
    (test_sampler checks that sampling leaves the input model untouched). For module-level helpers
    `from helpers import tiny_model`; in a test, the `tiny_model` fixture is the same function."""
    from tools import tiny_models

    key = (family, tiny_models.variant_of(family, variant), seed, tuple(sorted(sizes.items())))
    if key not in _TINY_MODELS:
        _TINY_MODELS[key] = tiny_models.load(family, key[1], seed, **sizes)
    return _TINY_MODELS[key]


@pytest.fixture(scope="session", name="tiny_model")
def tiny_model_fixture():
    """`tiny_model(family="wan", variant=None, seed=0, **sizes)`: the memoised accessor above."""
    return tiny_model
