"""The RhymeFlow sampling loop (docs/algorithm.md §1), written as a k-diffusion-style sampler function.

Per step i, by the schedule's role:
  warm-up   full pass; every frame advanced by the keyframe solver; keyframes are chosen at the
            last warm-up step from the CFG-combined clean prediction;
  rhythmic  full pass that also records the context cache; keyframes advance one solver step,
            non-keyframes jump (Euler, in sigma) straight to the end of the group;
  active    active pass on the keyframes; non-keyframes sit on their projected trajectory
            (linear in sigma between the rhythmic point and the group end) and are not updated.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import trange

from . import compat, context_windows, parallel
from .errors import RhymeFlowInputError
from .keyframes import KeyframeSpec, conditioned_frames, select_keyframes
from .run_state import ACTIVE, FULL, KEY, RECORD, RhymeFlowRun
from .schedule import RHYTHMIC, WARMUP, ScheduleSettings, build_schedule, few_steps_warnings
from .solvers import SOLVERS, make_solver


@dataclass(frozen=True)
class SamplerSettings:
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    keyframes: KeyframeSpec = field(default_factory=KeyframeSpec)
    solver: str = "uni_pc"

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise RhymeFlowInputError(f"unknown keyframe solver {self.solver!r}; use one of {', '.join(SOLVERS)}.")


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


def _euler_move(z, denoised, sigma, sigma_to):
    """Move along the velocity of (z, denoised) at sigma to sigma_to: z + (sigma_to - sigma) v."""
    return denoised + sigma_to / sigma * (z - denoised)


def _detect_keyframes(run: RhymeFlowRun, denoised: torch.Tensor, settings: SamplerSettings, extra_args: dict) -> list[int]:
    """The keyframes, chosen from the detect step's clean prediction (docs/algorithm.md §3); noted in the report."""
    frames = denoised.shape[2]
    # Frames the image / mask conditions (seen by the adapter, or kept by the latent's noise mask).
    always = run.conditioned_frames | conditioned_frames(extra_args.get("denoise_mask"), frames)
    keyframes = [int(f) for f in select_keyframes(denoised, settings.keyframes, always)]
    group = parallel.sequence_group(extra_args.get("model_options", {}).get("transformer_options", {}))
    if group is not None:   # one video over several GPUs: rank 0 chooses for all (docs/multi_gpu.md §4)
        keyframes = group.broadcast_keyframes(keyframes)
    run.report.keyframes, run.report.conditioned_frames = list(keyframes), sorted(always)
    return keyframes


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
    report = run.report
    report.steps, report.frames, report.solver = steps, frames, settings.solver
    report.full_passes, report.active_passes, report.warmup_steps = schedule.full_passes, schedule.active_passes, schedule.warmup
    report.schedule, report.keyframe_spec = settings.schedule, settings.keyframes
    for topic, message in few_steps_warnings(schedule).items():
        report.warn(topic, message)
    report.keyframes = list(range(frames))
    s_in = x.new_ones([x.shape[0]])
    started = time.perf_counter()
    clock = _StepClock()

    keyframes = list(range(frames))   # every frame is advanced by the solver until detection
    nonkey: list[int] = []
    z_start = denoised_start = z_end = sigma_start = None  # the current group: its rhythmic point and endpoint
    for i in trange(steps, disable=disable):
        compat.throw_if_interrupted()
        sigma, role = sigmas[i], schedule.role(i)
        run.in_warmup = role == WARMUP   # step caches act only here (step_caches.py)
        if role == WARMUP:
            run.set_plan(FULL)
            x_in = x
        elif role == RHYTHMIC:
            group = schedule.group_at(i)
            run.set_plan(RECORD if group.span > 1 and nonkey else FULL, keyframes)
            x_in = x
        else:
            run.set_plan(ACTIVE, keyframes)
            # Latent trajectory projection: non-keyframes on the straight path of their group.
            x_in = x.clone()
            x_in[:, :, nonkey] = _euler_move(_frames(z_start, nonkey), _frames(denoised_start, nonkey), sigma_start, sigma)

        denoised = model(x_in, sigma * s_in, **extra_args)

        if i == schedule.detect_step:
            keyframes = _detect_keyframes(run, denoised, settings, extra_args)
            nonkey = sorted(set(range(frames)) - set(keyframes))
        if role == RHYTHMIC:
            z_start, denoised_start, sigma_start = x_in, denoised, sigma
            z_end = _euler_move(x_in, denoised, sigma, sigmas[schedule.group_at(i).end])  # one jump over the group
        if role == ACTIVE and nonkey:
            denoised = denoised.clone()
            denoised[:, :, nonkey] = _frames(denoised_start, nonkey)  # the group's clean prediction

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
    report.sampler_seconds = time.perf_counter() - started
    report.time_steps(clock.seconds, [schedule.role(i) in (WARMUP, RHYTHMIC) for i in range(steps)])
    report.completed = True
    return x
