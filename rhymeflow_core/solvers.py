"""Keyframe solvers: one step at a time, driven by the RhymeFlow loop.

Each solver reproduces the ComfyUI sampler of the same name when every frame is a keyframe.
They see the whole latent; the loop keeps only the keyframe entries of the result (all solvers
here are element-wise, so the other entries never leak into the keyframes). Non-keyframe
entries of `denoised` are placeholders (the group's clean prediction) and are discarded.

`step(i, x, denoised)` takes the sample the model saw at step i and its CFG-combined clean
prediction, and returns the sample for step i + 1.
"""
from __future__ import annotations

import torch

from . import compat

SOLVERS = ("euler", "uni_pc", "uni_pc_bh2", "dpmpp_2m")


class EulerSolver:
    def __init__(self, sigmas: torch.Tensor):
        self.sigmas = sigmas

    def finish(self, x, model_sampling):
        return x

    def step(self, i: int, x: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
        s, s_next = self.sigmas[i], self.sigmas[i + 1]
        return x + (x - denoised) / s * (s_next - s)


class DPMpp2MSolver(EulerSolver):
    """DPM-Solver++(2M) as ComfyUI's `dpmpp_2m` (log-sigma steps, 1st order into sigma 0)."""

    def __init__(self, sigmas: torch.Tensor):
        super().__init__(sigmas)
        self.old_denoised = None

    def step(self, i, x, denoised):
        t = -self.sigmas[i].log()
        t_next = -self.sigmas[i + 1].log()
        h = t_next - t
        ratio = (-t_next).exp() / (-t).exp()
        d = denoised
        if self.old_denoised is not None and self.sigmas[i + 1] != 0:
            r = (t + self.sigmas[i - 1].log()) / h
            d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * self.old_denoised
        self.old_denoised = denoised
        return ratio * x - (-h).expm1() * d


class UniPCSolver:
    """ComfyUI's `uni_pc` / `uni_pc_bh2` (multistep UniPC, order up to 3, lower order at the end).

    The host's sampler runs predictor and corrector inside one call that also evaluates the model.
    Here the two halves are split around our own model call: the corrector for step i runs once
    the model output at step i is known, then the predictor for step i + 1. The update formula
    itself is the host's (see compat.unipc_update), so this matches it to rounding.
    """

    def __init__(self, sigmas: torch.Tensor, variant: str = "bh1"):
        self.ts = sigmas.clone()
        self.ends_at_zero = bool(sigmas[-1] == 0)
        if self.ends_at_zero:
            self.ts[-1] = 0.001  # what the host sampler integrates to
        self.steps = len(sigmas) - 1
        self.order = min(3, self.steps - 1)
        self.uni_pc = compat.unipc_solver(variant)
        self.ns = self.uni_pc.noise_schedule
        self.history: list[torch.Tensor] = []   # clean predictions, newest last
        self.t_history: list[torch.Tensor] = []
        self.x_corrected = None                  # solver state in the host's scaled space

    def _order_for(self, k: int) -> int:
        if k < self.order:
            return k
        return min(self.order, self.steps + 1 - k)

    def _t(self, k: int, batch: int) -> torch.Tensor:
        return self.ts[k].expand(batch)

    def step(self, i, x, denoised):
        b = x.shape[0]
        scale = torch.sqrt(1.0 + self.ts[i] ** 2)
        x_pred = x / scale
        if i == 0:
            self.x_corrected = x_pred
        else:
            self.x_corrected, _ = compat.unipc_update(
                self.uni_pc, self.x_corrected, self.history, self.t_history, self._t(i, b),
                self._order_for(i), x_t=x_pred, model_t=denoised)
        self.history = (self.history + [denoised])[-3:]
        self.t_history = (self.t_history + [self._t(i, b)])[-3:]
        k = i + 1
        x_next, _ = compat.unipc_update(
            self.uni_pc, self.x_corrected, self.history, self.t_history, self._t(k, b),
            self._order_for(k), x_t=None, model_t=None)
        return x_next * torch.sqrt(1.0 + self.ts[k] ** 2)

    def finish(self, x, model_sampling):
        # The host's uni_pc writes its final 0.001 into the caller's sigmas, so KSAMPLER's inverse
        # noise scaling then runs at 0.001 (x / 0.999 for flow models). Same result, no mutation.
        if self.ends_at_zero:
            return model_sampling.inverse_noise_scaling(self.ts[-1], x)
        return x


def make_solver(name: str, sigmas: torch.Tensor):
    if name == "euler":
        return EulerSolver(sigmas)
    if name == "dpmpp_2m":
        return DPMpp2MSolver(sigmas)
    if name in ("uni_pc", "uni_pc_bh2"):
        return UniPCSolver(sigmas, "bh2" if name == "uni_pc_bh2" else "bh1")
    raise ValueError(f"unknown keyframe solver {name!r}; use one of {', '.join(SOLVERS)}")
