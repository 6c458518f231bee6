"""Per-layer context cache: what non-keyframe tokens contribute to attention in active passes.

One entry per block, recorded at the last rhythmic point, per batch signature (the tuple of
cond uuids ComfyUI put in the call, so cond and uncond keep separate caches whether they arrive
batched or one by one). Each entry is a full-length token buffer whose first `A` rows
(the keyframe rows) are scratch, so an active pass writes its fresh keyframe rows in place
instead of concatenating a full-size copy per block.
"""
from __future__ import annotations

import torch

from .compat import free_memory, log

CACHE_DEVICES = ("auto", "gpu", "cpu")


class ContextCache:
    def __init__(self, placement: str = "auto"):
        self.placement = placement
        self.device = None          # decided at the first recording
        self.entries: dict[tuple, list] = {}
        self.peak_bytes = 0

    def choose_device(self, compute_device: torch.device, expected_bytes: int) -> torch.device:
        if self.device is None:
            cpu = torch.device("cpu")
            if self.placement == "cpu" or compute_device.type == "cpu":
                self.device = cpu if self.placement == "cpu" else compute_device
            elif self.placement == "gpu":
                self.device = compute_device
            else:  # auto: GPU only with room to spare for activations
                free = free_memory(compute_device)
                self.device = compute_device if expected_bytes < 0.7 * free else cpu
                log.info("RhymeFlow cache: %.2f GB on %s (%.2f GB free on %s)", expected_bytes / 1e9,
                         self.device, free / 1e9, compute_device)
        return self.device

    def store(self, signature: tuple, block: int, tensors: tuple[torch.Tensor, ...]) -> None:
        blocks = self.entries.setdefault(signature, [])
        if block == 0:
            blocks.clear()
        placed = tuple(t.to(self.device) if t.device != self.device else t for t in tensors)
        blocks.append(placed)
        self.peak_bytes = max(self.peak_bytes, self.nbytes())

    def load(self, signature: tuple, block: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        blocks = self.entries.get(signature)
        entry = blocks[block] if blocks is not None and block < len(blocks) else self._assemble(signature, block)
        return tuple(t.to(device, non_blocking=True) if t.device != device else t for t in entry)

    def _assemble(self, signature: tuple, block: int) -> tuple[torch.Tensor, ...]:
        """ComfyUI batched the conds differently than at the rhythmic point: gather each cond's rows."""
        parts = []
        for uuid in signature:
            for recorded, blocks in self.entries.items():
                if uuid in recorded and block < len(blocks):
                    k = recorded.index(uuid)
                    parts.append(tuple(t.chunk(len(recorded), dim=0)[k] for t in blocks[block]))
                    break
            else:
                raise RuntimeError(
                    f"RhymeFlow: no context cache for conditioning {uuid} at block {block}; an active pass ran "
                    "without a rhythmic point recording it. Please report this with your workflow.")
        return tuple(torch.cat(ts, dim=0) for ts in zip(*parts, strict=True))

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for blocks in self.entries.values() for entry in blocks for t in entry)

    def clear(self) -> None:
        self.entries.clear()
