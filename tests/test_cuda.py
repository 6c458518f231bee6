"""The CUDA paths, on tiny real ComfyUI models (Wan, HunyuanVideo, LTX-Video) on the GPU.

Run by tools/gpu_check.sh: RHYMEFLOW_TEST_DEVICE=cuda (tests/conftest.py then leaves ComfyUI on the
GPU). `tools/gpu_check.sh --cpu-smoke` sets RHYMEFLOW_TEST_DEVICE=cpu-smoke: the same code paths run on
the CPU at toy size (the host-cache path with plain copies), and the assertions that only mean
something on a GPU (peak VRAM, CUDA memory left allocated) are skipped. In the ordinary suite the
whole module is skipped.

What is proven on CUDA:
  * exactness: with every frame a keyframe, RhymeFlow reproduces ComfyUI's own samplers (fp32: 1e-5,
    TF32 off; bf16: within BF16_FACTOR times the distance between ComfyUI's own bf16 and fp32 runs,
    see test_bf16_every_frame_a_keyframe_is_within_comfyui_bf16_noise), and an active pass on a fresh
    cache equals the stock forward on the keyframe rows, for Wan (T2V, I2V, TI2V-5B), HunyuanVideo
    1.0 / 1.5 and LTX-Video, with the cache on the GPU and in pinned host memory;
  * cache_device=cpu samples like cache_device=gpu and lowers peak VRAM by about the cache's size;
  * `auto` keeps the cache on the GPU when it fits with the documented margin, else in host memory;
  * no CUDA memory is left allocated by the pack after a run or an interrupted run.
"""
from __future__ import annotations

import functools
import gc
import json
import logging
import os

import pytest
import torch

MODE = os.environ.get("RHYMEFLOW_TEST_DEVICE", "")
if MODE not in ("cuda", "cpu-smoke"):
    pytest.skip("CUDA tests: run `tools/gpu_check.sh` on a GPU machine (sets RHYMEFLOW_TEST_DEVICE=cuda), or "
                "`tools/gpu_check.sh --cpu-smoke` to rehearse their code paths on the CPU", allow_module_level=True)

import comfy.model_management  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.sd  # noqa: E402

from helpers import capture_runs, conds, interrupt_at, last_report, rel_err, rhymeflow, sample, sigmas_for  # noqa: E402
from rhymeflow_core import cache as cache_mod  # noqa: E402
from rhymeflow_core.adapters.hunyuan import HunyuanVideoAdapter  # noqa: E402
from rhymeflow_core.adapters.ltxv import LTXVAdapter  # noqa: E402
from rhymeflow_core.adapters.wan import WanAdapter  # noqa: E402
from rhymeflow_core.cache import ContextCache, _Prefetcher, place  # noqa: E402
from rhymeflow_core.patch import apply_trajectory_projection  # noqa: E402
from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun  # noqa: E402
from tools.tiny_models import (  # noqa: E402
    HUNYUAN_POOLED_DIM,
    HUNYUAN_TEXT_DIM,
    LTXV_CAPTION_DIM,
    LTXV_CHANNELS,
    WAN_CLIP_DIM,
    random_state_dict,
)

DEV = comfy.model_management.get_torch_device()
CUDA = MODE == "cuda"
if CUDA and DEV.type != "cuda":
    raise RuntimeError(f"RHYMEFLOW_TEST_DEVICE=cuda but ComfyUI computes on {DEV} (torch.cuda.is_available() = "
                       f"{torch.cuda.is_available()}): tests/conftest.py must leave `comfy.cli_args.args.cpu` off for it, "
                       "and the machine needs a CUDA device (docs/gpu_check.md)")
CPU = torch.device("cpu")

FP32_TOL = 1e-5
# bf16: RhymeFlow's run and ComfyUI's are two bf16 rounding paths of the same computation. Each sits
# about d = |ComfyUI bf16 - ComfyUI fp32| from the fp32 result, so they may differ by up to ~2d.
BF16_FACTOR = 2.0
BF16_FLOOR = 1e-3
MEASURED: dict = {}


def measure(key: str, value) -> None:
    MEASURED[key] = value


@pytest.fixture(scope="module", autouse=True)
def _write_measurements():
    yield
    path = os.environ.get("RHYMEFLOW_CUDA_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"mode": MODE, "device": str(DEV), **MEASURED}, f, indent=1, default=str)


@pytest.fixture(autouse=True)
def fp32_without_tf32():
    """fp32 means fp32: TF32 off for matmuls (PyTorch's default) and convolutions (cuDNN's default is on)."""
    try:
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    except RuntimeError:   # newer torch refuses the legacy flags once its fp32_precision API was used
        yield from _ieee_fp32()
        return
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _ieee_fp32():
    knobs = [(torch.backends.cuda.matmul, "fp32_precision"), (torch.backends.cudnn.conv, "fp32_precision")]
    saved = [getattr(obj, name) for obj, name in knobs]
    for obj, name in knobs:
        setattr(obj, name, "ieee")
    yield
    for (obj, name), value in zip(knobs, saved, strict=True):
        setattr(obj, name, value)


# ---- tiny models, loaded through ComfyUI in the dtype asked for ------------------------------------

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
FAMILIES = ("wan", "wan-i2v", "wan-ti2v", "hunyuan-1.0", "hunyuan-1.5", "ltxv")


def _state_dict(family: str, **sizes) -> dict:
    name, variant = {"wan": ("wan", "t2v"), "wan-i2v": ("wan", "i2v"), "wan-ti2v": ("wan", "ti2v_5b"),
                     "hunyuan-1.0": ("hunyuan", "1.0"), "hunyuan-1.5": ("hunyuan", "1.5"), "ltxv": ("ltxv", "t2v")}[family]
    return random_state_dict(name, variant, 0, **sizes)


def load(family: str, dtype: str = "fp32", **sizes):
    """A MODEL with weights in `dtype`, computing in `dtype`: on the CPU ComfyUI would cast bf16 weights to fp32
    per call (manual cast); --cpu-smoke turns that off so the bf16 test meets real bf16 rounding there too."""
    native = dtype != "fp32" and not CUDA
    saved = comfy.model_management.unet_manual_cast
    if native:
        comfy.model_management.unet_manual_cast = lambda *args, **kwargs: None
    try:
        return comfy.sd.load_diffusion_model_state_dict(_state_dict(family, **sizes), model_options={"dtype": DTYPES[dtype]})
    finally:
        comfy.model_management.unet_manual_cast = saved


@functools.cache
def sampling_model(family: str, dtype: str = "fp32"):
    """A MODEL that ComfyUI loads onto DEV when it samples (shared; tests never mutate it)."""
    return load(family, dtype)


@functools.cache
def direct_model(family: str):
    """The diffusion model of another instance, moved to DEV by hand, for direct forward calls."""
    return load(family).model.diffusion_model.to(DEV)


def settle() -> int:
    """Unload every model, free what Python holds, and return the CUDA memory still allocated."""
    comfy.model_management.unload_all_models()
    if not CUDA:
        return 0
    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()   # also processes the events of blocks used on the prefetch stream
    return torch.cuda.memory_allocated()


# ---- the host-cache path on a CPU-only machine ----------------------------------------------------

def new_run(context: str, placement: str, adapter) -> RhymeFlowRun:
    run = RhymeFlowRun(ProjectionConfig(context, placement), adapter)
    if not CUDA and placement == "cpu":   # rehearse the pinned/prefetch logic with plain copies
        run.cache.device, run.cache._prefetch = CPU, _Prefetcher(CPU)
    return run


@pytest.fixture
def host_path_on_cpu(monkeypatch):
    """In --cpu-smoke, make cache_device=cpu take the host path (staging slots, prefetch) through sampling too."""
    if CUDA:
        return
    original = ContextCache.choose_device

    def choose(self, compute_device, expected_bytes):
        if self.device is None and self.placement == "cpu":
            self.device, self._prefetch = CPU, _Prefetcher(CPU)
        return original(self, compute_device, expected_bytes)

    monkeypatch.setattr(ContextCache, "choose_device", choose)


def host_path_taken(run) -> bool:
    return run.cache._prefetch is not None


# ---- direct passes: the active pass on a fresh cache = the stock forward on keyframe rows ----------

FRAMES = 6


def direct_inputs(family: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    b = 2
    if family.startswith("wan"):
        in_dim = direct_model(family).in_dim
        x = torch.randn(b, in_dim, FRAMES, 8, 8, generator=g)
        t = torch.full((b,), 700.0)
        if family == "wan-ti2v":   # per-frame timesteps: frame 0 clean
            t = torch.full((b, FRAMES), 700.0)
            t[:, 0] = 0.0
        ctx = torch.randn(b, 8, 4096, generator=g) * 0.5
        clip = torch.randn(b, 257, WAN_CLIP_DIM, generator=g) if family == "wan-i2v" else None
        return {"x": x, "t": t, "ctx": ctx, "clip": clip}
    if family.startswith("hunyuan"):
        v10 = family.endswith("1.0")
        x = torch.randn(b, direct_model(family).in_channels, FRAMES, 8, 8, generator=g)
        mask = torch.ones(1, 7)
        mask[:, 5:] = 0
        return {"x": x, "timestep": torch.full((b,), 0.7), "context": torch.randn(b, 7, HUNYUAN_TEXT_DIM, generator=g),
                "y": torch.randn(b, HUNYUAN_POOLED_DIM, generator=g) if v10 else None, "guidance": torch.full((b,), 6.0),
                "attention_mask": mask}
    x = torch.randn(b, LTXV_CHANNELS, FRAMES, 4, 4, generator=g)
    return {"x": x, "t": torch.rand(b, FRAMES * 16, 1, generator=g), "ctx": torch.randn(b, 7, LTXV_CAPTION_DIM, generator=g)}


def _on(inp: dict) -> dict:
    return {k: (v.to(DEV) if isinstance(v, torch.Tensor) else v) for k, v in inp.items()}


def stock_forward(family: str, inp: dict):
    dm = direct_model(family)
    with torch.no_grad():
        if family.startswith("wan"):
            return dm(inp["x"], inp["t"], inp["ctx"], clip_fea=inp["clip"])
        if family.startswith("hunyuan"):
            return dm(**inp)
        return dm(inp["x"], inp["t"], inp["ctx"], None, frame_rate=25)


def rhymeflow_pass(family: str, run, kind: str, keyframes, inp: dict):
    dm = direct_model(family)
    run.set_plan(kind, keyframes)
    to = {"uuids": ["cond", "uncond"]}
    with torch.no_grad():
        if family.startswith("wan"):
            return run.adapter.forward(dm, run, to, (inp["x"], inp["t"], inp["ctx"], inp["clip"]), {})
        if family.startswith("hunyuan"):
            args = (inp["x"], inp["timestep"], inp["context"], inp["y"], None, None, inp["guidance"], inp["attention_mask"],
                    None, None, False, None, to)
            return run.adapter.forward(dm, run, to, args, {})
        return run.adapter.forward(dm, run, to, (inp["x"], inp["t"], inp["ctx"], None, 25, to, None), {})


def adapter(family: str):
    return WanAdapter() if family.startswith("wan") else HunyuanVideoAdapter() if family.startswith("hunyuan") else LTXVAdapter()


def key_err(out, ref, keyframes) -> float:
    k = list(keyframes)
    return float((out[:, :, k] - ref[:, :, k]).abs().max() / ref[:, :, k].abs().max())


@pytest.mark.parametrize("placement", ["gpu", "cpu"])
@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache"])
@pytest.mark.parametrize("family", FAMILIES)
def test_active_pass_on_fresh_cache_equals_stock_forward(family, context, placement):
    inp = _on(direct_inputs(family))
    ref = stock_forward(family, inp)
    run = new_run(context, placement, adapter(family))
    worst = 0.0
    try:
        for keyframes in [(0, 5), (0, 2, 5)]:
            recorded = rhymeflow_pass(family, run, RECORD, keyframes, inp)
            torch.testing.assert_close(recorded, ref, rtol=FP32_TOL, atol=1e-6)
            for _ in range(2):   # the second active pass reads what the first left in the staging slots / scratch rows
                active = rhymeflow_pass(family, run, ACTIVE, keyframes, inp)
                worst = max(worst, key_err(active, ref, keyframes))
                assert key_err(active, ref, keyframes) <= FP32_TOL, (family, context, placement, keyframes)
        # A recording from other non-keyframe latents must change the keyframe outputs: the cache is read.
        other = dict(inp, x=inp["x"].clone())
        other["x"][:, :, 1:5] = torch.randn_like(other["x"][:, :, 1:5])
        rhymeflow_pass(family, run, RECORD, (0, 5), other)
        assert key_err(rhymeflow_pass(family, run, ACTIVE, (0, 5), inp), ref, (0, 5)) > 1e-4
        assert (run.cache.device.type == "cpu") == (placement == "cpu" or not CUDA)
        assert host_path_taken(run) == (placement == "cpu")
    finally:
        run.close()
    measure(f"active_vs_stock_max_rel_err[{family},{context},{placement}]", f"{worst:.2e}")


# ---- sampling: every frame a keyframe reproduces ComfyUI's samplers ---------------------------------

def family_inputs(family: str, seed: int = 1):
    """(latent, noise, cond, uncond) for sampling with a family's tiny model."""
    g = torch.Generator().manual_seed(seed)
    if family == "wan":
        latent = torch.zeros(1, 16, 5, 8, 8)
        cond, uncond = conds()
    elif family.startswith("hunyuan"):
        v10 = family.endswith("1.0")
        latent = torch.zeros(1, 16 if v10 else 32, FRAMES, 8, 8)

        def one():
            return [[torch.randn(1, 7, HUNYUAN_TEXT_DIM, generator=g),
                     {"pooled_output": torch.randn(1, HUNYUAN_POOLED_DIM, generator=g) if v10 else None}]]
        cond, uncond = one(), one()
    else:
        latent = torch.randn(1, LTXV_CHANNELS, FRAMES, 4, 4, generator=g) * 0.5

        def one():
            return [[torch.randn(1, 7, LTXV_CAPTION_DIM, generator=g), {"frame_rate": 24, "attention_mask": torch.ones(1, 7, dtype=torch.long)}]]
        cond, uncond = one(), one()
    return latent, torch.randn(latent.shape, generator=g), cond, uncond


def every_frame_pair(family: str, dtype: str, solver: str, context: str = "kv_cache", steps: int = 10):
    """(ComfyUI's own run, RhymeFlow with every frame a keyframe) of the same model, noise and sigmas."""
    model = sampling_model(family, dtype)
    latent, noise, cond, uncond = family_inputs(family)
    sigmas = sigmas_for(model, steps)
    dense = sample(model, comfy.samplers.sampler_object(solver), sigmas, latent, noise, cond=cond, uncond=uncond)
    p = apply_trajectory_projection(model, context, "gpu")
    ours = sample(p, rhymeflow(solver, warmup=3, count=latent.shape[2]), sigmas, latent, noise, cond=cond, uncond=uncond)
    assert last_report().model_calls["active"] > 0, "the all-keyframe run took active passes"
    return dense, ours


@pytest.mark.parametrize("solver", ["euler", "uni_pc", "uni_pc_bh2", "dpmpp_2m"])
@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache"])
def test_wan_every_frame_a_keyframe_reproduces_comfyui_sampler(solver, context):
    dense, ours = every_frame_pair("wan", "fp32", solver, context, steps=14)
    err = rel_err(ours, dense)
    measure(f"every_frame_fp32_rel_err[wan,{solver},{context}]", f"{err:.2e}")
    assert err <= FP32_TOL


@pytest.mark.parametrize("solver", ["euler", "uni_pc"])
@pytest.mark.parametrize("family", ["hunyuan-1.0", "hunyuan-1.5", "ltxv"])
def test_hunyuan_and_ltxv_every_frame_a_keyframe_reproduce_comfyui_sampler(family, solver):
    dense, ours = every_frame_pair(family, "fp32", solver)
    err = rel_err(ours, dense)
    measure(f"every_frame_fp32_rel_err[{family},{solver}]", f"{err:.2e}")
    assert err <= FP32_TOL


@pytest.mark.parametrize("family", ["wan", "hunyuan-1.0", "hunyuan-1.5", "ltxv"])
def test_bf16_every_frame_a_keyframe_is_within_comfyui_bf16_noise(family):
    """bf16 weights and compute, ComfyUI's run and RhymeFlow's, against ComfyUI's own fp32 run.

    Tolerance: |RhymeFlow bf16 - ComfyUI bf16| <= BF16_FACTOR * |ComfyUI bf16 - ComfyUI fp32| + BF16_FLOOR,
    and RhymeFlow's bf16 run is as close to ComfyUI's fp32 run as ComfyUI's own bf16 run is, within the same factor.
    """
    dense16, ours16 = every_frame_pair(family, "bf16", "uni_pc")
    dense32, _ = every_frame_pair(family, "fp32", "uni_pc")
    noise = rel_err(dense16, dense32)
    err = rel_err(ours16, dense16)
    ours_vs_fp32 = rel_err(ours16, dense32)
    measure(f"bf16[{family}]", {"rhymeflow_vs_comfyui_bf16": f"{err:.2e}", "comfyui_bf16_vs_fp32": f"{noise:.2e}",
                                "rhymeflow_bf16_vs_comfyui_fp32": f"{ours_vs_fp32:.2e}"})
    assert torch.isfinite(ours16).all()
    assert err <= BF16_FACTOR * noise + BF16_FLOOR, f"bf16: {err:.3e} from ComfyUI's bf16 run, whose own bf16 noise is {noise:.3e}"
    assert ours_vs_fp32 <= BF16_FACTOR * noise + BF16_FLOOR


# ---- cache placement: host cache == GPU cache, and what it saves in VRAM -------------------------

def vram_model():
    """Blocks heavy enough that a block's compute outlasts the copy of its cache rows (as at real sizes)."""
    sizes = dict(dim=256, ffn_dim=512, layers=16) if CUDA else dict(dim=128, ffn_dim=256, layers=4)
    return _vram_model(tuple(sorted(sizes.items())))


@functools.cache
def _vram_model(sizes):
    return load("wan", **dict(sizes))


def vram_inputs():
    frames, size = (13, 48) if CUDA else (7, 8)
    g = torch.Generator().manual_seed(4)
    latent = torch.zeros(1, 16, frames, size, size)
    return latent, torch.randn(latent.shape, generator=g)


def sparse_run(model, placement: str, context: str, callback=None):
    """RhymeFlow with 2 keyframes; returns (output, peak CUDA bytes or None, the run's state, patched model)."""
    p = apply_trajectory_projection(model, context, placement)
    runs = capture_runs(p)
    latent, noise = vram_inputs()
    settle()
    if CUDA:
        torch.cuda.reset_peak_memory_stats()
    out = sample(p, rhymeflow("euler", warmup=2, min_stride=3, max_stride=4, count=2), sigmas_for(model, 12), latent, noise,
                 callback=callback)
    peak = torch.cuda.max_memory_allocated() if CUDA else None
    return out, peak, runs[-1], p


@pytest.mark.parametrize("context", ["kv_cache", "hidden_cache"])
def test_host_cache_samples_like_the_gpu_cache_and_saves_its_size_in_vram(context, host_path_on_cpu):
    model = vram_model()
    on_gpu, peak_gpu, run_gpu, p_gpu = sparse_run(model, "gpu", context)
    on_cpu, peak_cpu, run_cpu, p_cpu = sparse_run(model, "cpu", context)
    assert host_path_taken(run_cpu) and not host_path_taken(run_gpu)
    assert run_gpu.cache.device is None or run_gpu.cache.device.type == DEV.type
    err = rel_err(on_cpu, on_gpu)
    cache_gpu = run_gpu.report.cache_peak_bytes
    cache_host = run_cpu.report.cache_peak_bytes
    info = {"rel_err": f"{err:.2e}", "bitwise_equal": bool(torch.equal(on_cpu, on_gpu)), "cache_gpu_mb": round(cache_gpu / 1e6, 1),
            "cache_host_mb": round(cache_host / 1e6, 1)}
    assert err <= 1e-6, f"cache_device=cpu differs from cache_device=gpu by {err:.2e}"
    assert run_cpu.report.model_calls == run_gpu.report.model_calls
    if CUDA:
        layers = len(model.model.diffusion_model.blocks)
        staging = 2 * cache_gpu / layers   # two staging slots, each one block's buffers with their scratch rows
        saved = peak_gpu - peak_cpu
        expected = cache_gpu - staging
        info.update(peak_gpu_cache_mb=round(peak_gpu / 1e6, 1), peak_host_cache_mb=round(peak_cpu / 1e6, 1),
                    vram_saved_mb=round(saved / 1e6, 1), expected_saving_mb=round(expected / 1e6, 1))
        measure(f"cache_placement[{context}]", info)
        assert 0.75 * expected - (8 << 20) <= saved <= cache_gpu + (8 << 20), \
            f"peak VRAM with the cache on the GPU {peak_gpu / 1e6:.1f} MB, in host memory {peak_cpu / 1e6:.1f} MB: saved " \
            f"{saved / 1e6:.1f} MB, expected about {expected / 1e6:.1f} MB (cache {cache_gpu / 1e6:.1f} MB less two staging blocks)"
    else:
        measure(f"cache_placement[{context}]", info)


# ---- auto --------------------------------------------------------------------------------------------

def test_auto_places_the_cache_as_documented(monkeypatch, caplog):
    if not CUDA:
        assert place("auto", DEV, 10**12) == (CPU, "computing on the CPU")
    else:
        free = comfy.model_management.get_free_memory(DEV)
        margin = max(cache_mod.AUTO_MARGIN_BYTES, free // 8)
        assert place("auto", DEV, free - margin, free_bytes=free)[0] == DEV
        device, reason = place("auto", DEV, free - margin + 1, free_bytes=free)
        assert device == CPU and "does not fit" in reason
        assert place("auto", DEV, 1 << 20)[0] == DEV, "with the free memory looked up: a small cache fits"
        measure("auto", {"free_gb": round(free / 1e9, 1), "margin_gb": round(margin / 1e9, 1)})
    model = sampling_model("wan")
    latent, noise = torch.zeros(1, 16, 5, 8, 8), torch.randn(1, 16, 5, 8, 8, generator=torch.Generator().manual_seed(2))
    sigmas = sigmas_for(model, 10)

    def run_auto():
        p = apply_trajectory_projection(model, "kv_cache", "auto")
        runs = capture_runs(p)
        with caplog.at_level(logging.INFO, logger="RhymeFlow"):
            out = sample(p, rhymeflow("euler", count=2), sigmas, latent, noise)
        return out, runs[-1]

    fits, run = run_auto()
    assert run.cache.device is not None and run.cache.device.type == DEV.type, "a tiny cache stays on the compute device"
    if CUDA:   # a margin larger than the free memory: the same run puts the cache in pinned host memory
        monkeypatch.setattr(cache_mod, "AUTO_MARGIN_BYTES", comfy.model_management.get_free_memory(DEV) + (1 << 30))
        caplog.clear()
        spilled, run = run_auto()
        assert run.cache.device == CPU and host_path_taken(run)
        assert "on cpu, pinned, prefetched one block ahead (auto: does not fit" in caplog.text
        assert rel_err(spilled, fits) <= 1e-6


# ---- nothing left behind ---------------------------------------------------------------------------

@pytest.mark.parametrize("placement", ["gpu", "cpu"])
def test_no_cuda_memory_left_after_a_run_or_an_interrupted_run(placement, host_path_on_cpu):
    model = vram_model()
    latent, noise = vram_inputs()
    sample(model, comfy.samplers.sampler_object("euler"), sigmas_for(model, 4), latent, noise)   # ComfyUI's own run
    baseline = settle()
    pinned = _pinned_bytes()
    p = apply_trajectory_projection(model, "kv_cache", placement)
    runs = capture_runs(p)
    sigmas = sigmas_for(model, 12)
    out = sample(p, rhymeflow("euler", warmup=2, min_stride=3, max_stride=4, count=2), sigmas, latent, noise)
    del out
    after_run = settle()
    with interrupt_at(7) as callback, pytest.raises(comfy.model_management.InterruptProcessingException):
        sample(p, rhymeflow("euler", warmup=2, min_stride=3, max_stride=4, count=2), sigmas, latent, noise, callback=callback)
    after_interrupt = settle()
    done, interrupted = runs[0], runs[-1]
    assert done is not interrupted and done.report.completed and not interrupted.report.completed, "the second run was interrupted"
    assert interrupted.report.model_calls.get("active", 0) > 0, "interrupted inside the keyframe phase, with a cache recorded"
    for run in (done, interrupted):
        assert not run.cache.entries and not run.memo and run.plan is None, "the run's state is freed"
        assert host_path_taken(run) == (placement == "cpu")
        if host_path_taken(run):
            pre = run.cache._prefetch
            assert not pre.slots and not pre.pending and (pre.arena is None or not pre.arena.chunks), "staging and pinned chunks freed"
    measure(f"leftover[{placement}]", {"cuda_bytes_before": baseline, "after_run": after_run, "after_interrupted_run": after_interrupt,
                                       "pinned_active_bytes_before": pinned, "pinned_active_bytes_after": _pinned_bytes()})
    if CUDA:
        assert after_run <= baseline, f"{after_run - baseline} bytes of CUDA memory left allocated after a run"
        assert after_interrupt <= baseline, f"{after_interrupt - baseline} bytes of CUDA memory left after an interrupted run"


def _pinned_bytes():
    if not CUDA:
        return None
    stats = torch.cuda.host_memory_stats()
    return stats.get("active_bytes.current", stats.get("allocated_bytes.current"))


# ---- the profiler summary (tools/gpu_profile.py) on a synthetic trace ---------------------------

def test_profile_summary_of_a_trace():
    from tools.gpu_profile import summarise_trace
    events = [
        {"ph": "X", "cat": "kernel", "name": "gemm", "ts": 0, "dur": 100, "args": {"stream": 7}},
        {"ph": "X", "cat": "kernel", "name": "gemm", "ts": 150, "dur": 50, "args": {"stream": 7}},
        {"ph": "X", "cat": "kernel", "name": "softmax", "ts": 205, "dur": 45, "args": {"stream": 7}},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pinned -> Device)", "ts": 90, "dur": 40, "args": {"stream": 20, "bytes": 4096}},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 500},
    ]
    s = summarise_trace(events)
    assert s["span_us"] == 250 and s["busy_us"] == 225   # 0-130 (a kernel and the copy), 150-200, 205-250
    assert s["gaps"]["count"] == 1 and s["gaps"]["largest_us"] == 20   # 130..150; 200..205 is below GAP_US
    assert [k["name"] for k in s["kernels"]["top"]] == ["gemm", "softmax"] and s["kernels"]["top"][0]["calls"] == 2
    assert s["h2d"]["count"] == 1 and s["h2d"]["bytes"] == 4096 and s["h2d"]["overlapped_share"] == pytest.approx(0.25)
    assert summarise_trace([events[-1]]) == {}
