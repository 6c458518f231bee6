"""The RhymeFlow sampling loop (docs/algorithm.md §1), written as a k-diffusion-style sampler function.

Per step i, by the schedule's role:
  warm-up   full pass; every frame advanced by the keyframe solver; keyframes are chosen at the
            last warm-up step from the CFG-combined clean prediction;
  rhythmic  full pass that also records the context cache; keyframes advance one solver step,
            non-keyframes jump (Euler, in sigma) straight to the end of the group;
  active    active pass on the keyframes; non-keyframes sit on their projected trajectory
            (linear in sigma between the rhythmic point and the group end) and are not updated.

Two settings change this, both off by default (docs/algorithm.md §10): `nonkey_solver="multistep"`
advances non-keyframes with the keyframe solver's multistep update on their own coarse schedule
(nonkey_solver.py) instead of the Euler jump, and `warmup_mode="adaptive"` ends the warm-up early
once the clean prediction has settled (warmup.py), rebuilding the schedule from there.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import torch
from tqdm.auto import trange

from . import compat, context_windows
from .errors import RhymeFlowInputError
from .keyframes import KeyframeSpec, conditioned_frames, select_keyframes
from .nonkey_solver import EULER_JUMP, NONKEY_SOLVERS, euler_move, make_nonkey_solver
from .report import RunReport
from .run_state import ACTIVE, FULL, KEY, RECORD, RhymeFlowRun
from .schedule import RHYTHMIC, WARMUP, Schedule, ScheduleSettings, build_schedule, few_steps_warnings
from .solvers import SOLVERS, make_solver
from .warmup import DEFAULT_SETTLE, FIXED, MIN_WARMUP, WARMUP_MODES, WarmupEnd


@dataclass(frozen=True)
class SamplerSettings:
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    keyframes: KeyframeSpec = field(default_factory=KeyframeSpec)
    solver: str = "uni_pc"
    nonkey_solver: str = EULER_JUMP   # how non-keyframes advance per group (nonkey_solver.py); the paper's by default
    warmup_mode: str = FIXED          # fixed: the schedule's warm-up; adaptive: end it once x0 settles (warmup.py)
    warmup_settle: float = DEFAULT_SETTLE

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise RhymeFlowInputError(f"unknown keyframe solver {self.solver!r}; use one of {', '.join(SOLVERS)}.")
        if self.nonkey_solver not in NONKEY_SOLVERS:
            raise RhymeFlowInputError(
                f"unknown non-keyframe solver {self.nonkey_solver!r}; use euler_jump (the paper's one Euler jump per "
                "group) or multistep (the keyframe solver's update on the non-keyframes' own steps).")
        if self.warmup_mode not in WARMUP_MODES:
            raise RhymeFlowInputError(
                f"unknown warm-up mode {self.warmup_mode!r}; use fixed (warmup_steps / the preset's warm-up) or "
                "adaptive (end it early once the clean prediction settles).")
        if not 0 < self.warmup_settle <= 100:
            raise RhymeFlowInputError(
                f"warmup_settle is {self.warmup_settle}; it must be above 0 and at most 100 (relative change of the clean "
                f"prediction per unit of sigma; {DEFAULT_SETTLE} is the measured default, docs/algorithm.md §10).")


def check_inputs(settings: SamplerSettings, latent_shape, sigmas: torch.Tensor) -> None:
    """Everything that can be refused before the model is loaded or a step is taken."""
    if len(latent_shape) != 5:
        raise RhymeFlowInputError(
            f"the latent has shape {tuple(latent_shape)}, not a video latent [batch, channels, frames, height, width]. "
            "Use a video latent (EmptyHunyuanLatentVideo / Wan latent nodes), or a normal sampler for images.")
    settings.keyframes.check_frames(latent_shape[2])
    steps = len(sigmas) - 1
    if steps < 2:
        raise RhymeFlowInputError(f"{steps} sampling step(s) given; RhymeFlow needs at least 2. Raise `steps` on the scheduler node.")
    if settings.schedule.warmup_steps >= steps:
        raise RhymeFlowInputError(
            f"warm-up of {settings.schedule.warmup_steps} steps leaves nothing to accelerate in {steps} steps; "
            f"set warmup_steps below {steps} (the release setting is 10 of 50, about 20%).")
    if bool((sigmas[:-1] <= 0).any()) or bool((sigmas[1:] > sigmas[:-1]).any()):
        raise RhymeFlowInputError("the SIGMAS must decrease and stay above 0 until the last one; use a standard scheduler node.")


def find_run(extra_args: dict) -> RhymeFlowRun:
    run = extra_args.get("model_options", {}).get("transformer_options", {}).get(KEY)
    if not isinstance(run, RhymeFlowRun):
        raise RhymeFlowInputError(
            "RhymeFlowSampler needs a MODEL patched by the RhymeFlowTrajectoryProjection node. "
            "Put RhymeFlowTrajectoryProjection between your model loader and the guider (CFGGuider / BasicGuider).")
    return run


def _frames(t: torch.Tensor, frames) -> torch.Tensor:
    return t[:, :, frames]


def _full_pass_plan(schedule: Schedule, i: int, keyframes: list[int], nonkey: list[int]) -> tuple:
    """(pass kind, keyframes) of a warm-up step or rhythmic point. A rhythmic point records the context
    cache when its group has active passes to read it."""
    if schedule.role(i) == WARMUP:
        return FULL, ()
    return (RECORD if schedule.group_at(i).span > 1 and nonkey else FULL), keyframes


def _record_schedule(report: RunReport, schedule: Schedule, settings: ScheduleSettings) -> None:
    """The schedule the run uses (again when an adaptive warm-up ended early: the report draws what ran)."""
    report.full_passes, report.active_passes, report.warmup_steps = schedule.full_passes, schedule.active_passes, schedule.warmup
    report.schedule = replace(settings, warmup_steps=schedule.warmup) if report.warmup_mode != FIXED else settings


def _start_report(report: RunReport, settings: SamplerSettings, steps: int, frames: int, schedule: Schedule) -> None:
    report.steps, report.frames, report.solver = steps, frames, settings.solver
    report.nonkey_solver, report.warmup_mode, report.warmup_bound = settings.nonkey_solver, settings.warmup_mode, schedule.warmup
    report.keyframe_spec = settings.keyframes
    _record_schedule(report, schedule, settings.schedule)
    for topic, message in few_steps_warnings(schedule).items():
        report.warn(topic, message)
    if settings.warmup_mode != FIXED and schedule.warmup <= MIN_WARMUP:
        report.warn("adaptive_warmup", f"the warm-up bound is {schedule.warmup} step(s): an adaptive warm-up never ends "
                    f"before step {MIN_WARMUP}, so it runs as fixed. Raise warmup_steps (or the step count) to let it adapt.")
    report.keyframes = list(range(frames))


class _StepClock:
    """Times each step (model call and solver), not the host's callback (previews decode there)."""

    def __init__(self):
        self.seconds: list[float] = []
        self._last = time.perf_counter()

    def lap(self, x: torch.Tensor) -> None:
        if x.is_cuda:  # kernels run asynchronously: wait for the step before reading the clock
            torch.cuda.synchronize(x.device)
        self.seconds.append(time.perf_counter() - self._last)

    def restart(self) -> None:
        self._last = time.perf_counter()


@torch.no_grad()
def sample_rhymeflow(model, x, sigmas, extra_args=None, callback=None, disable=None, settings: SamplerSettings = None):
    extra_args = {} if extra_args is None else extra_args
    settings = settings or SamplerSettings()
    run = find_run(extra_args)
    check_inputs(settings, x.shape, sigmas)
    context_windows.windows_for(extra_args, x.shape)  # refuses windows RhymeFlow cannot follow
    steps, frames = len(sigmas) - 1, x.shape[2]
    schedule = build_schedule(steps, settings.schedule)
    solver = make_solver(settings.solver, sigmas)
    nonkey_solver = make_nonkey_solver(settings.nonkey_solver, settings.solver, sigmas, schedule, solver)
    warmup_end = WarmupEnd(settings.warmup_mode, settings.warmup_settle, sigmas)
    report = run.report
    _start_report(report, settings, steps, frames, schedule)
    s_in = x.new_ones([x.shape[0]])
    started = time.perf_counter()
    clock = _StepClock()

    keyframes = list(range(frames))   # every frame is advanced by the solver until detection
    nonkey: list[int] = []
    # The current group: its rhythmic point (latent, sigma), the non-keyframes' endpoint, and the clean
    # prediction whose Euler moves from the rhythmic point are the projected trajectory (nonkey_solver.py).
    z_start = line_x0 = z_end = sigma_start = None
    for i in trange(steps, disable=disable):
        compat.throw_if_interrupted()
        sigma, role = sigmas[i], schedule.role(i)
        run.in_warmup = role == WARMUP   # step caches act only here (step_caches.py)
        if role == ACTIVE:
            run.set_plan(ACTIVE, keyframes)
            # Latent trajectory projection: non-keyframes on the straight path of their group.
            x_in = x.clone()
            x_in[:, :, nonkey] = euler_move(_frames(z_start, nonkey), _frames(line_x0, nonkey), sigma_start, sigma)
        else:
            run.set_plan(*_full_pass_plan(schedule, i, keyframes, nonkey))
            x_in = x

        denoised = model(x_in, sigma * s_in, **extra_args)

        if role == WARMUP and warmup_end.ends_at(i, denoised, schedule.warmup):
            # Settled early: this step is the last of the warm-up, and the groups start at the next one.
            schedule = build_schedule(steps, replace(settings.schedule, warmup_steps=i + 1))
            nonkey_solver.reschedule(schedule)
            _record_schedule(report, schedule, settings.schedule)
        if i == schedule.detect_step:
            # Frames the image / mask conditions (seen by the adapter, or kept by the latent's noise mask).
            always = run.conditioned_frames | conditioned_frames(extra_args.get("denoise_mask"), frames)
            keyframes = select_keyframes(denoised, settings.keyframes, always)
            nonkey = sorted(set(range(frames)) - set(keyframes))
            report.keyframes, report.conditioned_frames = [int(f) for f in keyframes], sorted(always)
        if role == RHYTHMIC or (role == WARMUP and nonkey_solver.needs_history):
            z_next = nonkey_solver.step(i, x_in, denoised)  # the non-keyframes at their next full pass
        if role == RHYTHMIC:
            sigma_end = sigmas[schedule.group_at(i).end]
            z_start, sigma_start, z_end = x_in, sigma, z_next
            line_x0 = nonkey_solver.group_line(x_in, denoised, z_end, sigma, sigma_end)
        if role == ACTIVE and nonkey:
            denoised = denoised.clone()
            denoised[:, :, nonkey] = _frames(line_x0, nonkey)  # the clean prediction of the projected trajectory

        x_next = solver.step(i, x_in, denoised)
        if role != WARMUP and nonkey:
            x_next[:, :, nonkey] = _frames(z_end, nonkey)
        clock.lap(x_next)
        if callback is not None:
            callback({"x": x_in, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})
        clock.restart()
        x = x_next

    run.plan = None
    x = solver.finish(x, compat.model_sampling_of(model))
    report.warmup_measures = warmup_end.measures
    report.sampler_seconds = time.perf_counter() - started
    report.time_steps(clock.seconds, [schedule.role(i) in (WARMUP, RHYTHMIC) for i in range(steps)])
    report.completed = True
    return x
