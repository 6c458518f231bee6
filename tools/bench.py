"""Sampler benchmark: dense vs RhymeFlow through ComfyUI's real sampling path (a benchmark, not a test).

Builds a Wan architecture through ComfyUI's loader from random weights (nothing is downloaded),
then samples with CFGGuider (cond and uncond batched as ComfyUI decides) and either ComfyUI's
uni_pc sampler (dense) or the RhymeFlow sampler, on CUDA when present.

  python -m tools.bench --suite gpu --quick --out docs/bench_gpu.md     # the whole GPU table
  python -m tools.bench --model 1.3b --size 480p --rows dense,release   # one configuration, 50 steps
  python -m tools.bench --model tiny --size tiny --quick                # CPU
  python -m tools.bench --profile --model tiny --size tiny              # torch.profiler of one active pass

Per row: sampler wall time (guider.sample, after a warm-up run), speedup over dense, the measured
active/full pass ratio (each model call timed by an outer DIFFUSION_MODEL wrapper), the ideal
speedup of the row's schedule at that ratio (docs/algorithm.md §6: steps / (full + active * r)),
peak GPU memory and the cache's bytes.

--quick runs every row for --quick-steps steps (warm-up shortened to 2, same strides and
keyframes; dense 4 steps) and extrapolates the --steps run from the measured calls: the first
call of each kind (full / record / active) once, the mean of the others times the count the
full-length schedule has, plus the measured per-step overhead outside the model. Rows with
EasyCache are scaled by the step count instead (how many steps it skips depends on the steps).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.headless import bootstrap, git_commit

# Wan 2.1 T2V architectures (heads = dim / 128, as ComfyUI's detection assumes).
MODELS = {
    "1.3b": {"dim": 1536, "ffn_dim": 8960, "layers": 30},
    "14b": {"dim": 5120, "ffn_dim": 13824, "layers": 40},
    "tiny": {"dim": 256, "ffn_dim": 1024, "layers": 2},
}
SIZES = {"480p": (480, 832), "720p": (720, 1280), "tiny": (192, 320)}   # pixels (height, width)
TEXT_TOKENS = {"tiny": 64}   # Wan pads prompts to 512 tokens
QUICK_STEPS, QUICK_WARMUP, DENSE_QUICK_STEPS = 10, 2, 4


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    rhymeflow: bool = True
    warmup: int = 10
    min_stride: int = 3
    max_stride: int = 5
    keyframes: int = 2
    context: str = "kv_cache"
    cache_device: str = "auto"
    easycache: bool = False
    override: bool = False


ROWS = {r.name: r for r in (
    Row("dense", "dense uni_pc (ComfyUI sampler)", rhymeflow=False),
    Row("release", "RhymeFlow release (w10, 3-5, M2), kv"),
    Row("paper", "RhymeFlow paper (w8, 2/3, M4), kv", warmup=8, min_stride=2, max_stride=3, keyframes=4),
    Row("hidden", "RhymeFlow release, hidden_cache", context="hidden_cache"),
    Row("release-cpu", "RhymeFlow release, kv, cache_device=cpu", cache_device="cpu"),
    Row("hidden-cpu", "RhymeFlow release, hidden_cache, cache_device=cpu", context="hidden_cache", cache_device="cpu"),
    Row("easycache", "dense uni_pc + core EasyCache (0.2)", rhymeflow=False, easycache=True),
    Row("release+easycache", "RhymeFlow release + core EasyCache (0.2)", easycache=True),
    Row("release+override", "RhymeFlow release + attention override", override=True),
)}
# (model, size, rows) of `--suite gpu`: about 6-8 minutes with --quick on one H100.
GPU_SUITE = (
    ("1.3b", "480p", tuple(ROWS)),
    ("1.3b", "720p", ("dense", "release", "release-cpu")),
    ("14b", "480p", ("dense", "release", "release-cpu")),
)


# ---- set-up -----------------------------------------------------------------------------------

def setup_host(device: str) -> str:
    """Bootstrap ComfyUI; unlike the demo, keep CUDA when it is there (before model_management loads)."""
    bootstrap()
    import comfy.cli_args
    import torch
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if "comfy.model_management" not in sys.modules:
        comfy.cli_args.args.cpu = device == "cpu"
        comfy.cli_args.args.disable_smart_memory = device == "cpu"
    return device


def load_model(model: str, dtype, device):
    """Wan 2.1 T2V at the `model` architecture with random weights (tools/tiny_models.py: drawn on `device` in `dtype`)."""
    from tools import tiny_models
    return tiny_models.load("wan", "t2v", dtype=dtype, device=device, **MODELS[model])


@dataclass
class Inputs:
    latent: object
    noise: object
    cond: list
    uncond: list
    tokens: int


def make_inputs(size: str, frames: int, text_tokens: int) -> Inputs:
    import torch
    height, width = parse_size(size)
    latent_frames = (frames - 1) // 4 + 1
    latent = torch.zeros(1, 16, latent_frames, height // 8, width // 8)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(latent.shape, generator=g)
    cond = [[torch.randn(1, text_tokens, 4096, generator=g) * 0.5, {}]]
    uncond = [[torch.randn(1, text_tokens, 4096, generator=g) * 0.5, {}]]
    return Inputs(latent, noise, cond, uncond, latent_frames * (height // 16) * (width // 16))


def parse_size(size: str) -> tuple[int, int]:
    from rhymeflow_core.errors import RhymeFlowInputError
    if size in SIZES:
        return SIZES[size]
    try:
        h, w = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise RhymeFlowInputError(f"size {size!r}: use one of {', '.join(SIZES)} or HEIGHTxWIDTH in pixels") from None
    if h % 16 or w % 16:
        raise RhymeFlowInputError(f"size {size!r}: height and width must be multiples of 16")
    return h, w


# ---- one row ----------------------------------------------------------------------------------

class PassTimer:
    """Outer DIFFUSION_MODEL wrapper: times each model call by the pass the RhymeFlow plan asked for."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.reset()

    def reset(self):
        self.times: dict[str, list[float]] = {}

    def _sync(self):
        if self.cuda:
            import torch
            torch.cuda.synchronize()

    def __call__(self, executor, *args, **kwargs):
        from rhymeflow_core import compat
        from rhymeflow_core.patch import pass_kind
        to = compat.transformer_options_of(args, kwargs)
        kind = pass_kind(to) or "full"
        self._sync()
        start = time.perf_counter()
        out = executor(*args, **kwargs)
        self._sync()
        easycache = to.get("easycache")
        if easycache is not None and easycache.skip_current_step:
            kind = "skipped"
        self.times.setdefault(kind, []).append(time.perf_counter() - start)
        return out


class OverrideProbe:
    """A SageAttention-style attention override that counts the active passes' self-attention calls."""

    def __init__(self, tokens: int):
        self.tokens, self.calls, self.active_self = tokens, 0, 0

    def __call__(self, original, q, k, v, heads, **kwargs):
        self.calls += 1
        if q.shape[1] < k.shape[1] == self.tokens:
            self.active_self += 1
        return original(q, k, v, heads, **kwargs)


def schedule_settings(row: Row, quick: bool):
    from rhymeflow_core.schedule import ScheduleSettings
    return ScheduleSettings(min(row.warmup, QUICK_WARMUP) if quick else row.warmup, row.min_stride, row.max_stride)


def planned_calls(row: Row, steps: int, quick: bool, frames: int) -> dict:
    """Model calls per kind (per cond batch) the sampler plans for `steps` steps."""
    from rhymeflow_core.schedule import build_schedule
    if not row.rhymeflow:
        return {"full": steps}
    schedule = build_schedule(steps, schedule_settings(row, quick))
    records = sum(1 for g in schedule.groups if g.span > 1) if row.keyframes < frames else 0
    return {"full": schedule.full_passes - records, "record": records, "active": schedule.active_passes}


def build_row_model(base, row: Row, tokens: int):
    from rhymeflow_core.patch import apply_trajectory_projection
    model, probe = base, None
    if row.rhymeflow:
        model = apply_trajectory_projection(model, row.context, row.cache_device)
    if row.easycache:
        from comfy_extras.nodes_easycache import EasyCacheNode
        model = EasyCacheNode.execute(model, reuse_threshold=0.2, start_percent=0.15, end_percent=0.95, verbose=False).result[0]
    if row.override:
        model = model.clone()
        probe = OverrideProbe(tokens)
        model.model_options["transformer_options"]["optimized_attention_override"] = probe
    return model, probe


def make_sampler(row: Row, quick: bool):
    import comfy.samplers

    from rhymeflow_core.keyframes import KeyframeSpec
    from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
    from rhymeflow_core.sampling_loop import SamplerSettings
    if not row.rhymeflow:
        return comfy.samplers.sampler_object("uni_pc")
    return RhymeFlowSamplerObject(SamplerSettings(schedule_settings(row, quick), KeyframeSpec("uniform", row.keyframes), "uni_pc"))


def sample_once(model, sampler, inputs: Inputs, steps: int, cuda: bool, cfg: float = 5.0, mask=None):
    """(output, seconds) of one guider.sample run; `mask` is the latent's noise mask, if any."""
    import comfy.samplers
    import torch
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", steps).float()
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(inputs.cond, inputs.uncond)
    guider.set_cfg(cfg)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.no_grad():
        out = guider.sample(inputs.noise, inputs.latent, sampler, sigmas, denoise_mask=mask, disable_pbar=True, seed=0)
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


@dataclass
class Result:
    row: Row
    steps_run: int
    wall_run: float
    estimate: float                  # the --steps run: measured, or extrapolated (--quick)
    calls: dict                      # model calls per kind in the run
    planned: dict                    # calls per kind planned for the --steps run (per cond batch)
    calls_per_step: float
    ratio: float | None              # mean active / mean full pass
    ideal: float | None
    peak_gb: float | None
    cache_gb: float
    cache_device: str
    notes: list = field(default_factory=list)
    speedup: float | None = None


def run_row(base, timer: PassTimer, row: Row, inputs: Inputs, steps: int, quick: int, cuda: bool) -> tuple[Result, object]:
    """`quick`: 0 for a full-length run, else the number of steps of the short RhymeFlow run."""
    import torch

    from rhymeflow_core.report import observe
    from rhymeflow_core.schedule import build_schedule
    frames = inputs.latent.shape[2]
    plain_dense = not row.rhymeflow and not row.easycache
    steps_run = min(steps, DENSE_QUICK_STEPS if plain_dense else quick) if quick else steps
    model, probe = build_row_model(base, row, inputs.tokens)
    timer.reset()
    with observe() as reports:
        out, wall = sample_once(model, make_sampler(row, bool(quick)), inputs, steps_run, cuda)
    calls = {k: len(v) for k, v in timer.times.items()}
    calls_per_step = sum(calls.values()) / steps_run
    full_mean = _rest_mean(timer.times.get("full"))
    active_mean = _rest_mean(timer.times.get("active"))
    ratio = active_mean / full_mean if full_mean and active_mean else None
    planned = planned_calls(row, steps, False, frames)
    estimate = wall if not quick else extrapolate(timer.times, wall, steps_run, steps, planned, calls_per_step, row)
    notes = []
    cache_gb, cache_device = 0.0, "-"
    if row.rhymeflow:
        report = reports[-1]
        cache_gb, cache_device = report.cache_peak_bytes / 1e9, report.cache_device or "-"
    ideal = build_schedule(steps, schedule_settings(row, False)).ideal_speedup(ratio) if row.rhymeflow and ratio else None
    if probe is not None:
        notes.append(f"override called {probe.calls}x, {probe.active_self}x as active self-attention")
    if "skipped" in calls:
        notes.append(f"EasyCache skipped {calls['skipped']} of {sum(calls.values())} calls")
    if quick and row.easycache:
        notes.append("scaled by steps")
    if calls_per_step > 1.5:
        notes.append("cond/uncond in separate calls")
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
    return Result(row, steps_run, wall, estimate, calls, planned, calls_per_step, ratio, ideal, peak, cache_gb,
                  cache_device, notes), out


def _rest_mean(times):
    """Mean of the calls after the first (the first of a kind pays for allocations and kernel selection)."""
    if not times:
        return None
    return statistics.fmean(times[1:]) if len(times) > 1 else times[0]


def extrapolate(times: dict, wall: float, steps_run: int, steps: int, planned: dict, calls_per_step: float, row: Row) -> float:
    if row.easycache:
        return wall * steps / steps_run
    model_time = 0.0
    for kind, count in planned.items():
        n = round(count * calls_per_step)
        ts = times.get(kind)
        if n and ts:
            model_time += ts[0] + (n - 1) * _rest_mean(ts)
        elif n:
            model_time += n * _rest_mean(times["full"])   # e.g. a kind the short run did not reach
    overhead = (wall - sum(sum(ts) for ts in times.values())) / steps_run
    return model_time + overhead * steps


# ---- a configuration and the table ------------------------------------------------------------

@dataclass
class Config:
    model: str
    size: str
    frames: int
    rows: tuple
    steps: int
    quick: int    # 0, or the steps of a --quick RhymeFlow run


def run_config(cfg: Config, device: str, log=print) -> list[Result]:
    import comfy.model_management
    import comfy.patcher_extension
    import torch
    cuda = device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    started = time.perf_counter()
    model = load_model(cfg.model, dtype, device)
    inputs = make_inputs(cfg.size, cfg.frames, TEXT_TOKENS.get(cfg.model, 512))
    timer = PassTimer(cuda)
    base = model.clone()
    base.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "rhymeflow-bench", timer)
    log(f"[{cfg.model} {cfg.size}] model built in {time.perf_counter() - started:.1f} s; {inputs.tokens} tokens")
    # Warm-up (not reported): loads the weights onto the device and selects kernels for all passes.
    sample_once(apply_warm(base), make_sampler(replace(ROWS["release"], warmup=1), True), inputs, 3, cuda)
    results, dense_out = [], None
    for name in cfg.rows:
        row = ROWS[name]
        result, out = run_row(base, timer, row, inputs, cfg.steps, cfg.quick, cuda)
        if name == "dense":
            dense_out = out
        results.append(result)
        log(f"[{cfg.model} {cfg.size}] {name}: {result.estimate:.2f} s (ran {result.steps_run} steps in {result.wall_run:.2f} s)")
        del out
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    dense = next((r for r in results if not r.row.rhymeflow and not r.row.easycache), None)
    for r in results:
        r.speedup = dense.estimate / r.estimate if dense else None
    del base, model, dense_out
    comfy.model_management.unload_all_models()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return results


def apply_warm(base):
    from rhymeflow_core.patch import apply_trajectory_projection
    return apply_trajectory_projection(base, "kv_cache", "auto")


def _fmt(v, spec, missing="-"):
    return missing if v is None else format(v, spec)


COLUMNS = ("row", "setting", "cache on", "model calls (full/record/active) at --steps", "sampler time (s)",
           "speedup vs dense", "active / full pass", "ideal speedup at that ratio", "peak GPU mem (GB)", "cache (MB)", "notes")


def table(cfg: Config, results: list[Result]) -> str:
    timing = f"est. for {cfg.steps} steps from a --quick run" if cfg.quick else f"{cfg.steps} steps, measured"
    lines = [f"### Wan {cfg.model}, {cfg.size}, {cfg.frames} frames ({timing})", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        p = r.planned
        calls = "{}/{}/{}".format(*(round(p.get(k, 0) * r.calls_per_step) for k in ("full", "record", "active")))
        cells = (r.row.name, r.row.label, r.cache_device, calls, f"{r.estimate:.2f}", _fmt(r.speedup, ".2f") + ("x" if r.speedup else ""),
                 _fmt(r.ratio, ".3f"), _fmt(r.ideal, ".2f") + ("x" if r.ideal else ""), _fmt(r.peak_gb, ".2f"),
                 f"{r.cache_gb * 1e3:.4g}", "; ".join(r.notes + [f"ran {r.steps_run} steps in {r.wall_run:.2f} s"] * bool(cfg.quick)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def targets(cfg: Config, results: list[Result]) -> str:
    """The checks of docs/algorithm.md §6 ("Targets") this configuration can answer."""
    by = {r.row.name: r for r in results}
    out = []
    rel, dense, cpu = by.get("release"), by.get("dense"), by.get("release-cpu")
    if rel and rel.ratio is not None:
        out.append(f"- active / full pass (release, M=2): {rel.ratio:.3f} (target <= 0.13 for 1.3B 480p)")
    if rel and rel.speedup:
        out.append(f"- release sampler speedup: {rel.speedup:.2f}x (target >= 1.95x at 50 steps; ideal at this ratio {_fmt(rel.ideal, '.2f')}x)")
    if rel and dense and rel.peak_gb is not None and dense.peak_gb is not None:
        ok = rel.peak_gb <= dense.peak_gb + rel.cache_gb
        out.append(f"- peak memory release {rel.peak_gb:.2f} GB vs dense + cache {dense.peak_gb + rel.cache_gb:.2f} GB: {'ok' if ok else 'ABOVE'}")
    if rel and cpu and rel.speedup and cpu.speedup:
        out.append(f"- cache_device=cpu speedup {cpu.speedup:.2f}x = {cpu.speedup / rel.speedup:.0%} of the release row's "
                   f"(cache on {rel.cache_device}; target >= 85% of the GPU-cache figure)")
    return "\n".join(out) + ("\n" if out else "")


def header(device: str, argv: list[str]) -> str:
    import torch
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        import os
        name = f"CPU only, {os.cpu_count()} cores, {platform.machine()} ({platform.processor() or 'unknown'})"
    return (f"- Device: {name}; torch {torch.__version__}; dtype {'bf16' if device == 'cuda' else 'fp32'}\n"
            f"- Date: {datetime.datetime.now():%Y-%m-%d %H:%M}; commit {git_commit()}\n"
            f"- Command: `python -m tools.bench {' '.join(argv)}`\n")


# ---- profile ----------------------------------------------------------------------------------

def profile_active_pass(model: str, size: str, frames: int, device: str, rows: int = 15) -> str:
    """torch.profiler table of one kv_cache active pass (after a recording pass and one untimed active pass)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from rhymeflow_core.adapters.wan import WanAdapter
    from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun
    cuda = device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    dm = load_model(model, dtype, device).model.diffusion_model.to(device)
    inputs = make_inputs(size, frames, TEXT_TOKENS.get(model, 512))
    x = torch.cat([inputs.noise] * 2).to(device, dtype)
    t = torch.full((2,), 500.0, device=device)
    ctx = torch.cat([inputs.cond[0][0], inputs.uncond[0][0]]).to(device, dtype)
    keyframes = (0, x.shape[2] - 1)
    run = RhymeFlowRun(ProjectionConfig("kv_cache", "gpu"), WanAdapter())
    to = {"uuids": ["cond", "uncond"]}

    def one(kind):
        run.set_plan(kind, keyframes)
        return run.adapter.forward(dm, run, to, (x, t, ctx), {})

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.no_grad():
        one(RECORD)
        one(ACTIVE)
        with profile(activities=activities) as prof:
            one(ACTIVE)
            if cuda:
                torch.cuda.synchronize()
    sort = "cuda_time_total" if cuda else "cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=rows)


# ---- entry ------------------------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="1.3b", choices=sorted(MODELS))
    ap.add_argument("--size", default="480p", help="480p, 720p, tiny (192x320) or HEIGHTxWIDTH in pixels")
    ap.add_argument("--frames", type=int, default=81, help="pixel frames (81 -> 21 latent frames)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help=f"run --quick-steps steps per row (dense {DENSE_QUICK_STEPS}) and extrapolate")
    ap.add_argument("--quick-steps", type=int, default=QUICK_STEPS)
    ap.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    ap.add_argument("--suite", choices=("gpu",), help="run the preset configurations (ignores --model/--size/--rows)")
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--out", help="write the markdown here")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of one active pass and exit")
    return ap.parse_args(argv)


def configs(args) -> list[Config]:
    from rhymeflow_core.errors import RhymeFlowInputError
    quick = max(args.quick_steps, QUICK_WARMUP + 2) if args.quick else 0   # room for a record and an active pass
    if args.suite == "gpu":
        return [Config(m, s, args.frames, rows, args.steps, quick) for m, s, rows in GPU_SUITE]
    rows = tuple(r.strip() for r in args.rows.split(",") if r.strip())
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise RhymeFlowInputError(f"unknown bench rows {unknown}; use some of {', '.join(ROWS)}")
    parse_size(args.size)
    return [Config(args.model, args.size, args.frames, rows, args.steps, quick)]


def main(argv=None, log=print) -> tuple[str, list]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = setup_host(args.device)
    import logging
    logging.basicConfig(level=logging.WARNING)   # the host logs optional-import warnings at INFO
    logging.getLogger("RhymeFlow").setLevel(logging.INFO if device == "cuda" else logging.WARNING)
    if args.profile:
        text = profile_active_pass(args.model, args.size, args.frames, device)
        log(text)
        return text, []
    parts, everything = ["## Sampler benchmark\n", header(device, argv)], []
    for cfg in configs(args):
        results = run_config(cfg, device, log)
        everything.append((cfg, results))
        parts += ["", table(cfg, results), targets(cfg, results)]
    text = "\n".join(parts)
    log(text)
    if args.out:
        Path(args.out).write_text(text)
    return text, everything


if __name__ == "__main__":
    main()
