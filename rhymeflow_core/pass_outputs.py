"""What the recording and active passes returned, per cond: two uses (docs/compatibility.md, "Guidance").

* **Whole-latent guidance statistics.** An active pass computes only the keyframe rows. Guidance
  functions that take statistics over the whole latent (CFGZeroStar's alpha, APG's norms and
  momentum, CFGNorm, skip-layer guidance's rescaling) would see zeros in the other rows. So the
  non-keyframe rows of an active pass's output are filled so that each branch's clean prediction
  there is the rhythmic point's clean prediction of that branch, the values the sampler holds for
  these frames (docs/algorithm.md §1): every supported family is a flow model (ComfyUI's CONST
  model sampling: input = x, clean prediction = x - sigma * output), so the output is
  (x - x0_i) / sigma. Plain CFG is unchanged: it is element-wise, and the loop never reads these rows.
* **Repeated calls.** Skip-layer guidance runs one more cond pass per step with
  `patches_replace["dit"]`, which recording and active passes do not honour (docs/host.md §3): it
  would compute this step's cond output again (and re-record the cache). A call with the same cond,
  the same input and the same honoured options as an earlier call of this step is answered from
  that call's output, without running the model.
"""
from __future__ import annotations

import torch

# Options the recording and active passes honour: a repeated call must carry the same ones.
HONOURED = ("optimized_attention_override", "rope_options")


def _slices(t: torch.Tensor, uuids) -> list[torch.Tensor]:
    return list(t.chunk(len(uuids), dim=0))


class PassOutputs:
    def __init__(self):
        self._plan = None
        self._step: dict = {}       # uuid -> (input, honoured options, output) of this step's passes
        self._rhythmic: dict = {}   # uuid -> clean prediction of the last recording pass

    def repeat_of(self, run, x: torch.Tensor, to: dict, window=None) -> torch.Tensor | None:
        """The output of an earlier call of this step with the same conds, window, input and honoured options."""
        if run.plan is not self._plan:
            self._plan, self._step = run.plan, {}
        uuids, honoured = _keys(to, window), _honoured(to)
        if not uuids or any(u not in self._step for u in uuids):
            return None
        parts = []
        for u, x_u in zip(uuids, _slices(x, uuids), strict=True):
            seen_x, seen_opts, out = self._step[u]
            if seen_opts != honoured or seen_x.shape != x_u.shape or not torch.equal(seen_x, x_u):
                return None
            parts.append(out)
        return torch.cat(parts, dim=0)

    def keep(self, run, x: torch.Tensor, to: dict, out: torch.Tensor, window=None) -> torch.Tensor:
        """Remember this pass's output per cond (and context window); fill an active pass's non-keyframe rows from
        the rhythmic point. A context window's frames are its own (window.local maps the run's keyframes into it)."""
        uuids = _keys(to, window)
        if not uuids:
            return out
        recording = run.plan.kind == "record"
        keyframes = window.local(run.plan.keyframes) if window is not None else run.plan.keyframes
        refresh = list(run.plan.refresh) if window is None else []   # a partial pass computed these frames too
        nonkey = None if recording else _nonkey(out.shape[2], tuple(keyframes) + tuple(refresh))
        sigma = to["sigmas"].flatten()[0].to(out)   # the sampler's one sigma for this step
        for u, x_u, out_u in zip(uuids, _slices(x, uuids), _slices(out, uuids), strict=True):
            z = x_u[:, :out_u.shape[1]].to(out_u)   # image-to-video inputs carry extra channels after the latent's
            if recording:
                self._rhythmic[u] = z - sigma * out_u
            elif u in self._rhythmic and self._rhythmic[u].shape == out_u.shape:
                if refresh:   # the sampler holds their fresh clean prediction for the rest of the group
                    self._rhythmic[u][:, :, refresh] = z[:, :, refresh] - sigma * out_u[:, :, refresh]
                if nonkey:
                    out_u[:, :, nonkey] = (z[:, :, nonkey] - self._rhythmic[u][:, :, nonkey]) / sigma
            self._step[u] = (x_u, _honoured(to), out_u)
        return out

    def clear(self) -> None:
        self._plan, self._step, self._rhythmic = None, {}, {}


def _keys(to: dict, window) -> tuple:
    """One entry per cond, and per context window when the host samples in windows (docs/algorithm.md §9)."""
    uuids = tuple(to.get("uuids") or ())
    return uuids if window is None else window.signature(uuids)


def _honoured(to: dict) -> tuple:
    return tuple(id(to.get(k)) for k in HONOURED)


def _nonkey(frames: int, keyframes) -> list[int]:
    keys = set(keyframes)
    return [f for f in range(frames) if f not in keys]
