"""RhymeFlow inside ComfyUI core's MultiGPU CFG split (docs/multi_gpu.md), two devices stood in on the CPU.

`torch.device("cpu")` and `torch.device("cpu", 0)` are distinct keys in the host's per-device tables
and in our caches, while tensors on both are plain CPU tensors: the threads, the model clones and the
per-device state are real, the GPUs are not.

* `thread_split` (every host; 0.3.75 has no multigpu): a CALC_COND_BATCH wrapper on the test's clone
  runs the host's own `_calc_cond_batch` for cond and for uncond at once, in two threads, each on its
  own model (a fresh load of the same weights, as v0.33's deep clones are) and naming its device in `multigpu_thread_device`, the shape of v0.33's
  `_calc_cond_batch_multigpu` (comfy/samplers.py).
* `core_split` (hosts with `comfy.multigpu`, v0.33+): the host's MultiGPU CFG Split itself
  (`create_multigpu_deepclones`, what the node runs), with `get_all_torch_devices` answering two devices.
"""
import threading

import comfy.model_management
import comfy.patcher_extension
import comfy.samplers
import pytest
import torch

from helpers import last_report, latent_and_noise, patched, rel_err, rhymeflow, sample, sigmas_for
from rhymeflow_core import compat
from rhymeflow_core.cache import DeviceCaches, _Prefetcher
from rhymeflow_core.run_state import KEY
from tools import tiny_models

FRAMES, SIZE, STEPS = 5, 8, 12
DEVICES = (torch.device("cpu"), torch.device("cpu", 0))
# How to load the tiny Wan model afresh (conftest's tiny_model() builds the same weights): v0.33's deep clones
# are fresh loads from the loader (ModelPatcher.cached_patcher_init); the thread harness does the same.
FRESH_WAN = (tiny_models.load, ("wan", tiny_models.variant_of("wan", None), 0))


def thread_split(model_patcher):
    """A clone of the tiny Wan `model_patcher` whose cond and uncond run at once, each in its own thread on its own model."""
    split = model_patcher.clone()
    twin = FRESH_WAN[0](*FRESH_WAN[1])
    twin.pre_run()   # binds its BaseModel to its patcher, as the host's outer_sample does for each multigpu clone

    def calc_cond_batch(executor, model, conds, x_in, timestep, model_options):
        models, out, errors = (model, twin.model), [None, None], []

        def run(i):
            options = {**model_options, "transformer_options": {**model_options.get("transformer_options", {}),
                                                                "multigpu_thread_device": DEVICES[i]}}
            only = [c if j == i else None for j, c in enumerate(conds)]
            try:
                with torch.no_grad():   # grad mode is per thread; the host's `_handle_batch` sets it too
                    out[i] = executor(models[i], only, x_in, timestep, options)[i]
            except BaseException as e:   # re-raised on the sampling thread, as the host's thread pool does
                errors.append(e)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return out

    split.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "test-cfg-split", calc_cond_batch)
    return split


def recorded(model):
    """A clone of `model` whose DIFFUSION_MODEL wrapper, added before ours and so outside it, records every call's
    (thread device, diffusion model id, uuids) in `.calls` and its RhymeFlowRun in `.runs`."""
    base = model.clone()
    calls, runs = [], []

    def record(executor, *args, **kwargs):
        to = compat.transformer_options_of(args, kwargs)
        calls.append((to.get("multigpu_thread_device"), id(executor.class_obj), tuple(to["uuids"])))
        runs.append(to[KEY])
        return executor(*args, **kwargs)

    base.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test-record", record)
    return base, calls, runs


def cache_snapshots(runs: list, snapshots: list):
    """A sampling callback keeping, per step, {device key: (cache id, signatures, cache device)} of the current run."""
    def callback(*_):
        caches = runs[-1].caches.by_key()
        snapshots.append({k: (id(c), set(c.entries), c.device) for k, c in caches.items()})
    return callback


def check_split_run(calls, runs, snapshots, unsplit_report):
    """What every split run must show: two devices, two threads' calls counted, one cache per device holding only its cond."""
    devices = {device: {uuids for d, _, uuids in calls if d == device} for device in DEVICES}
    assert all(len(u) == 1 for u in devices.values()) and devices[DEVICES[0]] != devices[DEVICES[1]], \
        "each device ran one of cond / uncond, every step"
    assert len({m for _, m, _ in calls}) == 2, "each device ran its own model clone"
    active = snapshots[-1]
    assert set(active) == set(DEVICES) and len({cache_id for cache_id, _, _ in active.values()}) == 2, "a cache per device"
    for device, (_, signatures, placed) in active.items():
        assert signatures == devices[device] and placed == torch.device("cpu"), "each cache holds only its device's cond"
    report = last_report()
    assert sum(report.model_calls.values()) == len(calls) == 2 * STEPS
    assert report.model_calls == {k: 2 * n for k, n in unsplit_report.model_calls.items()}, "cond and uncond: two calls a step"
    assert report.rows == unsplit_report.rows, "the same rows, split over two devices"
    assert report.cache_device == "cpu" and report.cache_peak_bytes == unsplit_report.cache_peak_bytes > 0, \
        "the two caches together hold what the one unsplit cache held"
    for run in runs:
        assert all(not c.entries for c in run.caches.all()) and not run.memo and run.plan is None, "the run's state is freed"


def split_and_unsplit(tiny_model, make_split):
    """A sparse run on the patched model, and the same run with `make_split(model)` (split and patched); checked."""
    model, calls, runs = recorded(tiny_model())
    sigmas = sigmas_for(model, STEPS)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    unsplit = sample(patched(model), rhymeflow("euler", count=2), sigmas, latent, noise)
    unsplit_report = last_report()
    calls.clear()
    runs.clear()
    split, snapshots = make_split(model), []
    callback = cache_snapshots(runs, snapshots)
    ours = sample(split, rhymeflow("euler", count=2), sigmas, latent, noise, callback=callback)
    check_split_run(calls, runs, snapshots, unsplit_report)
    return ours, unsplit, runs, (split, sigmas, latent, noise, callback)


def test_split_with_every_frame_a_keyframe_reproduces_dense_sampling(tiny_model):
    model = tiny_model()
    sigmas = sigmas_for(model, STEPS)
    latent, noise = latent_and_noise(FRAMES, SIZE)
    dense = sample(model, comfy.samplers.sampler_object("euler"), sigmas, latent, noise)
    base, calls, _ = recorded(model)
    split = thread_split(patched(base))
    ours = sample(split, rhymeflow("euler", count=FRAMES), sigmas, latent, noise)
    assert rel_err(ours, dense) <= 1e-5
    assert {d for d, _, _ in calls} == set(DEVICES) and len(calls) == 2 * STEPS


def test_split_run_equals_the_unsplit_run_with_a_cache_per_device(tiny_model):
    ours, unsplit, runs, again = split_and_unsplit(tiny_model, lambda model: thread_split(patched(model)))
    assert rel_err(ours, unsplit) <= 1e-5
    split, sigmas, latent, noise, callback = again
    second = sample(split, rhymeflow("euler", count=2), sigmas, latent, noise, callback=callback)
    assert torch.equal(second, ours), "a second run starts from nothing the first left behind"
    assert len({id(r) for r in runs}) == 2, "each run gets its own state"


@pytest.fixture
def two_stood_in_devices(monkeypatch):
    if not compat.has_multigpu():
        pytest.skip("this host has no core MultiGPU (comfy.multigpu, ComfyUI v0.33+); test_split_* cover its shape")
    monkeypatch.setattr(comfy.model_management, "get_all_torch_devices", lambda exclude_current=False: list(DEVICES))


def core_split(model_patcher):
    """The host's MultiGPU CFG Split on a clone (deep clones are fresh loads of the same tiny model)."""
    import comfy.multigpu

    base = model_patcher.clone()
    base.cached_patcher_init = FRESH_WAN
    return comfy.multigpu.create_multigpu_deepclones(base, 2, reuse_loaded=True)


@pytest.mark.parametrize("order", ["projection, then split", "split, then projection"])
def test_core_multigpu_cfg_split_runs_rhymeflow_per_device(order, two_stood_in_devices, tiny_model):
    if order == "projection, then split":
        def make_split(model):
            return core_split(patched(model))
    else:
        def make_split(model):   # a clone keeps the split's deep clones (additional models "multigpu")
            return patched(core_split(model))
    ours, unsplit, _, _ = split_and_unsplit(tiny_model, make_split)
    assert rel_err(ours, unsplit) <= 1e-5


# ---- the per-device caches themselves --------------------------------------------------------------

def test_a_cond_read_on_another_device_comes_from_the_cache_that_recorded_it():
    """The host may send a cond to another device than at the rhythmic point (its cond count changed, e.g. a
    timestep-ranged cond): the rows are gathered from the recording device's cache, resident or host."""
    caches = DeviceCaches("gpu")
    a, b = caches.get(DEVICES[0]), caches.get(DEVICES[1])
    assert a is caches.first and b is not a and caches.get(DEVICES[1]) is b
    b.device, b._prefetch = torch.device("cpu"), _Prefetcher(torch.device("cpu"))   # b on the host path (plain copies)
    a.choose_device(torch.device("cpu"), 0)
    rows = torch.tensor([1, 3, 4])
    ka, kb = (torch.randn(1, 6, 2, generator=torch.Generator().manual_seed(s)) for s in (1, 2))
    a.store(("c",), 0, (ka,), rows, scratch=2)
    b.store(("u",), 0, (kb,), rows, scratch=2)
    (from_a,) = b.load(("c",), 0, torch.device("cpu"))
    (both,) = a.load(("u", "c"), 0, torch.device("cpu"))
    assert from_a.shape == (1, 5, 2) and torch.equal(from_a[:, 2:], ka[:, rows])
    assert torch.equal(both[:, 2:], torch.cat([kb[:, rows], ka[:, rows]]))
    assert caches.peak_bytes() == a.peak_bytes + b.peak_bytes > 0
    caches.clear()
    assert all(not c.entries for c in caches.all())


def test_the_report_names_each_cache_device_once():
    caches = DeviceCaches("auto")
    assert caches.devices() is None, "nothing cached"
    for key, placed in zip(DEVICES, ("cuda:0", "cuda:1"), strict=True):
        caches.get(key).device = torch.device(placed)
    assert caches.devices() == "cuda:0, cuda:1"
    for cache in caches.all():
        cache.device = torch.device("cpu")   # both in host memory
    assert caches.devices() == "cpu"
