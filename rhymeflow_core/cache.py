"""Per-layer context cache: what non-keyframe tokens contribute to attention in active passes.

One entry per block, recorded at each rhythmic point, per batch signature (the tuple of cond
uuids ComfyUI put in the call, so cond and uncond keep separate caches whether they arrive
batched or one by one). Rows are token rows along one dimension of the cached tensors (`dim`:
1 for [B, L, D], 2 for per-head [B, H, L, d]). `load` returns, per cached tensor, a buffer with
`A + S` rows whose first `A` rows (the keyframe rows) are scratch, so an active pass writes its
fresh keyframe rows in place instead of concatenating a full-size copy per block.

Placement (decided once per run and device, at its first recording, and logged):
  resident  cache on the compute device: the stored buffers themselves are returned;
  host      cache in CPU memory while computing on CUDA: pinned [B, S, D] buffers, copied to
            two GPU staging slots on a side stream, one block ahead of the compute (`_Prefetcher`).
Buffers are allocated at the first recording and reused by later ones (no allocator churn, and
pinned memory is expensive to allocate).

A run holds one cache per compute device (`DeviceCaches`): ComfyUI's MultiGPU CFG split runs cond
and uncond at once on per-device model clones (docs/multi_gpu.md), and each device records, places
and reads its own cache.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import threading

import torch

from .compat import free_memory, log

CACHE_DEVICES = ("auto", "gpu", "cpu")
AUTO_MARGIN_BYTES = 4 << 30   # `auto` leaves at least this much (or 1/8 of the free memory) for activations
PINNED_CHUNK_BYTES = 4 << 30  # pinned memory comes in chunks of this size (or less for a smaller cache)


def place(placement: str, compute_device: torch.device, expected_bytes: int, free_bytes=None) -> tuple[torch.device, str]:
    """(cache device, reason). `free_bytes` is looked up only when `auto` needs it."""
    cpu = torch.device("cpu")
    if compute_device.type == "cpu":
        return cpu, "computing on the CPU"
    if placement == "cpu":
        return cpu, "cache_device=cpu"
    if placement == "gpu":
        return compute_device, "cache_device=gpu"
    free = free_memory(compute_device) if free_bytes is None else free_bytes
    margin = max(AUTO_MARGIN_BYTES, free // 8)
    fits = expected_bytes + margin <= free
    verdict = "fits" if fits else "does not fit"
    return (compute_device if fits else cpu), f"auto: {verdict} in {free / 1e9:.1f} GB free with a {margin / 1e9:.1f} GB margin"


class ContextCache:
    def __init__(self, placement: str = "auto", peers: DeviceCaches | None = None):
        self.placement = placement
        self.peers = peers           # the run's caches on other devices, read when a cond moved device
        self.device = None           # decided at the first recording
        self.entries: dict[tuple, list[tuple[torch.Tensor, ...]]] = {}
        self.scratch: dict[tuple, tuple[int, int]] = {}   # (scratch rows in front, row dim) per signature
        self.peak_bytes = 0
        self._bytes = 0
        self._prefetch: _Prefetcher | None = None

    def choose_device(self, compute_device: torch.device, expected_bytes: int) -> torch.device:
        if self.device is None:
            self.device, reason = place(self.placement, compute_device, expected_bytes)
            host = self.device.type == "cpu" and compute_device.type == "cuda"
            if host:
                self._prefetch = _Prefetcher(compute_device, expected_bytes)
            log.info("RhymeFlow cache: %.2f GB on %s%s (%s)", expected_bytes / 1e9, self.device,
                     ", pinned, prefetched one block ahead" if host else "", reason)
        return self.device

    # ---- recording ---------------------------------------------------------------------------
    def store(self, signature: tuple, block: int, tensors: tuple[torch.Tensor, ...], rows: torch.Tensor | None = None,
              scratch: int = 0, dim: int = 1) -> None:
        """Keep rows `rows` (along `dim`; all if None) of each tensor for `block`.

        Loads return them behind `scratch` free rows. The buffers of the first recording are reused,
        and the rows are gathered straight into them (no temporary of the whole tensor).
        """
        blocks = self.entries.setdefault(signature, [])
        lead = 0 if self._prefetch is not None else scratch   # host buffers hold only the kept rows
        self.scratch[signature] = (scratch, dim)
        kept = tuple(_with_rows(t.shape, dim, t.shape[dim] if rows is None else rows.numel()) for t in tensors)
        wanted = tuple(_with_rows(shape, dim, lead + shape[dim]) for shape in kept)
        if block < len(blocks) and all(buf.dtype == t.dtype and buf.shape == shape
                                       for buf, t, shape in zip(blocks[block], tensors, wanted, strict=True)):
            buffers = blocks[block]
        else:
            buffers = tuple(self._allocate(shape, t.dtype) for t, shape in zip(tensors, wanted, strict=True))
            if block < len(blocks):
                self._bytes -= _nbytes(blocks[block])
                blocks[block] = buffers
            elif block == len(blocks):
                blocks.append(buffers)
            else:
                raise RuntimeError(f"RhymeFlow: cache blocks recorded out of order ({block} after {len(blocks)}).")
        if self._prefetch is not None:
            self._prefetch.to_host(buffers, tuple(t if rows is None else t.index_select(dim, rows) for t in tensors), block)
            return
        for buf, t in zip(buffers, tensors, strict=True):
            # Below `dim` each destination's rows are contiguous: gather straight in, one slice at a time.
            for index in itertools.product(*map(range, t.shape[:dim])):
                dst = buf[index][lead:]
                if rows is None:
                    dst.copy_(t[index])
                else:
                    torch.index_select(t[index], 0, rows, out=dst)

    def _allocate(self, shape: tuple, dtype) -> torch.Tensor:
        if self._prefetch is not None and self._prefetch.arena is not None:
            buf = self._prefetch.arena.empty(shape, dtype)
        else:
            buf = torch.empty(shape, dtype=dtype, device=self.device)
        self._bytes += buf.numel() * buf.element_size()
        self.peak_bytes = max(self.peak_bytes, self._bytes)
        return buf

    # ---- active passes -----------------------------------------------------------------------
    def load(self, signature: tuple, block: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        blocks = self.entries.get(signature)
        if blocks is None or block >= len(blocks):
            return self._assemble(signature, block, device)
        if self._prefetch is not None:
            return self._prefetch.load(signature, blocks, block, *self.scratch[signature])
        return blocks[block]

    def keep_rows(self, signature: tuple, block: int, buffers: tuple[torch.Tensor, ...], positions: torch.Tensor,
                  dim: int) -> None:
        """Rows `positions` of `buffers` (as `load` returned them, after a partial pass rewrote them) stay for the
        group's later loads. A resident cache returned its own buffers, rewritten in place already; a host cache
        gets them copied back (its buffers hold no scratch rows in front). A cache assembled for a different
        batching keeps none: later passes read the rhythmic point's rows, as without partial passes."""
        blocks = self.entries.get(signature)
        if blocks is None or block >= len(blocks) or self._prefetch is None:
            return
        scratch, _ = self.scratch[signature]
        host_positions = (positions - scratch).cpu()
        for host, buf in zip(blocks[block], buffers, strict=True):
            host.index_copy_(dim, host_positions, buf.index_select(dim, positions).to(host.device))

    def _assemble(self, signature: tuple, block: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """ComfyUI batched the conds differently than at the rhythmic point, or (MultiGPU CFG split) sent a
        cond to another device than the one that recorded it: gather each cond's rows into new buffers."""
        parts, scratch, dim = [], 0, 1
        for uuid in signature:
            found = self._find(uuid, block)
            if found is None:
                raise RuntimeError(
                    f"RhymeFlow: no context cache for conditioning {uuid} at block {block}; an active pass ran "
                    "without a rhythmic point recording it. Please report this with your workflow.")
            rows, scratch, dim = found
            parts.append(rows)
        gathered = tuple(torch.cat(ts, dim=0).to(device) for ts in zip(*parts, strict=True))
        out = tuple(t.new_empty(_with_rows(t.shape, dim, scratch + t.shape[dim])) for t in gathered)
        for o, t in zip(out, gathered, strict=True):
            o.narrow(dim, scratch, t.shape[dim]).copy_(t)
        return out

    def _find(self, uuid, block: int):
        """(the recorded non-keyframe rows of `uuid` at `block`, scratch rows, row dim): from this cache, else
        from the run's cache on another device. None if no recording holds it."""
        for cache in [self, *(c for c in (self.peers.all() if self.peers else ()) if c is not self)]:
            for recorded, blocks in list(cache.entries.items()):
                if uuid in recorded and block < len(blocks):
                    if cache._prefetch is not None:
                        cache._prefetch.wait_host()   # host buffers are read directly
                    scratch, dim = cache.scratch[recorded]
                    lead = 0 if cache._prefetch is not None else scratch   # host buffers hold only the kept rows
                    k = recorded.index(uuid)
                    rows = tuple(t.chunk(len(recorded), dim=0)[k].narrow(dim, lead, t.shape[dim] - lead)
                                 for t in blocks[block])
                    return rows, scratch, dim
        return None

    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        if self._prefetch is not None:
            self._prefetch.clear()
        self.entries.clear()
        self.scratch.clear()
        self._bytes = 0


class DeviceCaches:
    """The context caches of one run, one per compute device, each placed by its own device's memory.

    Without a multi-GPU split only `first` is used. With ComfyUI's MultiGPU CFG split (v0.33+,
    comfy/samplers.py `_calc_cond_batch_multigpu`) one thread per device runs its model clone with the
    same run, so each device gets its own cache: no buffer is written by two threads, and no
    recording made on one GPU is indexed from another. Keys are the host's thread device
    (`compat.call_device`); the first key to ask gets `first`.
    """

    def __init__(self, placement: str = "auto"):
        self.placement = placement
        self.first = ContextCache(placement, peers=self)
        self._by_key: dict = {}
        self._lock = threading.Lock()   # device threads ask at the same time

    def get(self, key) -> ContextCache:
        with self._lock:
            cache = self._by_key.get(key)
            if cache is None:
                cache = self.first if not self._by_key else ContextCache(self.placement, peers=self)
                self._by_key[key] = cache
            return cache

    def all(self) -> list[ContextCache]:
        with self._lock:
            return list(dict.fromkeys([self.first, *self._by_key.values()]))

    def by_key(self) -> dict:
        """{device key: its cache}, for tests and tools that look at one device's cache."""
        with self._lock:
            return dict(self._by_key)

    def devices(self) -> str | None:
        """Where the caches live, e.g. "cuda:0, cuda:1" (each device once); None when nothing was cached."""
        placed = dict.fromkeys(str(c.device) for c in self.all() if c.device is not None)
        return ", ".join(placed) or None

    def peak_bytes(self) -> int:
        return sum(c.peak_bytes for c in self.all())

    def clear(self) -> None:
        for cache in self.all():
            cache.clear()


def _with_rows(shape, dim: int, rows: int) -> tuple:
    return tuple(shape[:dim]) + (rows,) + tuple(shape[dim + 1:])


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class _Prefetcher:
    """Copies between pinned host buffers and the compute device on one side stream (CUDA).

    All copies go through the one side stream, so they run in the order issued: a block's rows
    reach the host before they are read back. Each block is copied into staging slot
    `block % 2` while the previous block computes; the compute waits on the copy's event, and
    the side stream waits for the compute already queued before it overwrites a slot.
    Without CUDA (tests) the same logic runs with plain synchronous copies.
    """

    def __init__(self, device: torch.device, expected_bytes: int = 0):
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.arena = _PinnedArena(expected_bytes) if self.stream is not None else None
        self.slots: dict[tuple, tuple[torch.Tensor, ...]] = {}   # (signature, parity) -> staging tensors
        self.pending: dict[tuple, tuple] = {}                   # (signature, block) -> (event, slot)

    def to_host(self, host: tuple[torch.Tensor, ...], rows: tuple[torch.Tensor, ...], block: int) -> None:
        if block == 0:
            self.pending.clear()   # a new recording: nothing prefetched earlier is valid
        self._after_compute()
        with self._side():
            for dst, src in zip(host, rows, strict=True):
                for b in range(src.shape[0]):   # per batch item: both sides contiguous, a plain DMA copy
                    dst[b].copy_(src[b], non_blocking=True)
                if self.stream is not None:
                    src.record_stream(self.stream)   # keep `src` alive until the copy has run

    def load(self, signature: tuple, blocks: list, block: int, scratch: int, dim: int) -> tuple[torch.Tensor, ...]:
        if block == 0:
            self.pending.clear()   # an interrupted pass may have left a prefetch behind
        if (signature, block) not in self.pending:
            self._issue(signature, blocks, block, scratch, dim)
        if block + 1 < len(blocks):
            self._issue(signature, blocks, block + 1, scratch, dim)   # overlaps with this block's compute
        event, slot = self.pending.pop((signature, block))
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        return slot

    def _issue(self, signature, blocks, block, scratch, dim) -> None:
        host = blocks[block]
        slot = self._slot(signature, block % 2, host, scratch, dim)
        self._after_compute()   # the slot's last reader (block - 2, or block - 1's queue) has been issued
        with self._side():
            for dst, src in zip(slot, host, strict=True):
                for b in range(src.shape[0]):
                    dst[b].narrow(dim - 1, scratch, src.shape[dim]).copy_(src[b], non_blocking=True)
            event = None
            if self.stream is not None:
                event = torch.cuda.Event()
                event.record(self.stream)
        self.pending[(signature, block)] = (event, slot)

    def _slot(self, signature, parity, host, scratch, dim) -> tuple[torch.Tensor, ...]:
        key = (signature, parity)
        shapes = tuple(_with_rows(h.shape, dim, scratch + h.shape[dim]) for h in host)
        slot = self.slots.get(key)
        if slot is None or tuple(s.shape for s in slot) != shapes:
            slot = tuple(torch.empty(shape, dtype=h.dtype, device=self.device) for shape, h in zip(shapes, host, strict=True))
            self.slots[key] = slot
        return slot

    def _after_compute(self) -> None:
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def _side(self):
        return torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()

    def wait_host(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def clear(self) -> None:
        self.wait_host()   # no copy may still read or write buffers about to be freed
        self.pending.clear()
        self.slots.clear()
        if self.arena is not None:
            self.arena.clear()


class _PinnedArena:
    """Pinned host buffers carved from large chunks.

    PyTorch's pinned allocator rounds each allocation up to a power of two, which would waste up
    to half of a 50 GB cache made of 600 MB block buffers; chunks of a power-of-two size waste only
    the tail that no further buffer fits in.
    """

    ALIGN = 512

    def __init__(self, expected_bytes: int, pin: bool = True):
        self.pin = pin
        self.chunk_bytes = min(PINNED_CHUNK_BYTES, 1 << max(expected_bytes - 1, 1).bit_length())
        self.chunks: list[torch.Tensor] = []
        self.used = 0

    def empty(self, shape, dtype) -> torch.Tensor:
        itemsize = torch.empty((), dtype=dtype).element_size()
        nbytes = math.prod(shape) * itemsize
        if not self.chunks or self.used + nbytes > self.chunks[-1].numel():
            self.chunks.append(torch.empty(max(self.chunk_bytes, nbytes), dtype=torch.uint8, pin_memory=self.pin))
            self.used = 0
        view = self.chunks[-1][self.used:self.used + nbytes].view(dtype).view(shape)
        self.used += -(-nbytes // self.ALIGN) * self.ALIGN
        return view

    def clear(self) -> None:
        self.chunks.clear()
        self.used = 0
