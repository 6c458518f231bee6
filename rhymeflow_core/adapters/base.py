"""The adapter template: what every model family shares, and the one method each family writes.

The DIFFUSION_MODEL wrapper (patch.py) calls `ActivePassAdapter.forward` for each RECORD or
ACTIVE model call. `forward` does the plumbing once for every family: the family's refusals
(`check_call`), the block-patch warning, the token grid, and a `PassContext` with the cache
signature, the effective context mode, the keyframe / non-keyframe rows and the cache calls.
Then the family's `run_pass` does what differs: the record or active pass over its own blocks.
Calls and rows are counted by the wrapper, for every kind of pass, from `token_grid`.

Adding a family: docs/architecture.md, "Adding a model family".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .. import context_windows
from ..run_state import RECORD, ContextMode, RhymeFlowRun


def frame_rows(frames, per_frame: int, device) -> torch.Tensor:
    """Token indices of the given latent frames in a frame-major sequence of `per_frame` rows a frame."""
    return (torch.as_tensor(list(frames), dtype=torch.long, device=device)[:, None] * per_frame
            + torch.arange(per_frame, device=device)[None]).reshape(-1)


@dataclass
class PassContext:
    """One RECORD or ACTIVE pass: which rows are queries, which come from the cache, and the cache calls.

    Rows are video-token rows, frame-major, `per_frame` a latent frame. In cached buffers the
    keyframe rows come first (`scratch` of them, rewritten by every active pass), then the
    non-keyframe rows recorded at the rhythmic point.
    """
    run: RhymeFlowRun
    to: dict                   # the call's transformer_options
    recording: bool            # RECORD (full pass that fills the cache) or ACTIVE
    frames: int
    per_frame: int
    keyframes: tuple[int, ...]
    key_frames: torch.Tensor   # keyframe indices (long)
    key_rows: torch.Tensor     # token rows of the keyframes
    nk_rows: torch.Tensor      # token rows of the non-keyframes
    mode: ContextMode          # KEYFRAME_ONLY when the user asked for it or every frame is a keyframe
    signature: tuple           # the cond uuids of this call: cond and uncond keep separate caches (and windows, paired with each)
    cache_share: float = 1.0   # the whole cache over this call's share of it: every context window has its own

    @classmethod
    def build(cls, run: RhymeFlowRun, to: dict, frames: int, per_frame: int, device) -> PassContext:
        keyframes, signature = run.plan.keyframes, tuple(to.get("uuids") or ("single",))
        cache_share = 1.0
        window = context_windows.view_of(to, frames)
        if window is not None:  # one context window: its own keyframe positions and its own cache (docs/algorithm.md §9)
            keyframes, signature = window.local(keyframes), window.signature(signature)
            cache_share = max(1.0, run.report.frames / frames)

        def rows():
            nonkey = sorted(set(range(frames)) - set(keyframes))
            return (torch.as_tensor(keyframes, dtype=torch.long, device=device),
                    frame_rows(keyframes, per_frame, device), frame_rows(nonkey, per_frame, device))

        key_frames, key_rows, nk_rows = run.row_index(("rows", frames, per_frame, keyframes), rows, device)
        mode = run.config.context if nk_rows.numel() else ContextMode.KEYFRAME_ONLY
        return cls(run, to, run.plan.kind == RECORD, frames, per_frame, keyframes, key_frames, key_rows, nk_rows,
                   mode, signature, cache_share)

    @property
    def scratch(self) -> int:
        return self.key_rows.numel()

    @property
    def cached(self) -> bool:
        return self.mode != ContextMode.KEYFRAME_ONLY

    def reserve(self, like: torch.Tensor, blocks: int) -> None:
        """Place the cache before the first block is stored: `blocks` blocks of the size of `like` (all rows), twice
        for K and V, for every context window (frames over window frames: overlaps come on top)."""
        if self.recording and self.cached:
            per_block = (2 if self.mode == ContextMode.KV_CACHE else 1) * like.numel() * like.element_size()
            self.run.cache_for(self.to, like.device).choose_device(like.device, int(per_block * blocks * self.cache_share))

    def store(self, block: int, *tensors: torch.Tensor, dim: int = 1) -> None:
        """Record the non-keyframe rows (along `dim`) of each tensor for `block`."""
        self.run.cache_for(self.to, tensors[0].device).store(self.signature, block, tensors, self.nk_rows, scratch=self.scratch, dim=dim)

    def load(self, block: int, device) -> tuple[torch.Tensor, ...]:
        """The recorded buffers of `block`; their first `scratch` rows are free for the fresh keyframe rows."""
        return self.run.cache_for(self.to, device).load(self.signature, block, device)

    def with_cached(self, block: int, *fresh: torch.Tensor, dim: int = 1) -> tuple[torch.Tensor, ...]:
        """Fresh keyframe rows written into the scratch rows of `block`'s buffers: [keyframes, cached non-keyframes]."""
        buffers = self.load(block, fresh[0].device)
        for buf, rows in zip(buffers, fresh, strict=True):
            buf.narrow(dim, 0, self.scratch).copy_(rows)
        return buffers


class ActivePassAdapter:
    """Runs RECORD and ACTIVE passes for one model family.

    A family sets `diffusion_model_class` and implements `check_model`, `token_grid` and `run_pass` (and, if its
    inputs can condition frames, `conditioned_frames`; if some inputs cannot run in these
    passes, `check_call`). `run_pass` returns the model output with the stock shape; in an
    ACTIVE pass only keyframe frames are meaningful and the rest are zeros (`scatter_keyframes`).
    """

    name = "base"
    # Human-readable list of what the adapter handles, used in "unsupported model" errors.
    supported = ""
    # The host's diffusion-model class, matched exactly: subclasses (Wan VACE, S2V, ...) run their own forward.
    diffusion_model_class: type | None = None

    @classmethod
    def matches(cls, diffusion_model: torch.nn.Module) -> bool:
        return type(diffusion_model) is cls.diffusion_model_class

    @classmethod
    def check_model(cls, model_patcher) -> None:
        """Raise RhymeFlowInputError if this variant of the family is not supported yet."""

    def conditioned_frames(self, diffusion_model, args: tuple, kwargs: dict) -> set[int]:
        """Latent frames the model's inputs condition on (always keyframes); read on a run's first call."""
        return set()

    def check_call(self, diffusion_model, to: dict, args: tuple, kwargs: dict) -> None:
        """Raise RhymeFlowInputError for inputs a RECORD or ACTIVE pass cannot honour."""

    def token_grid(self, diffusion_model, args: tuple, kwargs: dict) -> tuple[int, int]:
        """(latent frames, video-token rows per frame) of this call."""
        raise NotImplementedError

    def run_pass(self, diffusion_model, ctx: PassContext, args: tuple, kwargs: dict) -> torch.Tensor:
        raise NotImplementedError

    # ---- the template ------------------------------------------------------------------------
    def forward(self, diffusion_model, run: RhymeFlowRun, to: dict, args: tuple, kwargs: dict) -> torch.Tensor:
        self.check_call(diffusion_model, to, args, kwargs)
        _warn_block_patches(run, to)
        frames, per_frame = self.token_grid(diffusion_model, args, kwargs)
        x = args[0] if args else kwargs["x"]
        ctx = PassContext.build(run, to, frames, per_frame, x.device)
        return self.run_pass(diffusion_model, ctx, args, kwargs)


ALL, KEY, BUF = "all", "key", "buf"   # row sets: every row; keyframe rows; a cached buffer's rows


class SingleStreamBlocks:
    """RECORD and ACTIVE passes over blocks of one shape: per-row modulation -> self-attention ->
    the rest of the block (cross-attention, FFN). Wan's and LTX-Video's blocks have it; a family
    subclasses this with its block math, and the passes (what is cached, which rows are queries)
    are written once, here.

    Row sets: ALL (a RECORD pass: every row), KEY (an ACTIVE pass's queries), BUF (a cached
    buffer's rows in `hidden_cache`: keyframes first, then the non-keyframes).
    """

    def __init__(self, ctx: PassContext):
        self.ctx = ctx

    # ---- the family's block math -------------------------------------------------------------
    def modulation(self, block, rows: str, like: torch.Tensor) -> tuple:
        """The block's modulation vectors for the row set (per-row when timesteps differ by frame or token)."""
        raise NotImplementedError

    def modulate(self, block, x: torch.Tensor, mod: tuple) -> torch.Tensor:
        """The normalised, modulated input of self-attention."""
        raise NotImplementedError

    def q(self, block, y: torch.Tensor, rows: str) -> torch.Tensor:
        raise NotImplementedError

    def kv(self, block, y: torch.Tensor, rows: str) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def finish(self, block, x, q, k, v, mod) -> torch.Tensor:
        """Self-attention output and the rest of the block."""
        raise NotImplementedError

    # ---- the passes --------------------------------------------------------------------------
    def record(self, blocks, x: torch.Tensor) -> torch.Tensor:
        """A full pass that also records what the next active passes need of the non-keyframes."""
        ctx = self.ctx
        ctx.reserve(x, len(blocks))
        for i, block in enumerate(blocks):
            ctx.to["block_index"] = i
            mod = self.modulation(block, ALL, x)
            if ctx.mode == ContextMode.HIDDEN_CACHE:
                ctx.store(i, x)
            x = x.contiguous()
            y = self.modulate(block, x, mod)
            q, (k, v) = self.q(block, y, ALL), self.kv(block, y, ALL)
            if ctx.mode == ContextMode.KV_CACHE:
                ctx.store(i, k, v)
            x = self.finish(block, x, q, k, v, mod)
        return x

    def active(self, blocks, x: torch.Tensor) -> torch.Tensor:
        """Keyframe rows through every block; the non-keyframes' context from the cache."""
        ctx = self.ctx
        for i, block in enumerate(blocks):
            ctx.to["block_index"] = i
            mod = self.modulation(block, KEY, x)
            x = x.contiguous()
            y = self.modulate(block, x, mod)
            q = self.q(block, y, KEY)
            if ctx.mode == ContextMode.HIDDEN_CACHE:
                # Stale non-keyframe block inputs, re-modulated with the current timestep(s) and projected again.
                (hidden,) = ctx.with_cached(i, x)
                k, v = self.kv(block, self.modulate(block, hidden, self.modulation(block, BUF, x)), BUF)
            else:
                k, v = self.kv(block, y, KEY)
                if ctx.cached:  # kv_cache: fresh keyframe K/V into the scratch rows of the cached buffers
                    k, v = ctx.with_cached(i, k, v)
            x = self.finish(block, x, q, k, v, mod)
        return x


def scatter_keyframes(out: torch.Tensor, ctx: PassContext) -> torch.Tensor:
    """[B, C, M, H, W] keyframe outputs -> [B, C, F, H, W] with zeros at non-keyframes (never used)."""
    full = out.new_zeros((out.shape[0], out.shape[1], ctx.frames) + tuple(out.shape[3:]))
    return full.index_copy_(2, ctx.key_frames, out)


def _warn_block_patches(run: RhymeFlowRun, to: dict) -> None:
    if to.get("patches_replace", {}).get("dit"):
        run.report.warn("block_patches", "block-replace patches (e.g. skip-layer guidance) apply only in warm-up passes, "
                                         "not in rhythmic or active passes.")
