"""The SAMPLER object handed to SamplerCustomAdvanced, and the checks run before sampling."""
from __future__ import annotations

import statistics
import time
from dataclasses import replace

import comfy.samplers

from . import compat
from .presets import CUSTOM, resolve_schedule
from .sampler import SamplerSettings, check_inputs, find_run, sample_rhymeflow
from .schedule import ACTIVE, build_schedule


def settings_for_steps(settings: SamplerSettings, preset: str, steps: int) -> SamplerSettings:
    """The settings a run of `steps` steps uses: a preset's schedule is known only once the sigmas are."""
    return replace(settings, schedule=resolve_schedule(preset, settings.schedule, steps))


class RhymeFlowKSampler(comfy.samplers.KSAMPLER):
    """A KSAMPLER that carries its settings where the OUTER_SAMPLE wrapper can check them early.

    `on_report(summary)`, if given, is called after every completed run with the run's report plus
    per-step timings (the nodes use it to show the result on the node in the browser).
    """

    def __init__(self, settings: SamplerSettings, preset: str = CUSTOM, on_report=None):
        resolve_schedule(preset, settings.schedule, 50)  # an unknown preset fails now, not at sampling time
        super().__init__(_sample, extra_options={"settings": settings, "preset": preset, "on_report": on_report})
        self.settings = settings
        self.preset = preset

    def settings_for(self, steps: int) -> SamplerSettings:
        return settings_for_steps(self.settings, self.preset, steps)


class StepClock:
    """A sampler callback that also times each step (model call and solver), leaving the host's callback out."""

    def __init__(self, callback=None):
        self.callback = callback
        self.seconds: list[float] = []
        self._last = time.perf_counter()

    def __call__(self, info: dict) -> None:
        x = info["x"]
        if x.is_cuda:  # kernels run asynchronously: wait for the step before reading the clock
            import torch
            torch.cuda.synchronize(x.device)
        self.seconds.append(time.perf_counter() - self._last)
        if self.callback is not None:
            self.callback(info)  # previews decode here; not part of the step's cost
        self._last = time.perf_counter()


def run_summary(report: dict, settings: SamplerSettings, seconds: list[float], frames: int) -> dict:
    """The run's report plus an estimate of the time saved against dense sampling of the same steps.

    Dense would run every step as a full pass; the median full step (warm-up and rhythmic points)
    of this very run stands for one, so the estimate needs no second run.
    """
    steps = report["steps"]
    schedule = build_schedule(steps, settings.schedule)
    full = [t for i, t in enumerate(seconds) if schedule.role(i) != ACTIVE]
    dense = steps * statistics.median(full) if full else 0.0
    spent = sum(seconds)
    return {
        "steps": steps, "frames": frames, "keyframes": [int(f) for f in report["keyframes"]],
        "full_passes": report["full_steps"], "active_passes": report["active_steps"],
        "sampler_seconds": report["sampler_seconds"], "step_seconds": spent,
        "estimated_dense_seconds": dense, "seconds_saved": dense - spent,
        "schedule": settings.schedule,
    }


def _sample(model, x, sigmas, extra_args=None, callback=None, disable=None, settings: SamplerSettings = None,
            preset: str = CUSTOM, on_report=None):
    """KSAMPLER's sampler function: resolve the preset for this many steps, sample, report."""
    settings = settings_for_steps(settings or SamplerSettings(), preset, len(sigmas) - 1)
    if on_report is None:
        return sample_rhymeflow(model, x, sigmas, extra_args, callback, disable, settings=settings)
    clock = StepClock(callback)
    samples = sample_rhymeflow(model, x, sigmas, extra_args, clock, disable, settings=settings)
    try:
        on_report(run_summary(find_run(extra_args).report, settings, clock.seconds, x.shape[2]))
    except Exception:  # a display problem must not throw away a finished sampling run
        compat.log.warning("RhymeFlow: could not send the run report to the browser", exc_info=True)
    return samples


def early_check(args: tuple, kwargs: dict) -> None:
    """OUTER_SAMPLE arguments: (noise, latent_image, sampler, sigmas, ...)."""
    sampler = args[2] if len(args) > 2 else kwargs.get("sampler")
    sigmas = args[3] if len(args) > 3 else kwargs.get("sigmas")
    latent = args[1] if len(args) > 1 else kwargs.get("latent_image")
    if isinstance(sampler, RhymeFlowKSampler) and sigmas is not None and latent is not None:
        check_inputs(sampler.settings_for(len(sigmas) - 1), latent.shape, sigmas)
