"""Recording and active passes run compiled when the user compiled the model's blocks (docs/compile.md).

Compiling each block (KJNodes' Wan compile node, "compile_transformer_blocks_only") puts
`torch.compile(block)` in place of every block while the model runs. The stock forward calls the
compiled block; our passes call the block's parts (`self_attn.q`, `ffn`, ...) and would run eager.
So each adapter writes its block math as plain pass functions of the block and tensors, and calls
them through `pass_function(block, fn)`: for a compiled block, `fn` compiled with that block's own
settings (backend, mode, options, dynamic, fullgraph); otherwise `fn` as is. The cache's store and
load stay outside these functions, in eager Python.

The compiled function is made once per (compiled block, pass function) and kept as long as the
compiled block lives, so sampling steps reuse it; torch's own cache on the function's code decides
when to recompile (measured in docs/compile.md).
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from . import compat

# compiled block -> {pass function: that function compiled with the block's settings}
_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def pass_function(block: torch.nn.Module, fn: Callable) -> tuple[torch.nn.Module, Callable]:
    """(the block's own module, `fn` to call with it): compiled like the block when the user compiled it."""
    module, settings = compat.compiled_module(block)
    if settings is None:
        return block, fn
    per_block = _COMPILED.setdefault(block, {})
    if fn not in per_block:
        per_block[fn] = settings(fn)
    return module, per_block[fn]
