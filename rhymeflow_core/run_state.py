"""Settings carried by a patched MODEL, and the state of one sampling run.

`ProjectionConfig` is immutable and lives in the MODEL's transformer_options. The OUTER_SAMPLE
wrapper swaps in a fresh `RhymeFlowRun` for each sampling run (the core EasyCache pattern),
so nothing survives a run and clones of the MODEL never share state.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from .cache import ContextCache

KEY = "rhymeflow"
CONTEXT_MODES = ("kv_cache", "hidden_cache", "keyframe_only")

FULL, RECORD, ACTIVE = "full", "record", "active"


@dataclass(frozen=True)
class ProjectionConfig:
    context: str = "kv_cache"
    cache_device: str = "auto"
    adapter: str = "wan"
    # Written after each run, read by tools and tests; never read by sampling itself.
    reports: list = field(default_factory=list, compare=False, hash=False)


@dataclass(frozen=True)
class PassPlan:
    """What the next model call should compute."""
    kind: str                                  # FULL (stock forward), RECORD (full + cache), ACTIVE
    keyframes: tuple[int, ...] = ()


class RhymeFlowRun:
    def __init__(self, config: ProjectionConfig, adapter):
        self.config = config
        self.adapter = adapter
        self.plan: PassPlan | None = None
        self.cache = ContextCache(config.cache_device)
        self.calls: Counter = Counter()       # model calls seen inside the diffusion model, by kind
        self.memo: dict = {}                   # index tensors / RoPE rows reused across calls
        self.report: dict = {}
        # Frames the model's own inputs condition (e.g. Wan I2V's concat mask), seen on the first call.
        self.conditioned_frames: set[int] = set()
        self.inputs_seen = False

    def set_plan(self, kind: str, keyframes=()) -> None:
        self.plan = PassPlan(kind, tuple(keyframes))

    def row_index(self, name: str, build, device: torch.device):
        key = (name, device)
        if key not in self.memo:
            self.memo[key] = build()
        return self.memo[key]

    def close(self) -> None:
        self.report.setdefault("cache_peak_bytes", self.cache.peak_bytes)
        self.report["model_calls"] = dict(self.calls)
        self.cache.clear()
        self.memo.clear()
        self.plan = None
