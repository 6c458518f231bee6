"""Profile of one active pass: its time against a full pass, top kernels, GPU idle gaps, cache copies.

  python -m tools.gpu_profile --model 1.3b --size 480p                 # on CUDA (bf16), cache on the GPU and on the CPU
  python -m tools.gpu_profile --model tiny --size 32x32 --device cpu   # the same code paths on the CPU (fp32)

The model is tools/bench.py's (a Wan architecture from random weights through ComfyUI's loader). Per
cache placement (`gpu`: resident, `cpu`: pinned host buffers prefetched one block ahead on a side
stream) it times full and active passes (mean of several after a warm-up, synchronised), then runs
one kv_cache active pass under torch.profiler. From the profiler's trace it reports the kernels
that took the most GPU time, how much of the pass the GPU sat idle between kernels (host gaps:
launch overhead, synchronisations, waits on the prefetch) and, with the cache on the CPU, how long
the host-to-device copies took and how much of that ran under compute.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GAP_US = 10.0   # idle stretches shorter than this between kernels are not counted as gaps


# ---- trace analysis (pure; tested on a synthetic trace) -----------------------------------------

def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Total length of the intersection of two sorted, disjoint interval lists."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        total += max(0.0, hi - lo)
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


def summarise_trace(events: list[dict], top: int = 12) -> dict:
    """GPU activity of a Chrome trace (torch.profiler's export): kernels, copies, idle gaps. Times in µs."""
    kernels, copies = [], []
    for e in events:
        if e.get("ph") != "X" or "dur" not in e:
            continue
        cat = str(e.get("cat", "")).lower()
        if cat == "kernel":
            kernels.append(e)
        elif cat in ("gpu_memcpy", "gpu_memset"):
            copies.append(e)
    if not kernels and not copies:
        return {}
    spans = [(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in kernels + copies]
    busy_all = _union(spans)
    start, end = busy_all[0][0], busy_all[-1][1]
    gaps = [b[0] - a[1] for a, b in zip(busy_all, busy_all[1:], strict=False)]
    counted = [g for g in gaps if g >= GAP_US]
    by_name: dict[str, list[float]] = {}
    for e in kernels:
        by_name.setdefault(e["name"], []).append(float(e["dur"]))
    kernel_total = sum(sum(v) for v in by_name.values())
    top_kernels = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:top]
    compute = _union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in kernels])
    h2d = [e for e in copies if "htod" in e["name"].lower().replace(" ", "") or "host to device" in e["name"].lower()
           or (e.get("args") or {}).get("kind") in ("HtoD", "Memcpy HtoD")]
    h2d_spans = _union([(float(e["ts"]), float(e["ts"]) + float(e["dur"])) for e in h2d])
    h2d_time = sum(b - a for a, b in h2d_spans)
    busy = sum(b - a for a, b in busy_all)
    return {
        "span_us": end - start,
        "busy_us": busy,
        "idle_share": 1.0 - busy / (end - start) if end > start else 0.0,
        "gaps": {"count": len(counted), "total_us": sum(counted), "largest_us": max(gaps, default=0.0),
                 "idle_share": (sum(gaps) / (end - start)) if end > start else 0.0},
        "kernels": {"count": len(kernels), "total_us": kernel_total,
                    "streams": sorted({str((e.get("args") or {}).get("stream", "?")) for e in kernels}),
                    "top": [{"name": n[:120], "calls": len(v), "total_us": sum(v), "share": sum(v) / kernel_total if kernel_total else 0.0}
                            for n, v in top_kernels]},
        "h2d": {"count": len(h2d), "total_us": h2d_time, "bytes": sum(int((e.get("args") or {}).get("bytes", 0) or 0) for e in h2d),
                "overlapped_share": _overlap(h2d_spans, compute) / h2d_time if h2d_time else None},
    }


# ---- measurement ---------------------------------------------------------------------------------

def _timed(fn, cuda: bool, repeats: int) -> float:
    """Mean seconds of `repeats` calls after one untimed call, synchronised."""
    import torch
    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.fmean(times)


def profile_placement(dm, x, t, ctx, placement: str, cuda: bool, repeats: int, top: int) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from rhymeflow_core.adapters.wan import WanAdapter
    from rhymeflow_core.run_state import ACTIVE, RECORD, ProjectionConfig, RhymeFlowRun
    keyframes = (0, x.shape[2] - 1)
    run = RhymeFlowRun(ProjectionConfig("kv_cache", placement), WanAdapter())
    to = {"uuids": ["cond", "uncond"]}

    def one(kind):
        run.set_plan(kind, keyframes)
        return run.adapter.forward(dm, run, to, (x, t, ctx), {})

    result = {"placement": placement}
    try:
        with torch.no_grad():
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            full = _timed(lambda: dm(x, t, ctx), cuda, max(1, repeats // 2))
            one(RECORD)
            active = _timed(lambda: one(ACTIVE), cuda, repeats)
            result.update(full_ms=full * 1e3, active_ms=active * 1e3, ratio=active / full)
            if cuda:
                result["peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
            activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=activities) as prof:
                one(ACTIVE)
                if cuda:
                    torch.cuda.synchronize()
        with tempfile.TemporaryDirectory() as tmp:
            trace = Path(tmp) / "trace.json"
            prof.export_chrome_trace(str(trace))
            events = json.loads(trace.read_text()).get("traceEvents", [])
        result["gaps"] = summarise_trace(events, top) or None
        sort = "self_cpu_time_total"
        result["top_ops"] = [{"name": e.key[:80], "calls": e.count, "self_cpu_us": e.self_cpu_time_total}
                             for e in sorted(prof.key_averages(), key=lambda e: -getattr(e, sort))[:top]]
    finally:
        report = run.close()   # the run's own record of where its cache lived and how big it grew
        result.update(cache_mb=report.cache_peak_bytes / 1e6, cache_device=report.cache_device or "-")
    return result


def markdown(data: dict) -> str:
    lines = [f"## One active pass: {data['model']} {data['size']}, {data['frames']} frames, {data['tokens']} tokens, "
             f"{data['dtype']} on {data['device']}", "",
             f"- {data['device_name']}; torch {data['torch']}; commit {data['commit']}; kv_cache, keyframes first and last, "
             "batch 2 (cond + uncond)", "",
             "| cache | full pass (ms) | active pass (ms) | active / full | cache (MB) | peak (GB) | GPU idle in the pass "
             "| gaps >= 10 µs | largest gap (µs) | H2D copies (ms) | H2D under compute |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in data["placements"]:
        g = p.get("gaps") or {}
        h = g.get("h2d") or {}
        lines.append("| " + " | ".join([
            f"{p['placement']} ({p.get('cache_device', '-')})", f"{p['full_ms']:.2f}", f"{p['active_ms']:.2f}", f"{p['ratio']:.3f}",
            f"{p['cache_mb']:.1f}", f"{p['peak_gb']:.2f}" if "peak_gb" in p else "-",
            f"{g['idle_share']:.1%}" if g else "-", str(g["gaps"]["count"]) if g else "-",
            f"{g['gaps']['largest_us']:.0f}" if g else "-", f"{h['total_us'] / 1e3:.2f}" if h.get("count") else "-",
            f"{h['overlapped_share']:.0%}" if h.get("overlapped_share") is not None else "-"]) + " |")
    for p in data["placements"]:
        g = p.get("gaps")
        if g:
            lines += ["", f"Top kernels, cache {p['placement']} ({g['kernels']['count']} kernels, streams {', '.join(g['kernels']['streams'])}):", "",
                      "| kernel | calls | total (µs) | share |", "|---|---|---|---|"]
            lines += [f"| `{k['name']}` | {k['calls']} | {k['total_us']:.0f} | {k['share']:.1%} |" for k in g["kernels"]["top"]]
        else:
            lines += ["", f"Top operators by self CPU time, cache {p['placement']}:", "", "| operator | calls | self CPU (µs) |", "|---|---|---|"]
            lines += [f"| `{o['name']}` | {o['calls']} | {o['self_cpu_us']:.0f} |" for o in p["top_ops"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    from tools import bench
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="1.3b", choices=sorted(bench.MODELS))
    ap.add_argument("--size", default="480p")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--placements", default="gpu,cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args(argv)
    device = bench.setup_host(args.device)
    import torch

    from tools.headless import git_commit
    cuda = device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    started = time.perf_counter()
    dm = bench.load_model(args.model, dtype, device).model.diffusion_model.to(device)
    inputs = bench.make_inputs(args.size, args.frames, bench.TEXT_TOKENS.get(args.model, 512))
    x = torch.cat([inputs.noise] * 2).to(device, dtype)
    t = torch.full((2,), 500.0, device=device)
    ctx = torch.cat([inputs.cond[0][0], inputs.uncond[0][0]]).to(device, dtype)
    data = {"model": args.model, "size": args.size, "frames": args.frames, "tokens": inputs.tokens, "device": device,
            "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__, "commit": git_commit(),
            "device_name": torch.cuda.get_device_name() if cuda else "CPU", "placements": []}
    for placement in args.placements.split(","):
        data["placements"].append(profile_placement(dm, x, t, ctx, placement, cuda, args.repeats, args.top))
        print(f"[profile] cache {placement}: active {data['placements'][-1]['active_ms']:.2f} ms, "
              f"full {data['placements'][-1]['full_ms']:.2f} ms", flush=True)
    data["seconds"] = round(time.perf_counter() - started, 1)
    text = markdown(data)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
    if args.md:
        Path(args.md).write_text(text)
    return data


if __name__ == "__main__":
    main()
