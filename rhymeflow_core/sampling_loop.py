"""The RhymeFlow sampling loop (docs/algorithm.md §1), written as a k-diffusion-style sampler function.

Per step i, by the schedule's role:
  warm-up   full pass; every frame advanced by the keyframe solver; keyframes are chosen at the
            last warm-up step from the CFG-combined clean prediction;
  rhythmic  full pass that also records the context cache; keyframes advance one solver step,
            non-keyframes jump (Euler, in sigma) straight to the end of the group;
  active    active pass on the keyframes; non-keyframes sit on their projected trajectory
            (linear in sigma between the rhythmic point and the group end) and are not updated.
With `refresh_budget` > 0 (opt-in, docs/algorithm.md §11) an active pass is a partial pass: some
non-keyframes, those whose clean prediction changed most between the last two full passes, are
queries too; each takes its fresh prediction and re-jumps from where it is to the group end.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import trange

from . import compat, context_windows, parallel
from .errors import RhymeFlowInputError
from .keyframes import KeyframeSpec, conditioned_frames, select_keyframes
from .run_state import ACTIVE, FULL, KEY, RECORD, ContextMode, RhymeFlowRun
from .schedule import RHYTHMIC, WARMUP, ScheduleSettings, build_schedule, few_steps_warnings
from .solvers import SOLVERS, make_solver


@dataclass(frozen=True)
class SamplerSettings:
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    keyframes: KeyframeSpec = field(default_factory=KeyframeSpec)
    solver: str = "uni_pc"
    # Extra query frames of each active pass, as a fraction of the non-keyframes (docs/algorithm.md §11); 0: the paper.
    refresh_budget: float = 0.0

    def __post_init__(self):
        if self.solver not in SOLVERS:
            raise RhymeFlowInputError(f"unknown keyframe solver {self.solver!r}; use one of {', '.join(SOLVERS)}.")
        if not 0.0 <= self.refresh_budget <= 1.0:   # also refuses NaN
            raise RhymeFlowInputError(f"refresh_budget {self.refresh_budget!r} is outside 0..1; it is the share of the "
                                      "non-keyframes an active pass refreshes (0: the paper's active passes).")


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


def check_refresh(settings: SamplerSettings, run: RhymeFlowRun, extra_args: dict, windows) -> None:
    """Partial passes run on one GPU, with Wan's kv_cache passes and without context windows (docs/algorithm.md §11)."""
    if not settings.refresh_budget:
        return
    to = extra_args.get("model_options", {}).get("transformer_options", {})
    problem = (f"the {run.adapter.name} model family" if not run.adapter.partial_passes else
               f"context={run.config.context}" if run.config.context != ContextMode.KV_CACHE else
               "context windows" if windows else
               "sequence-parallel sampling" if parallel.sequence_group(to) is not None else None)
    if problem:
        raise RhymeFlowInputError(refresh_refusal(problem))


def refresh_refusal(problem: str) -> str:
    return (f"refresh_budget > 0 (partial passes) is not supported with {problem}; it needs a Wan model, "
            "context=kv_cache, one GPU and no context windows. Set refresh_budget to 0.")


def refresh_count(budget: float, nonkey: int, index: int) -> int:
    """Refresh frames of the `index`-th active pass: the run's first n passes refresh round(budget · nonkey · n) in
    all, so a run's active rows are within half a frame of (keyframes + budget · nonkey) rows per active pass."""
    def total(n):
        return math.floor(budget * nonkey * n + 0.5)
    return min(total(index + 1) - total(index), nonkey)


class Refresher:
    """Chooses each active pass's refresh frames: the non-keyframes ranked by the relative change of their clean
    prediction between the last two full passes, taken in turn (so each is refreshed before any is again).
    `refreshed` holds, per step, the frames chosen (the run report's; empty without a budget). The schedule
    view plans with it too, ranking the non-keyframes in frame order (schedule_view.planned_refresh)."""

    def __init__(self, budget: float, steps: int):
        self.budget, self.passes, self.ranked, self.turn, self.last_full = budget, 0, [], 0, None
        self.refreshed: list[list[int]] = [[] for _ in range(steps)] if budget else []

    def after_pass(self, denoised: torch.Tensor, nonkey: list[int], role: str) -> None:
        """Note a full pass's clean prediction; at a rhythmic point, rank the non-keyframes for its group."""
        if not self.budget or role == ACTIVE:
            return
        if role == RHYTHMIC and nonkey and self.last_full is not None:
            change = [float((denoised[:, :, f] - self.last_full[:, :, f]).norm() / (denoised[:, :, f].norm() + 1e-12))
                      for f in nonkey]
            self.rank([f for _, f in sorted(zip(change, nonkey, strict=True), key=lambda p: -p[0])])
        self.last_full = denoised

    def rank(self, order: list[int]) -> None:
        """A new group: its active passes take the non-keyframes in this order, from the first."""
        self.ranked, self.turn = order, 0

    def choose(self, nonkey: list[int], step: int) -> tuple[int, ...]:
        if not self.budget or not nonkey or len(self.ranked) != len(nonkey):
            return ()
        count = refresh_count(self.budget, len(nonkey), self.passes)
        self.passes += 1
        chosen = tuple(self.ranked[(self.turn + j) % len(nonkey)] for j in range(count))
        self.turn += count
        self.refreshed[step] = sorted(chosen)
        return chosen


class _Group:
    """The non-keyframes' current group: their rhythmic point (latent, clean prediction, sigma) and the group end."""

    def __init__(self, x_in, denoised, sigma, sigma_end, writable: bool):
        self.z_end = _euler_move(x_in, denoised, sigma, sigma_end)   # one jump over the group
        if writable:   # partial passes rewrite the group's frames in place: not the step's own tensors
            x_in, denoised = x_in.clone(), denoised.clone()
        self.z_start, self.denoised, self.sigma, self.sigma_end = x_in, denoised, sigma, sigma_end

    def project(self, x, nonkey: list[int], sigma) -> torch.Tensor:
        """Latent trajectory projection: non-keyframes on the straight path of their group."""
        x_in = x.clone()
        x_in[:, :, nonkey] = _euler_move(_frames(self.z_start, nonkey), _frames(self.denoised, nonkey), self.sigma, sigma)
        return x_in

    def refresh(self, refresh, x_in, denoised, sigma) -> None:
        """Refreshed non-keyframes take their fresh clean prediction for the rest of the group and re-jump (Euler,
        in sigma) from where they are to the group end; their group start moves onto that same straight line, so
        later active passes project them along it."""
        if not refresh:
            return
        r = list(refresh)
        z, d = _frames(x_in, r), _frames(denoised, r)
        self.denoised[:, :, r] = d
        self.z_start[:, :, r] = _euler_move(z, d, sigma, self.sigma)
        self.z_end[:, :, r] = _euler_move(z, d, sigma, self.sigma_end)


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
    windows = context_windows.windows_for(extra_args, x.shape)  # refuses windows RhymeFlow cannot follow
    check_refresh(settings, run, extra_args, windows)
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
    current: _Group | None = None   # the non-keyframes' current group
    refresher, refresh = Refresher(settings.refresh_budget, steps), ()
    report.refresh_budget, report.refreshed = settings.refresh_budget, refresher.refreshed
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
            refresh = refresher.choose(nonkey, i)
            run.set_plan(ACTIVE, keyframes, refresh)
            x_in = current.project(x, nonkey, sigma)

        denoised = model(x_in, sigma * s_in, **extra_args)

        if i == schedule.detect_step:
            keyframes = _detect_keyframes(run, denoised, settings, extra_args)
            nonkey = sorted(set(range(frames)) - set(keyframes))
        refresher.after_pass(denoised, nonkey, role)
        if role == RHYTHMIC:
            current = _Group(x_in, denoised, sigma, sigmas[schedule.group_at(i).end], bool(settings.refresh_budget))
        if role == ACTIVE and nonkey:
            current.refresh(refresh, x_in, denoised, sigma)
            denoised = denoised.clone()
            denoised[:, :, nonkey] = _frames(current.denoised, nonkey)  # the group's clean prediction

        x_next = solver.step(i, x_in, denoised)
        if role != WARMUP and nonkey:
            x_next[:, :, nonkey] = _frames(current.z_end, nonkey)
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
