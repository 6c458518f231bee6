"""How non-keyframes advance between their own evaluation points (docs/algorithm.md §1, §10).

The model sees the non-keyframes only at full passes: every warm-up step and every rhythmic point.
Those sigmas are the non-keyframes' own, coarse schedule: one step per warm-up step, then one step
per group, from its rhythmic point to its end (the next rhythmic point, or the last sigma).

  euler_jump  the paper's release behaviour: one Euler step in sigma over the whole group, from the
              rhythmic point's clean prediction alone.
  multistep   the keyframe solver's own update on the coarse schedule, with its variable step sizes
              (dpmpp_2m's r = h_last / h, UniPC's history of times), so the jump also uses the clean
              predictions of the earlier evaluation points. UniPC's corrector for a group is applied
              at the next rhythmic point, where the model sees the group's end anyway (a full pass
              that is run in any case), exactly as UniPC corrects at its next model call. euler is a
              one-step method, so with it `multistep` is the Euler jump.

When every group has length 1 the coarse schedule is the schedule itself, so `multistep` is then
the keyframe solver, frame for frame (tests/test_nonkey_solver.py).

Inside a group the active passes need a non-keyframe input (the projected trajectory, paper Eq. 3).
It is the straight line in sigma from the rhythmic point to the group end. For `euler_jump` that line
is the Euler move with the rhythmic point's clean prediction; for `multistep` it ends at the multistep
end instead, and its clean prediction (constant along a straight line in sigma) is the placeholder
the keyframe solver and the previews get. With a context cache the projected latents never reach
the keyframes (§4), so this choice changes the previews, not the result.
"""
from __future__ import annotations

import torch

from .schedule import Schedule
from .solvers import make_solver

EULER_JUMP, MULTISTEP = "euler_jump", "multistep"
NONKEY_SOLVERS = (EULER_JUMP, MULTISTEP)


def euler_move(z, denoised, sigma, sigma_to):
    """Move along the velocity of (z, denoised) at sigma to sigma_to: z + (sigma_to - sigma) v."""
    return denoised + sigma_to / sigma * (z - denoised)


def evaluation_steps(schedule: Schedule) -> list[int]:
    """The steps at which the model sees the non-keyframes: warm-up steps and rhythmic points."""
    return list(range(schedule.warmup)) + [g.start for g in schedule.groups]


def line_clean_prediction(z_start, z_end, sigma, sigma_end):
    """The clean prediction of the straight line in sigma through (sigma, z_start) and (sigma_end, z_end):
    x0 = z - sigma v with v = (z_end - z_start) / (sigma_end - sigma), the same at every point of the line."""
    return z_start - sigma / (sigma_end - sigma) * (z_end - z_start)


class EulerJump:
    """The paper's release update: one Euler jump from each evaluation point to the next."""

    name = EULER_JUMP
    needs_history = False  # one-step: nothing from the warm-up is needed

    def __init__(self, sigmas: torch.Tensor, schedule: Schedule):
        self.sigmas = sigmas
        self.reschedule(schedule)

    def reschedule(self, schedule: Schedule) -> None:
        """The schedule changed from its current step on (an adaptive warm-up ended early)."""
        steps = evaluation_steps(schedule)
        self.next_point = dict(zip(steps, steps[1:] + [schedule.steps], strict=True))

    def step(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        """The non-keyframes' latent at their next evaluation point, from the full pass at step i."""
        return euler_move(x, denoised, self.sigmas[i], self.sigmas[self.next_point[i]])

    def group_line(self, z_start, denoised, z_end, sigma, sigma_end):
        """The clean prediction whose Euler moves from z_start are the group's projected trajectory."""
        return denoised


class Multistep(EulerJump):
    """The keyframe solver's multistep update on the non-keyframes' coarse schedule.

    The coarse solver sees the whole latent at every evaluation point, warm-up steps included (keyframes
    are not known before the last of them); the loop keeps its result at the non-keyframes only.
    """

    name = MULTISTEP
    needs_history = True   # the warm-up's clean predictions are the first steps of its history

    def __init__(self, solver: str, sigmas: torch.Tensor, schedule: Schedule, order: int | None):
        self.solver_name, self.order = solver, order
        self.solver = None
        super().__init__(sigmas, schedule)

    def reschedule(self, schedule: Schedule) -> None:
        super().reschedule(schedule)
        steps = evaluation_steps(schedule)
        self.coarse_index = {i: k for k, i in enumerate(steps)}
        coarse = self.sigmas[torch.tensor(steps + [schedule.steps], device=self.sigmas.device)]
        if self.solver is None:
            self.solver = make_solver(self.solver_name, coarse, self.order)
        else:  # same points so far, so the solver's history stays valid; only the points ahead move
            self.solver.retime(coarse)

    def step(self, i, x, denoised):
        return self.solver.step(self.coarse_index[i], x, denoised)

    def group_line(self, z_start, denoised, z_end, sigma, sigma_end):
        return line_clean_prediction(z_start, z_end, sigma, sigma_end)


def make_nonkey_solver(mode: str, solver: str, sigmas: torch.Tensor, schedule: Schedule, keyframe_solver=None):
    """`keyframe_solver`: the fine schedule's solver, whose order cap the coarse UniPC takes over."""
    if mode == EULER_JUMP or solver == "euler":
        return EulerJump(sigmas, schedule)
    if mode == MULTISTEP:
        return Multistep(solver, sigmas, schedule, getattr(keyframe_solver, "order", None))
    raise ValueError(f"unknown non-keyframe solver {mode!r}; use one of {', '.join(NONKEY_SOLVERS)}")
