"""The run report: what one RhymeFlow sampling run did, in one typed record, and the one hook that delivers it.

A `RunReport` is created with each run (`RhymeFlowRun`), filled by the sampling loop (schedule,
keyframes, step times) and by the diffusion-model wrapper (passes and rows, counted inside the
model call), closed when the run ends (cache placement and size) and then handed to every
observer. Observers subscribe with `observe(fn)` (a context manager) or `add_observer(fn)`;
the schedule view's report event, the demo, the benchmark, the fidelity harness and the tests
all read reports this way and nothing else of a run.
"""
from __future__ import annotations

import contextlib
import statistics
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .compat import log

_calls_lock = threading.Lock()   # what model calls add to a report (RunReport.count_call, .warn)


@dataclass
class RunReport:
    steps: int = 0
    frames: int = 0
    completed: bool = False                 # False when the run was interrupted or failed
    preset: str = "custom"
    solver: str = ""
    warmup_steps: int = 0                   # the schedule the run used (a preset resolved for its step count)
    full_passes: int = 0                    # steps the schedule runs as full passes (warm-up and rhythmic points)
    active_passes: int = 0                  # steps that compute only the keyframes
    refresh_budget: float = 0.0             # partial passes (docs/algorithm.md §11); 0: the paper's active passes
    refreshed: list[list[int]] = field(default_factory=list)    # with a budget, per step: the non-keyframes it refreshed
    keyframes: list[int] = field(default_factory=list)
    conditioned_frames: list[int] = field(default_factory=list)   # frames an image or noise mask fixes (always keyframes)
    # Counted inside the diffusion model, by what each call computed: "full" (stock forward),
    # "record" (full pass that fills the cache), "active". CFG may batch cond/uncond into one call or not.
    model_calls: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)           # video-token query rows through the blocks, by pass kind
    cache_device: str | None = None         # where the context cache lived (None: nothing was cached)
    cache_peak_bytes: int = 0
    sampler_seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)     # each step: model call and solver, previews excluded
    estimated_dense_seconds: float = 0.0    # steps x the median full step of this run
    seconds_saved: float = 0.0              # negative when RhymeFlow was slower
    source: str | None = None               # the node that ran it (its unique id), when a node did
    # What the run could not honour or found pointless (a step cache that never acts, a patch the
    # active pass bypasses, too few steps): each said once in the log and kept here, keyed by topic.
    warnings: dict[str, str] = field(default_factory=dict)
    schedule: Any = field(default=None, repr=False)    # the resolved ScheduleSettings
    keyframe_spec: Any = field(default=None, repr=False)  # the KeyframeSpec asked for

    @property
    def refreshes(self) -> int:
        """Non-keyframe refreshes in the run's partial passes (frames, summed over the active passes)."""
        return sum(map(len, self.refreshed))

    def count_call(self, kind: str, rows: int = 0) -> None:
        with _calls_lock:   # device threads of a MultiGPU CFG split count at once (docs/multi_gpu.md)
            self.model_calls[kind] = self.model_calls.get(kind, 0) + 1
            if rows:
                self.rows[kind] = self.rows.get(kind, 0) + rows

    def warn(self, topic: str, message: str) -> None:
        """Say `message` once per run (the first time `topic` comes up): in the log and in this report."""
        with _calls_lock:
            if topic in self.warnings:
                return
            self.warnings[topic] = message
        log.warning("RhymeFlow: %s", message)

    def time_steps(self, seconds: list[float], full_step: list[bool]) -> None:
        """Per-step times, and the dense estimate: every step at the median full step of this very run."""
        self.step_seconds = list(seconds)
        full = [t for t, is_full in zip(seconds, full_step, strict=True) if is_full]
        self.estimated_dense_seconds = len(seconds) * statistics.median(full) if full else 0.0
        self.seconds_saved = self.estimated_dense_seconds - sum(seconds)

    def to_json(self) -> dict:
        """Plain values only (the browser event, report.json files)."""
        return {k: v for k, v in asdict(self).items() if k not in ("schedule", "keyframe_spec")}


Observer = Callable[[RunReport], None]
_observers: dict[object, Observer] = {}
_lock = threading.Lock()


def add_observer(fn: Observer, key: object = None) -> object:
    """Call `fn(report)` after every run; a second observer with the same `key` replaces the first
    (a module imported twice registers once). Returns the key for `remove_observer`."""
    key = fn if key is None else key
    with _lock:
        _observers[key] = fn
    return key


def remove_observer(key: object) -> None:
    with _lock:
        _observers.pop(key, None)


@contextlib.contextmanager
def observe(fn: Observer | None = None):
    """Collect the reports of the runs that close inside the block: `with observe() as reports: ...`."""
    reports: list[RunReport] = []
    key = add_observer(fn or reports.append, key=object())
    try:
        yield reports
    finally:
        remove_observer(key)


def deliver(report: RunReport) -> None:
    """Log a one-line summary and hand the report to every observer; an observer's failure never fails the run."""
    if report.completed:
        log.info("RhymeFlow: %d steps, %d full / %d active passes, keyframes %s, sampler %.2f s, cache peak %.1f MB",
                 report.steps, report.full_passes, report.active_passes, report.keyframes, report.sampler_seconds,
                 report.cache_peak_bytes / 1e6)
        if report.refresh_budget:
            log.info("RhymeFlow: partial passes (refresh_budget %g) refreshed %d non-keyframe frames over %d active passes",
                     report.refresh_budget, report.refreshes, report.active_passes)
    with _lock:
        observers = list(_observers.values())
    for fn in observers:
        try:
            fn(report)
        except Exception:
            log.warning("RhymeFlow: a run-report observer failed", exc_info=True)
