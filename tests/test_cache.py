"""The context cache: cond and uncond kept apart however ComfyUI batches them, placement, buffer reuse,
and the host-memory path (pinned buffers + staging slots); its CUDA stream calls only run on a GPU,
the copying logic around them runs here with plain copies."""
import logging

import torch

from rhymeflow_core import cache as cache_mod
from rhymeflow_core.cache import ContextCache, _PinnedArena, _Prefetcher, place

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
GB = 10 ** 9


def test_rebatched_conds_are_gathered_by_uuid():
    cache = ContextCache("gpu")
    cache.choose_device(CPU, 0)
    cond, uncond = torch.full((1, 4, 2), 1.0), torch.full((1, 4, 2), 2.0)
    cache.store(("c", "u"), 0, (torch.cat([cond, uncond]),))       # recorded batched
    (alone,) = cache.load(("u",), 0, CPU)                           # read one by one
    assert torch.equal(alone, uncond)
    (swapped,) = cache.load(("u", "c"), 0, CPU)
    assert torch.equal(swapped, torch.cat([uncond, cond]))
    cache.clear()
    assert cache.nbytes() == 0


def test_placement_decisions():
    assert place("gpu", CPU, 10 * GB)[0] == CPU                     # nothing but the CPU to compute on
    assert place("cpu", CUDA, 1)[0] == CPU
    assert place("gpu", CUDA, 10 ** 12)[0] == CUDA                  # asked for: no check
    # auto: the GPU only with room left for activations (at least 4 GiB, or 1/8 of the free memory)
    assert place("auto", CUDA, 11 * GB, free_bytes=40 * GB)[0] == CUDA
    assert place("auto", CUDA, 11 * GB, free_bytes=14 * GB)[0] == CPU
    assert place("auto", CUDA, 49 * GB, free_bytes=52 * GB)[0] == CPU
    device, reason = place("auto", CUDA, 49 * GB, free_bytes=52 * GB)
    assert "does not fit" in reason and "52.0 GB free" in reason


def test_auto_logs_its_choice_and_the_cache_size(caplog, monkeypatch):
    monkeypatch.setattr(cache_mod, "free_memory", lambda device: 80 * GB)
    monkeypatch.setattr(cache_mod, "_Prefetcher", lambda *a: None)   # no CUDA here: just the decision
    with caplog.at_level(logging.INFO, logger="RhymeFlow"):
        assert ContextCache("auto").choose_device(CUDA, 11 * GB) == CUDA
        assert ContextCache("auto").choose_device(CUDA, 79 * GB) == CPU
    assert "11.00 GB on cuda (auto: fits in 80.0 GB free" in caplog.text
    assert "79.00 GB on cpu, pinned, prefetched one block ahead (auto: does not fit" in caplog.text


def _rows(batch=2, length=7, dim=3, seed=0):
    return torch.randn(batch, length, dim, generator=torch.Generator().manual_seed(seed))


def test_recordings_reuse_their_buffers_and_loads_leave_scratch_rows():
    cache = ContextCache("gpu")
    cache.choose_device(CPU, 0)
    rows = torch.tensor([1, 3, 4, 6])
    k, v = _rows(seed=1), _rows(seed=2)
    cache.store(("c",), 0, (k, v), rows, scratch=3)
    first = cache.load(("c",), 0, CPU)
    assert [t.shape for t in first] == [(2, 7, 3)] * 2                  # 3 scratch rows + 4 kept rows
    assert torch.equal(first[0][:, 3:], k[:, rows]) and torch.equal(first[1][:, 3:], v[:, rows])
    size = cache.nbytes()
    cache.store(("c",), 0, (v, k), rows, scratch=3)                    # the next rhythmic point
    again = cache.load(("c",), 0, CPU)
    assert again[0].data_ptr() == first[0].data_ptr() and cache.nbytes() == size == cache.peak_bytes
    assert torch.equal(again[0][:, 3:], v[:, rows])


def _host_cache(blocks=3):
    """A cache on the host path (pinned buffers + staging), run with plain CPU copies."""
    cache = ContextCache("cpu")
    cache.device = CPU
    cache._prefetch = _Prefetcher(CPU)
    rows = torch.tensor([2, 3, 5])
    recorded = [(_rows(seed=10 + i), _rows(seed=20 + i)) for i in range(blocks)]
    for i, kv in enumerate(recorded):
        cache.store(("c", "u"), i, kv, rows, scratch=2)
    return cache, rows, recorded


def test_host_path_keeps_only_kept_rows_and_stages_them_behind_scratch_rows():
    cache, rows, recorded = _host_cache()
    (host_k, _), = cache.entries[("c", "u")][:1]
    assert host_k.shape == (2, 3, 3), "host buffers hold no scratch rows"
    slots = []
    for i, (k, v) in enumerate(recorded):
        k_buf, v_buf = cache.load(("c", "u"), i, CPU)
        assert torch.equal(k_buf[:, 2:], k[:, rows]) and torch.equal(v_buf[:, 2:], v[:, rows])
        k_buf[:, :2] = -1.0                                             # the active pass writes keyframe rows
        slots.append(k_buf.data_ptr())
    assert slots[0] == slots[2] != slots[1], "two staging slots, alternating by block"
    assert not (cache.entries[("c", "u")][0][0] == -1.0).any(), "scratch writes never reach the host copy"
    assert not cache._prefetch.pending, "every prefetched block was consumed"


def test_host_path_prefetches_the_next_block_and_drops_stale_prefetches():
    cache, rows, recorded = _host_cache()
    cache.load(("c", "u"), 0, CPU)
    assert set(cache._prefetch.pending) == {(("c", "u"), 1)}
    # An interrupted pass left block 1 prefetched; a new recording must not serve those rows.
    new = (_rows(seed=99), _rows(seed=98))
    cache.store(("c", "u"), 0, recorded[0], rows, scratch=2)
    cache.store(("c", "u"), 1, new, rows, scratch=2)
    cache.load(("c", "u"), 0, CPU)
    k_buf, _ = cache.load(("c", "u"), 1, CPU)
    assert torch.equal(k_buf[:, 2:], new[0][:, rows])


def test_host_path_gathers_rebatched_conds_with_scratch_rows():
    cache, rows, recorded = _host_cache(blocks=1)
    (k_u, v_u) = cache.load(("u",), 0, CPU)
    assert k_u.shape == (1, 5, 3) and torch.equal(k_u[:, 2:], recorded[0][0][1:, rows])
    cache.clear()
    assert not cache.entries and cache.nbytes() == 0 and not cache._prefetch.slots


def test_pinned_arena_carves_aligned_views_from_chunks():
    arena = _PinnedArena(expected_bytes=3000, pin=False)   # pinned memory needs CUDA; the carving is the same
    assert arena.chunk_bytes == 4096
    a = arena.empty((2, 100), torch.float32)                           # 800 bytes
    b = arena.empty((3, 100), torch.bfloat16)                          # 600 bytes, at offset 1024
    c = arena.empty((10, 100), torch.float32)                          # 4000 bytes: does not fit, a new chunk
    assert len(arena.chunks) == 2 and b.data_ptr() - a.data_ptr() == 1024 and c.data_ptr() == arena.chunks[1].data_ptr()
    a.fill_(1.0)
    b.fill_(2.0)
    assert (a == 1.0).all() and (b == 2.0).all() and a.dtype == torch.float32 and b.dtype == torch.bfloat16



def test_rows_along_any_dimension_resident_host_and_rebatched():
    """Per-head keys [B, H, L, d] (HunyuanVideo) keep their rows along dim 2, gathered straight into the buffers."""
    k = torch.randn(2, 3, 7, 4, generator=torch.Generator().manual_seed(5))
    rows = torch.tensor([1, 4, 6])
    resident = ContextCache("gpu")
    resident.choose_device(CPU, 0)
    resident.store(("c", "u"), 0, (k,), rows, scratch=2, dim=2)
    (buf,) = resident.load(("c", "u"), 0, CPU)
    assert buf.shape == (2, 3, 5, 4) and torch.equal(buf[:, :, 2:], k[:, :, rows])
    (u,) = resident.load(("u",), 0, CPU)                               # rebatched: the uncond half alone
    assert u.shape == (1, 3, 5, 4) and torch.equal(u[:, :, 2:], k[1:, :, rows])
    host = ContextCache("cpu")
    host.device, host._prefetch = CPU, _Prefetcher(CPU)
    host.store(("c", "u"), 0, (k,), rows, scratch=2, dim=2)
    assert host.entries[("c", "u")][0][0].shape == (2, 3, 3, 4), "host buffers hold the kept rows only"
    (staged,) = host.load(("c", "u"), 0, CPU)
    assert staged.shape == (2, 3, 5, 4) and torch.equal(staged[:, :, 2:], k[:, :, rows])
    (u,) = host.load(("u",), 0, CPU)
    assert u.shape == (1, 3, 5, 4) and torch.equal(u[:, :, 2:], k[1:, :, rows])
