"""Sequence parallelism (Ulysses) for RECORD and ACTIVE passes: the group, its collectives, its refusals.

docs/multi_gpu.md, "Sequence parallel (Ulysses)". Every rank of a Ulysses group calls the model with the
same full inputs (as Raylight's and xDiT's Wan forwards do) and gets the same full output. Inside a pass
each rank takes an even share of the pass's query rows (all rows in a RECORD pass, the keyframe rows in
an ACTIVE pass; the last share padded with copies of the last row, queries only), projects them, and two
all-to-alls per block trade rows for heads around attention: each rank attends with every row of its own
heads. So each rank's cache holds the non-keyframe K/V of its own heads ([B, S, H / W, d], `dim=1`).

A group is active when the call's transformer_options carry one (`GROUP_KEY`, set by an engine or a
test), or when xDiT (xFuser) or yunchang has initialised a Ulysses group in this process (found only if
the engine imported them: nothing is imported here). Without a group larger than one the passes are
today's single-device passes (`sequence_group` returns None after a dict and a module-table lookup).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import RhymeFlowInputError

GROUP_KEY = "rhymeflow_sp_group"   # transformer_options key: a SequenceGroup an engine or test activates
_XFUSER = "xfuser.core.distributed.parallel_state"
_YUNCHANG = "yunchang.globals"


@dataclass(frozen=True)
class SequenceGroup:
    """A Ulysses process group as the passes use it: this rank's place and the engine's other degrees."""
    group: object              # torch.distributed ProcessGroup of the Ulysses ranks
    rank: int                  # this process's rank in `group`
    world: int                 # the Ulysses degree
    ring: int = 1              # ring-attention degree beside it (refused above 1)
    pipeline: int = 1          # PipeFusion degree (refused above 1)

    @classmethod
    def of(cls, group, ring: int = 1, pipeline: int = 1) -> SequenceGroup:
        return cls(group, dist.get_rank(group), dist.get_world_size(group), ring, pipeline)

    # ---- rows: which of a pass's query rows this rank computes -----------------------------------
    def shard(self, rows: int, device) -> torch.Tensor:
        """Positions of this rank's share of `rows` rows: ceil(rows / W) each, consecutive; shares past the
        end repeat the last row (padding: queries only, never keys, so no result depends on it)."""
        per = -(-rows // self.world)
        return torch.arange(self.rank * per, (self.rank + 1) * per, device=device).clamp_(max=rows - 1)

    # ---- the two all-to-alls of a block, and the gather after the last block ---------------------
    def rows_to_heads(self, t: torch.Tensor) -> torch.Tensor:
        """[B, n, H, d] (my rows, every head) -> [B, W·n, H/W, d] (every rank's rows in rank order, my heads)."""
        b, n, h, d = t.shape
        send = t.reshape(b, n, self.world, h // self.world, d).permute(2, 0, 1, 3, 4).contiguous()
        recv = torch.empty_like(send)            # chunk r: rank r's rows of my heads
        dist.all_to_all_single(recv, send, group=self.group)
        return recv.permute(1, 0, 2, 3, 4).reshape(b, self.world * n, h // self.world, d)

    def heads_to_rows(self, t: torch.Tensor) -> torch.Tensor:
        """The inverse: [B, W·n, H/W, d] -> [B, n, H, d]."""
        b, rows, hl, d = t.shape
        send = t.reshape(b, self.world, rows // self.world, hl, d).transpose(0, 1).contiguous()
        recv = torch.empty_like(send)            # chunk r: my rows of rank r's heads
        dist.all_to_all_single(recv, send, group=self.group)
        return recv.permute(1, 2, 0, 3, 4).reshape(b, rows // self.world, self.world * hl, d)

    def gather_rows(self, t: torch.Tensor) -> torch.Tensor:
        """[B, n, D] on every rank -> [B, W·n, D], the same on every rank (for the model's head)."""
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous(), group=self.group)
        return torch.cat(parts, dim=1)

    def broadcast_keyframes(self, keyframes) -> list[int]:
        """Rank 0's keyframes, on every rank: it chooses them for the group (its clean prediction decides)."""
        box = [[int(f) for f in keyframes]]
        dist.broadcast_object_list(box, src=dist.get_global_rank(self.group, 0), group=self.group)
        return box[0]

    # ---- agreement: no rank enters a pass's collectives alone ------------------------------------
    def agreed(self, prepare, state):
        """`prepare()`'s result once every rank has prepared the same pass (`state`: kind, keyframes, shapes).

        One small all-gather before any collective of the pass: if a rank raised, was interrupted, or plans
        another pass (its keyframes differ from rank 0's), every rank raises instead of waiting for it.
        """
        result, error = None, None
        try:
            result = prepare()
        except Exception as e:   # handed to the other ranks, then raised here unchanged
            error = e
        mine = (None if error is None else f"{type(error).__name__}: {error}", _interrupted(), state)
        everyone = [None] * self.world
        dist.all_gather_object(everyone, mine, group=self.group)
        if error is not None:
            raise error
        _raise_disagreement(everyone)
        return result


def _raise_disagreement(everyone: list) -> None:
    failed = [(rank, message) for rank, (message, _, _) in enumerate(everyone) if message]
    if failed:
        rank, message = failed[0]
        raise RuntimeError(f"RhymeFlow: rank {rank} of the sequence-parallel group failed ({message}); every rank stops.")
    if any(interrupted for _, interrupted, _ in everyone):
        import comfy.model_management
        raise comfy.model_management.InterruptProcessingException()
    plans = [state for _, _, state in everyone]
    if any(state != plans[0] for state in plans):
        raise RhymeFlowInputError(
            f"the ranks of the sequence-parallel group planned different passes ({plans}); every rank must sample the "
            "same inputs with the same seed and settings, so the keyframes rank 0 chose are every rank's keyframes.")


def _interrupted() -> bool:
    import comfy.model_management
    return comfy.model_management.processing_interrupted()


# ---- discovery ------------------------------------------------------------------------------------
def sequence_group(to: dict) -> SequenceGroup | None:
    """The call's Ulysses group if one larger than one is active, else None (the single-device passes)."""
    group = to.get(GROUP_KEY)
    if group is None and _XFUSER in sys.modules:
        group = _xfuser_group(sys.modules[_XFUSER])
    if group is None and _YUNCHANG in sys.modules:
        group = _yunchang_group(sys.modules[_YUNCHANG])
    return group if group is not None and group.world > 1 else None


def _xfuser_group(state) -> SequenceGroup | None:
    """xDiT's groups (xfuser/core/distributed/parallel_state.py): `get_sp_group()` holds the Ulysses and ring
    groups; Raylight's Wan forward splits the sequence over that SP group."""
    if not getattr(state, "model_parallel_is_initialized", lambda: False)():
        return None
    sp = state.get_sp_group()
    return SequenceGroup.of(sp.ulysses_group, ring=sp.ring_world_size, pipeline=state.get_pipeline_parallel_world_size())


def _yunchang_group(globals_) -> SequenceGroup | None:
    """yunchang's `PROCESS_GROUP` (yunchang/globals.py, set by `set_seq_parallel_pg`): ULYSSES_PG and RING_PG."""
    pg = getattr(globals_, "PROCESS_GROUP", None)
    ulysses = getattr(pg, "ULYSSES_PG", None)
    if ulysses is None:
        return None
    ring = getattr(pg, "RING_PG", None)
    return SequenceGroup.of(ulysses, ring=dist.get_world_size(ring) if ring is not None else 1)


# ---- refusals -------------------------------------------------------------------------------------
def check(group: SequenceGroup, heads: int, hidden_cache: bool, blocks: torch.nn.Module) -> None:
    """Raise RhymeFlowInputError for what the sequence-parallel passes cannot do."""
    if group.ring > 1:
        raise RhymeFlowInputError(f"ring attention (ring degree {group.ring}) is not supported in RhymeFlow passes; "
                                  "use Ulysses only (ring degree 1).")
    if group.pipeline > 1:
        raise RhymeFlowInputError("PipeFusion (pipeline degree > 1) is not supported in RhymeFlow passes; use Ulysses only.")
    if heads % group.world:
        raise RhymeFlowInputError(f"the Ulysses degree {group.world} does not divide the model's {heads} attention heads; "
                                  "choose a degree that divides them.")
    if hidden_cache:
        raise RhymeFlowInputError("context mode hidden_cache is not supported with sequence parallelism (its block inputs "
                                  "would need every head's rows); use kv_cache or keyframe_only.")
    if any(_sharded_weights(m) for m in blocks.children()):
        raise RhymeFlowInputError("the model's blocks are FSDP-sharded; RhymeFlow passes call the blocks' parts and need "
                                  "whole weights on every rank. Load the model without FSDP.")


def _sharded_weights(module: torch.nn.Module) -> bool:
    """FSDP1 wraps a block in FullyShardedDataParallel; FSDP2 (`fully_shard`) makes its class FSDP<name> and its
    parameters DTensors."""
    name = type(module).__name__
    if name == "FullyShardedDataParallel" or name.startswith("FSDP"):
        return True
    first = next(module.parameters(), None)
    return first is not None and type(first).__name__ == "DTensor"
