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

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .. import compat, compiled_blocks, context_windows, parallel
from ..errors import RhymeFlowInputError
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
    key_frames: torch.Tensor   # query frame indices (long): the keyframes, then any refresh frames
    key_rows: torch.Tensor     # token rows of the query frames
    nk_rows: torch.Tensor      # token rows of the non-keyframes
    mode: ContextMode          # KEYFRAME_ONLY when the user asked for it or every frame is a keyframe
    signature: tuple           # the cond uuids of this call: cond and uncond keep separate caches (and windows, paired with each)
    cache_share: float = 1.0   # the whole cache over this call's share of it: every context window has its own
    group: parallel.SequenceGroup | None = None   # a Ulysses group larger than one (docs/multi_gpu.md §4), else None
    # A partial pass (docs/algorithm.md §11): non-keyframes that are queries too. `key_frames` / `key_rows` then hold
    # the keyframes followed by these frames; `refresh_at` are their rows' positions in the cached buffers.
    refresh: tuple[int, ...] = ()
    refresh_at: torch.Tensor | None = None

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
        ctx = cls(run, to, run.plan.kind == RECORD, frames, per_frame, keyframes, key_frames, key_rows, nk_rows,
                  mode, signature, cache_share)
        if run.plan.refresh and not ctx.recording:
            ctx._add_refresh(run.plan.refresh, window is not None)
        return ctx

    def _add_refresh(self, refresh: tuple[int, ...], windowed: bool) -> None:
        """Make `refresh` (non-keyframes) queries too; their rows' buffer positions follow the non-keyframe order."""
        if windowed or self.mode != ContextMode.KV_CACHE:
            raise RhymeFlowInputError(
                f"partial passes (refresh_budget > 0) need context=kv_cache and no context windows (this pass: "
                f"{self.mode}{', context windows' if windowed else ''}); set refresh_budget to 0 or change those settings.")
        nonkey = sorted(set(range(self.frames)) - set(self.keyframes))
        if not set(refresh) <= set(nonkey):
            raise RuntimeError(f"RhymeFlow: refresh frames {refresh} are not all non-keyframes {nonkey}.")
        device = self.key_rows.device
        self.refresh = tuple(refresh)
        self.key_frames = torch.as_tensor(list(self.keyframes) + list(refresh), dtype=torch.long, device=device)
        self.key_rows = frame_rows(self.key_frames.tolist(), self.per_frame, device)
        # Buffers hold [keyframe scratch rows, non-keyframe rows in frame order]: frame f sits at scratch + j·per_frame.
        self.refresh_at = self.scratch + frame_rows([nonkey.index(f) for f in refresh], self.per_frame, device)

    @property
    def scratch(self) -> int:
        """Keyframe rows: the free rows in front of the cached buffers (refresh rows are not among them)."""
        return len(self.keyframes) * self.per_frame

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
        """Fresh keyframe rows written into the scratch rows of `block`'s buffers: [keyframes, cached non-keyframes].
        In a partial pass `fresh` also holds the refresh frames' rows, after the keyframes' ones."""
        buffers = self.load(block, fresh[0].device)
        for buf, rows in zip(buffers, fresh, strict=True):
            buf.narrow(dim, 0, self.scratch).copy_(rows.narrow(dim, 0, self.scratch))
            if self.refresh:   # a partial pass: the refresh frames' fresh rows replace their stale cached rows
                buf.index_copy_(dim, self.refresh_at, rows.narrow(dim, self.scratch, rows.shape[dim] - self.scratch))
        if self.refresh:   # and stay there for the group's later active passes
            self.run.cache_for(self.to, fresh[0].device).keep_rows(self.signature, block, buffers, self.refresh_at, dim)
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
    # Whether `run_pass` honours `ctx.group` (sequence-parallel passes, docs/multi_gpu.md §4).
    sequence_parallel = False
    # Whether `run_pass` honours `ctx.refresh` (partial passes, docs/algorithm.md §11): queries are `ctx.key_frames`.
    partial_passes = False

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

    def check_parallel(self, diffusion_model, ctx: PassContext) -> None:
        """Raise RhymeFlowInputError for what this family's sequence-parallel passes cannot do."""

    def bypassed_modules(self, diffusion_model) -> Iterator[tuple[str, torch.nn.Module]]:
        """(name, module) of the block modules whose own `forward` `run_pass` never calls (it calls their parts)."""
        return iter(())

    # ---- the template ------------------------------------------------------------------------
    def forward(self, diffusion_model, run: RhymeFlowRun, to: dict, args: tuple, kwargs: dict) -> torch.Tensor:
        group = parallel.sequence_group(to)
        if group is None:
            ctx = self._prepare(diffusion_model, run, to, args, kwargs)
        else:   # every rank prepares, then all agree before the pass's first collective (parallel.py)
            x = args[0] if args else kwargs["x"]
            plan = (run.plan.kind, run.plan.keyframes, tuple(x.shape))
            ctx = group.agreed(lambda: self._prepare_parallel(diffusion_model, run, to, args, kwargs, group), plan)
        return self.run_pass(diffusion_model, ctx, args, kwargs)

    def _prepare(self, diffusion_model, run: RhymeFlowRun, to: dict, args: tuple, kwargs: dict) -> PassContext:
        if run.plan.refresh and not self.partial_passes:
            raise RhymeFlowInputError(f"partial passes (refresh_budget > 0) support Wan only, not {self.name}; "
                                      "set refresh_budget to 0.")
        self.check_call(diffusion_model, to, args, kwargs)
        _warn_block_patches(run, to)
        _warn_forward_patches(run, self.bypassed_modules(diffusion_model))
        frames, per_frame = self.token_grid(diffusion_model, args, kwargs)
        x = args[0] if args else kwargs["x"]
        return PassContext.build(run, to, frames, per_frame, x.device)

    def _prepare_parallel(self, diffusion_model, run, to, args, kwargs, group) -> PassContext:
        if not self.sequence_parallel:
            raise RhymeFlowInputError(f"sequence-parallel RhymeFlow passes support Wan only, not {self.name}; "
                                      "run this model on one GPU per sampling run.")
        if run.plan.refresh:
            raise RhymeFlowInputError("partial passes (refresh_budget > 0) do not run sequence-parallel; set refresh_budget to 0.")
        ctx = self._prepare(diffusion_model, run, to, args, kwargs)
        ctx.group = group
        self.check_parallel(diffusion_model, ctx)
        return ctx


ALL, KEY, BUF = "all", "key", "buf"   # row sets: every row; keyframe rows; a cached buffer's rows
MINE = "mine"   # row set of a sequence-parallel pass: this rank's share of the query rows (per-row modulation)


class SingleStreamBlocks:
    """RECORD and ACTIVE passes over blocks of one shape: per-row modulation -> self-attention ->
    the rest of the block (cross-attention, FFN). Wan's and LTX-Video's blocks have it; a family
    subclasses this with its block math, and the passes (what is cached, which rows are queries)
    are written once, here.

    Row sets: ALL (a RECORD pass: every row), KEY (an ACTIVE pass's queries), BUF (a cached
    buffer's rows in `hidden_cache`: keyframes first, then the non-keyframes), MINE (a sequence-parallel
    pass: this rank's share of the query rows).
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

    # Sequence-parallel passes (`sharded`) split `finish` around the all-to-alls: a family that supports
    # them (ActivePassAdapter.sequence_parallel) also writes these three.
    def heads(self, block) -> tuple[int, int]:
        """(attention heads, head dim) of the block's self-attention."""
        raise NotImplementedError

    def attend(self, block, q, k, v, heads: int) -> torch.Tensor:
        """Self-attention of [B, n, heads·d] queries over [B, m, heads·d] keys and values."""
        raise NotImplementedError

    def rest(self, block, x, y, mod) -> torch.Tensor:
        """The block after self-attention, from its output `y` (before the output projection)."""
        raise NotImplementedError

    # ---- the passes --------------------------------------------------------------------------
    # Each block runs as plain pass functions (below) of this object, the block and tensors, compiled
    # like the block when the user compiled the blocks (compiled_blocks.py); the cache's store and load
    # happen between them, eager.
    def _call(self, fn, block, *args):
        module, fn = compiled_blocks.pass_function(block, fn)
        return fn(self, module, *args)

    def record(self, blocks, x: torch.Tensor) -> torch.Tensor:
        """A full pass that also records what the next active passes need of the non-keyframes."""
        ctx = self.ctx
        ctx.reserve(x, len(blocks))
        for i, block in enumerate(blocks):
            ctx.to["block_index"] = i
            if ctx.mode == ContextMode.HIDDEN_CACHE:
                ctx.store(i, x)
            x, k, v = self._call(_full_block, block, x)
            if ctx.mode == ContextMode.KV_CACHE:
                ctx.store(i, k, v)
        return x

    def active(self, blocks, x: torch.Tensor) -> torch.Tensor:
        """Keyframe rows through every block; the non-keyframes' context from the cache."""
        ctx = self.ctx
        hidden = ctx.mode == ContextMode.HIDDEN_CACHE
        for i, block in enumerate(blocks):
            ctx.to["block_index"] = i
            x, mod, q, *kv = self._call(_keyframe_attention_inputs, block, x, not hidden)
            if hidden:
                # Stale non-keyframe block inputs, re-modulated with the current timestep(s) and projected again.
                (buffer,) = ctx.with_cached(i, x)
                x = self._call(_finish_from_hidden, block, x, mod, q, buffer)
                continue
            if ctx.cached:  # kv_cache: fresh keyframe K/V into the scratch rows of the cached buffers
                kv = ctx.with_cached(i, *kv)
            x = self._call(_finish, block, x, mod, q, *kv)
        return x

    def sharded(self, blocks, x: torch.Tensor, rows: int) -> torch.Tensor:
        """A RECORD or ACTIVE pass under Ulysses (docs/multi_gpu.md §4): `x` holds this rank's share of the pass's
        `rows` query rows (parallel.SequenceGroup.shard; row set MINE); returns every rank's `rows` outputs.
        The math runs as pass functions (compiled like the blocks), the all-to-alls and the cache between them."""
        ctx, group = self.ctx, self.ctx.group
        for i, block in enumerate(blocks):
            ctx.to["block_index"] = i
            heads, d = self.heads(block)
            x, mod, *qkv = self._call(_attention_inputs, block, x)
            q, k, v = (group.rows_to_heads(t.unflatten(2, (heads, d))) for t in qkv)   # every row, my heads
            k, v = self._sharded_context(i, len(blocks), k[:, :rows], v[:, :rows])   # padded rows are queries only
            y = self.attend(block, q.flatten(2), k.flatten(2), v.flatten(2), heads // group.world)
            x = self._call(_after_attention, block, x, group.heads_to_rows(y.unflatten(2, (-1, d))).flatten(2), mod)
        return group.gather_rows(x)[:, :rows]

    def _sharded_context(self, block: int, blocks: int, k, v):
        """RECORD: store my heads' non-keyframe K/V ([B, L, H/W, d]); ACTIVE: fresh keyframe K/V + my heads' cache."""
        ctx = self.ctx
        if not ctx.cached:
            return k, v
        if ctx.recording:
            if block == 0:
                ctx.reserve(k, blocks)
            ctx.store(block, k, v)
            return k, v
        return ctx.with_cached(block, k, v)


# ---- pass functions: plain functions of (blocks, block, tensors), so they can run compiled ----------------
def _full_block(blocks: SingleStreamBlocks, block, x):
    """The block over every row; also returns its roped K and V (a rhythmic point records them)."""
    mod = blocks.modulation(block, ALL, x)
    x = x.contiguous()
    y = blocks.modulate(block, x, mod)
    q, (k, v) = blocks.q(block, y, ALL), blocks.kv(block, y, ALL)
    return blocks.finish(block, x, q, k, v, mod), k, v


def _keyframe_attention_inputs(blocks: SingleStreamBlocks, block, x, with_kv: bool):
    """(x, modulation, keyframe queries[, keyframe K, V]) of an active pass, before the cache is read."""
    mod = blocks.modulation(block, KEY, x)
    x = x.contiguous()
    y = blocks.modulate(block, x, mod)
    q = blocks.q(block, y, KEY)
    return (x, mod, q) + (blocks.kv(block, y, KEY) if with_kv else ())


def _attention_inputs(blocks: SingleStreamBlocks, block, x):
    """(x, modulation, q, k, v) of this rank's rows (row set MINE) in a sequence-parallel pass."""
    mod = blocks.modulation(block, MINE, x)
    x = x.contiguous()
    y = blocks.modulate(block, x, mod)
    return (x, mod, blocks.q(block, y, MINE)) + blocks.kv(block, y, MINE)


def _after_attention(blocks: SingleStreamBlocks, block, x, y, mod):
    return blocks.rest(block, x, y, mod)


def _finish(blocks: SingleStreamBlocks, block, x, mod, q, k, v):
    return blocks.finish(block, x, q, k, v, mod)


def _finish_from_hidden(blocks: SingleStreamBlocks, block, x, mod, q, hidden):
    """hidden_cache: K/V of [keyframe rows, cached non-keyframe block inputs] re-modulated now, then the block's rest."""
    k, v = blocks.kv(block, blocks.modulate(block, hidden, blocks.modulation(block, BUF, x)), BUF)
    return blocks.finish(block, x, q, k, v, mod)


def scatter_keyframes(out: torch.Tensor, ctx: PassContext) -> torch.Tensor:
    """[B, C, M, H, W] query-frame outputs (`ctx.key_frames`) -> [B, C, F, H, W] with zeros at other frames (never used)."""
    full = out.new_zeros((out.shape[0], out.shape[1], ctx.frames) + tuple(out.shape[3:]))
    return full.index_copy_(2, ctx.key_frames, out)


def _warn_forward_patches(run: RhymeFlowRun, modules: Iterator[tuple[str, torch.nn.Module]]) -> None:
    """A patch that replaces a block module's `forward` (ModelPatcher.add_object_patch, e.g. KJNodes'
    Enhance-A-Video on `blocks.N.self_attn.forward`) cannot apply where the passes compute that module's
    parts themselves; it needs every row, which an active pass does not have. Object patches hold for the
    whole run, so the blocks are looked at once per run, not in every pass."""
    if run.memo.setdefault("forward_patches_checked", False):
        return
    run.memo["forward_patches_checked"] = True
    patched = [name for name, module in modules if _forward_replaced(compat.compiled_module(module)[0])]
    if patched:
        more = f" and {len(patched) - 1} more" if len(patched) > 1 else ""
        run.report.warn("forward_patches", f"{patched[0]}.forward{more} replaced by a patch (e.g. Enhance-A-Video): "
                                           "the patch applies in warm-up passes only, not in rhythmic or active passes.")


def _forward_replaced(module: torch.nn.Module) -> bool:
    """Whether an instance attribute replaces the class's `forward`. Undoing an object patch
    (ModelPatcher.unpatch_model, comfy/model_patcher.py) sets the attribute back to the class's own
    bound method, which is not a patch."""
    forward = vars(module).get("forward")
    return forward is not None and getattr(forward, "__func__", None) is not type(module).forward


def _warn_block_patches(run: RhymeFlowRun, to: dict) -> None:
    if to.get("patches_replace", {}).get("dit"):
        run.report.warn("block_patches", "block-replace patches (e.g. skip-layer guidance) apply only in warm-up passes, "
                                         "not in rhythmic or active passes.")
