"""Settings carried by a patched MODEL, and the state of one sampling run.

`ProjectionConfig` is immutable and lives in the MODEL's transformer_options. The OUTER_SAMPLE
wrapper swaps in a fresh `RhymeFlowRun` for each sampling run (the core EasyCache pattern),
so nothing survives a run and clones of the MODEL never share state.

A run may be used by several threads at once: ComfyUI's MultiGPU CFG split calls the model
clones of each device from their own threads, all with this run (docs/multi_gpu.md). The plan is
written by the sampling loop between steps only; the caches are per device, and what the model
calls add to (memo, report) is guarded by locks.
"""
from __future__ import annotations

import enum
import threading
from dataclasses import dataclass

import torch

from . import compat
from .cache import CACHE_DEVICES, ContextCache, DeviceCaches
from .errors import RhymeFlowInputError
from .pass_outputs import PassOutputs
from .report import RunReport

KEY = "rhymeflow"

FULL, RECORD, ACTIVE = "full", "record", "active"   # what a model call computes


class ContextMode(str, enum.Enum):
    """What an active pass knows of the non-keyframes (docs/algorithm.md §4)."""
    KV_CACHE = "kv_cache"            # their roped keys/values from the last rhythmic point
    HIDDEN_CACHE = "hidden_cache"    # their block inputs, re-modulated and re-projected every pass (the reference code)
    KEYFRAME_ONLY = "keyframe_only"  # nothing: keyframes attend to each other only (the paper's "w/o projection")

    def __str__(self) -> str:   # the value in messages and logs, on every Python version
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


CONTEXT_MODES = tuple(m.value for m in ContextMode)


@dataclass(frozen=True)
class ProjectionConfig:
    context: ContextMode = ContextMode.KV_CACHE
    cache_device: str = "auto"
    adapter: str = "wan"

    def __post_init__(self):
        if self.context not in CONTEXT_MODES:
            raise RhymeFlowInputError(f"unknown context mode {self.context!r}; use one of {', '.join(CONTEXT_MODES)}.")
        if self.cache_device not in CACHE_DEVICES:
            raise RhymeFlowInputError(f"unknown cache device {self.cache_device!r}; use one of {', '.join(CACHE_DEVICES)}.")
        object.__setattr__(self, "context", ContextMode(self.context))


@dataclass(frozen=True)
class PassPlan:
    """What the next model call should compute."""
    kind: str                                  # FULL (stock forward), RECORD (full + cache), ACTIVE
    keyframes: tuple[int, ...] = ()
    # ACTIVE only: non-keyframes that are queries too (a partial pass, docs/algorithm.md §11); their fresh K/V
    # overwrite their cached rows.
    refresh: tuple[int, ...] = ()


class RhymeFlowRun:
    def __init__(self, config: ProjectionConfig, adapter):
        self.config = config
        self.adapter = adapter
        self.plan: PassPlan | None = None
        self.caches = DeviceCaches(config.cache_device)   # one per compute device (MultiGPU CFG split)
        self.memo: dict = {}                   # index tensors / RoPE rows reused across calls
        self._memo_lock = threading.Lock()
        self.report = RunReport()
        # Frames the model's own inputs condition (e.g. Wan I2V's concat mask), seen on the first call.
        self.conditioned_frames: set[int] = set()
        self.inputs_seen = False
        self.in_warmup = True                  # step caches act only in the warm-up (step_caches.py)
        self.step_caches = None                # the MODEL's step caches, found when the run starts (step_caches.py)
        self.outputs = PassOutputs()           # this step's and the rhythmic point's outputs (pass_outputs.py)

    def set_plan(self, kind: str, keyframes=(), refresh=()) -> None:
        self.plan = PassPlan(kind, tuple(keyframes), tuple(refresh))

    @property
    def cache(self) -> ContextCache:
        """The cache of the first device that asked: the only one unless a MultiGPU split runs."""
        return self.caches.first

    def cache_for(self, to: dict, device: torch.device) -> ContextCache:
        """The cache of the device this call computes on (`to`: its transformer_options; `device`: its input's)."""
        return self.caches.get(compat.call_device(to, device))

    def row_index(self, name, build, device: torch.device):
        key = (name, device)
        with self._memo_lock:
            if key in self.memo:
                return self.memo[key]
        value = build()   # outside the lock: two devices build their own rows at once
        with self._memo_lock:
            return self.memo.setdefault(key, value)

    def close(self) -> RunReport:
        """Free the caches and everything memoised; the report gets the caches' placement and total size."""
        report = self.report
        report.cache_peak_bytes = self.caches.peak_bytes()
        report.cache_device = self.caches.devices()
        self.caches.clear()
        self.memo.clear()
        self.outputs.clear()
        self.plan = None
        return report
