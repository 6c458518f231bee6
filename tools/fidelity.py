"""Fidelity harness: RhymeFlow presets, EasyCache and the step-reduction frontier against dense.

For every prompt x seed and every reference step count (20, 30, 50), the dense output (uni_pc) is
the reference; every method samples the same prompt and seed through ComfyUI's real CFGGuider path
and is scored with the PSNR and SSIM of docs/algorithm.md §7 plus a temporal error
(tools/metrics.py). The frontier is dense sampling at fewer steps (tools/fidelity_frontier.py).
Model cost is counted in full-pass equivalents from the passes the model really ran, at two
active/full ratios: the one measured on this machine at the start of the run, and a real-size
model's (tools/fidelity_profiles.py). Settings profiles (default `wan`: shift 8, cfg 6) are in
tools/fidelity_profiles.py.

    python -m tools.fidelity                       # the table -> docs/fidelity.md, .json, .png, fidelity_table.md
    python -m tools.fidelity --quick --out /tmp/f  # one prompt, one seed, reference 20: for iteration
    python -m tools.fidelity --sensitivity --profiles wan,cfg5,shift5,demo --out /tmp/s   # step-reduction sensitivity
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.fidelity_frontier import REFERENCES, frontier_steps
from tools.fidelity_profiles import PROFILE_NAMES, PROFILES, PROMPT_SETS, SEEDS, TRAINED_FRAMES, Profile, real_ratio
from tools.headless import PACK_DIR, bootstrap, git_commit

PAPER = dict(warmup=8, count=4, min_stride=2, max_stride=3)


@dataclass
class Method:
    name: str
    kind: str = "rhymeflow"  # rhymeflow | dense | easycache
    warmup: int = 10
    count: int = 2
    min_stride: int = 3
    max_stride: int = 5
    progressive: bool = True
    strategy: str = "semantic"
    context: str = "kv_cache"
    steps: int | None = None  # dense: its own step count (None: the reference's)
    threshold: float = 0.0  # easycache
    refresh_budget: float = 0.0  # partial passes (docs/algorithm.md §11)
    note: str = ""
    group: str = "method"  # method | frontier
    results: list = field(default_factory=list)


def preset_methods(reference: int) -> list[Method]:
    """The three presets at this step count (rhymeflow_core/presets.py); balanced is the release setting."""
    from rhymeflow_core.presets import PRESETS
    return [Method(f"preset {name}", warmup=p.warmup_steps(reference), min_stride=p.min_stride, max_stride=p.max_stride,
                   note=f"warm-up {p.warmup_steps(reference)}, strides {p.min_stride}-{p.max_stride}")
            for name, p in PRESETS.items()]


def fast_custom_method(reference: int) -> Method:
    """A custom schedule at about 2.5x real-size cost, the fastest point of issue 17's targets (no preset is)."""
    warmup = round(0.1 * reference)
    return Method("custom 2.5x", warmup=warmup, min_stride=5, max_stride=7, note=f"warm-up {warmup}, strides 5-7")


def partial_pass_methods(reference: int, budget: float = 0.25) -> list[Method]:
    """Partial passes (refresh_budget, docs/algorithm.md §11) on the fast and balanced presets' schedules."""
    rows = []
    for m in preset_methods(reference)[1:]:
        m.name, m.refresh_budget = f"{m.name} + refresh_budget {budget:g}", budget
        rows.append(m)
    return rows


def ablation_methods() -> list[Method]:
    """The older table's paper-setting ablations (--ablations); each changes one thing."""
    return [
        Method("RhymeFlow paper", **PAPER, note="warm-up 8, 4 keyframes, strides 2-3"),
        Method("paper, hidden_cache", **PAPER, context="hidden_cache"),
        Method("paper, w/o projection (keyframe_only)", **PAPER, context="keyframe_only"),
        Method("paper, uniform keyframes", **PAPER, strategy="uniform"),
        Method("paper, random keyframes", **PAPER, strategy="random"),
        Method("paper, fixed stride", **PAPER, progressive=False),
    ]


def methods(reference: int, ablations: bool = False) -> list[Method]:
    """One reference's rows: presets, EasyCache (calibrated later), the frontier, optional ablations."""
    frontier = [Method(f"dense, {n} steps", kind="dense", steps=n, group="frontier", note=f"{100 * n / reference:.0f} %")
                for n in frontier_steps(reference)]
    easycache = Method("EasyCache", kind="easycache", note="threshold calibrated to preset balanced's cost")
    return [*preset_methods(reference), fast_custom_method(reference), *partial_pass_methods(reference), easycache, *frontier,
            *(ablation_methods() if ablations else [])]


class PassCounter:
    """Counts full and active passes from the row count seen by the first transformer block."""

    def __init__(self, model, full_tokens: int):
        self.full_tokens, self.passes = full_tokens, []
        block = model.model.diffusion_model.blocks[0]
        self.handle = block.register_forward_pre_hook(lambda mod, args: self.passes.append(args[0].shape[1]))

    def close(self):
        self.handle.remove()


def query_frames(report, frames: int) -> float:
    """Mean query frames of the run's active passes, from the rows counted inside the model: the
    keyframes, plus the refreshing non-keyframes of partial passes."""
    calls, rows = report.model_calls, report.rows
    full_calls = calls.get("full", 0) + calls.get("record", 0)
    if not calls.get("active") or not full_calls or not rows.get("active"):
        return float(len(report.keyframes))
    frame_rows = (rows.get("full", 0) + rows.get("record", 0)) / full_calls / frames
    return rows["active"] / calls["active"] / frame_rows


def ratio_at(ratios: dict[int, float], m: float) -> float:
    """This machine's active/full ratio at m query frames: linear through the measured counts."""
    (m0, r0), (m1, r1) = sorted(ratios.items())[:2]
    return r0 + (r1 - r0) * (m - m0) / (m1 - m0)


def pass_costs(counter: PassCounter, report, ratios: dict[int, float], frames: int) -> tuple[float, float]:
    """Full-pass equivalents (at this machine's ratio, at a real-size model's ratio). RhymeFlow's own
    per-call counts (its recording and active passes run the blocks outside their module hooks), else
    the passes the block hook saw (dense, EasyCache: every pass is a full pass)."""
    if report is None:
        n = sum(1 for rows in counter.passes if rows >= counter.full_tokens)
        return float(n), float(n)
    calls, m = report.model_calls, query_frames(report, frames)
    full = calls.get("full", 0) + calls.get("record", 0)
    return full + calls.get("active", 0) * ratio_at(ratios, m), full + calls.get("active", 0) * real_ratio(m, frames)


def measure_active_cost(model, latent_shape, counts=(2, 4), repeat=5) -> dict[int, float]:
    """Active/full pass time ratio (kv_cache, batch 2) of this model on this machine."""
    import torch

    from rhymeflow_core.keyframes import KeyframeSpec, select_keyframes
    from tools.pass_cost import best_ms, pass_times

    dm = model.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *latent_shape[1:], generator=g)
    t, ctx = torch.full((2,), 500.0), torch.randn(2, 32, 4096, generator=g) * 0.1
    with torch.no_grad():
        full = best_ms(lambda: dm(x, t, ctx), repeat)
        return {m: pass_times(dm, x, t, ctx, select_keyframes(x, KeyframeSpec("uniform", m)), "kv_cache", repeat)[1] / full
                for m in counts}


class Harness:
    """The demo model under one settings profile and clip length; samples through ComfyUI's CFGGuider."""

    def __init__(self, profile: Profile, frames: int = TRAINED_FRAMES, size: int = 16, weights=None):
        from comfy_extras.nodes_model_advanced import ModelSamplingSD3

        from rhymeflow_core.demo_model import WEIGHTS, load_demo_model
        self.profile, self.frames = profile, frames
        self.model = ModelSamplingSD3().patch(load_demo_model(weights or WEIGHTS), profile.shift)[0]
        self.latent_shape = (1, 16, frames, size, size)
        self.full_tokens = frames * size * size // 4

    def sigmas(self, steps: int):
        import comfy.samplers
        return comfy.samplers.calculate_sigmas(self.model.get_model_object("model_sampling"), "simple", steps).float()

    def sample(self, model, sampler, prompt: str, seed: int, steps: int):
        import comfy.sample
        import comfy.samplers
        import torch

        from rhymeflow_core.demo_model import decode_latent, encode_prompt
        latent = torch.zeros(self.latent_shape)
        noise = comfy.sample.prepare_noise(latent, seed)
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds([[encode_prompt(prompt), {}]], [[encode_prompt(""), {}]])
        guider.set_cfg(self.profile.cfg)
        with torch.no_grad():
            out = guider.sample(noise, latent, sampler, self.sigmas(steps), disable_pbar=True, seed=seed)
        return decode_latent(out)[0]

    def dense(self, prompt: str, seed: int, steps: int, model=None):
        import comfy.samplers
        return self.sample(model or self.model, comfy.samplers.sampler_object(self.profile.solver), prompt, seed, steps)

    def run(self, method: Method, prompt: str, seed: int, reference: int):
        """(video, passes seen by the model, RhymeFlow report or None)."""
        from comfy_extras.nodes_easycache import EasyCacheNode

        from rhymeflow_core.keyframes import KeyframeSpec
        from rhymeflow_core.patch import apply_trajectory_projection
        from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
        from rhymeflow_core.sampling_loop import SamplerSettings
        from rhymeflow_core.schedule import ScheduleSettings
        from tools.headless import observe_reports

        if method.kind == "dense":
            model = self.model.clone()
        elif method.kind == "easycache":
            model = EasyCacheNode.execute(self.model, method.threshold, 0.15, 0.95, False).result[0]
        else:
            model = apply_trajectory_projection(self.model, method.context, "auto")
        counter = PassCounter(model, self.full_tokens)
        try:
            with observe_reports() as reports:
                if method.kind == "rhymeflow":
                    settings = SamplerSettings(
                        ScheduleSettings(method.warmup, method.min_stride, method.max_stride, progressive=method.progressive),
                        KeyframeSpec(method.strategy, method.count, seed=seed), self.profile.solver,
                        refresh_budget=method.refresh_budget)
                    video = self.sample(model, RhymeFlowSamplerObject(settings), prompt, seed, reference)
                else:
                    video = self.dense(prompt, seed, method.steps or reference, model=model)
        finally:
            counter.close()
        return video, counter, (reports[-1] if reports else None)


EASYCACHE_GRID = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5)


def calibrate_easycache(h: Harness, target_cost: float, prompt: str, seed: int, reference: int) -> float:
    """The EasyCache threshold whose pass count comes closest to the target cost. Passes fall as the
    threshold rises, so the walk starts at 0.1 and stops once it has crossed the target."""
    def passes(k):
        _, counter, _ = h.run(Method("probe", kind="easycache", threshold=EASYCACHE_GRID[k]), prompt, seed, reference)
        return len(counter.passes)
    k = EASYCACHE_GRID.index(0.1)
    seen = {k: passes(k)}
    step = 1 if seen[k] > target_cost else -1
    while 0 <= k + step < len(EASYCACHE_GRID) and (seen[k] > target_cost) == (step > 0):
        k += step
        seen[k] = passes(k)
    return EASYCACHE_GRID[min(seen, key=lambda j: abs(seen[j] - target_cost))]


def balanced_cost(reference: int, ratio: float) -> float:
    """Preset balanced's model cost at this step count (its schedule at the measured ratio)."""
    from rhymeflow_core.presets import PRESETS
    from rhymeflow_core.schedule import ScheduleSettings, build_schedule
    p = PRESETS["balanced"]
    s = build_schedule(reference, ScheduleSettings(p.warmup_steps(reference), p.min_stride, p.max_stride))
    return s.full_passes + s.active_passes * ratio


def score(h: Harness, m: Method, prompt: str, seed: int, reference: int, ref_video, ratios) -> dict:
    from tools.metrics import compare
    t = time.perf_counter()
    video, counter, report = h.run(m, prompt, seed, reference)
    seconds = time.perf_counter() - t
    cost, cost_real = pass_costs(counter, report, ratios, h.frames)
    return {**compare(video, ref_video), "cost": cost, "cost_real": cost_real, "seconds": seconds}


def run_table(h: Harness, pairs, references, ratios, ablations: bool, selected=None, calibrate_on=None) -> tuple[dict, dict]:
    """{reference: [Method with results]}, {reference: mean seconds of the dense reference}. EasyCache is
    calibrated on `calibrate_on` (default the first pair), so every shard of a run gets the same threshold."""
    rows = {r: [m for m in methods(r, ablations) if selected is None or any(s in m.name for s in selected)]
            for r in references}
    for r, ms in rows.items():
        for m in (m for m in ms if m.kind == "easycache"):
            m.threshold = calibrate_easycache(h, balanced_cost(r, ratios[2]), *(calibrate_on or pairs[0]), r)
            m.note = f"threshold {m.threshold}, calibrated to preset balanced's cost"
    dense_seconds = {r: [] for r in references}
    start = time.perf_counter()
    for k, (prompt, seed) in enumerate(pairs):
        for r in references:
            t = time.perf_counter()
            ref_video = h.dense(prompt, seed, r)
            dense_seconds[r].append(time.perf_counter() - t)
            for m in rows[r]:
                m.results.append(score(h, m, prompt, seed, r, ref_video, ratios))
        print(f"[{k + 1}/{len(pairs)}] {prompt!r} seed {seed}  ({(time.perf_counter() - start) / 60:.1f} min)", flush=True)
    return rows, {r: sum(v) / len(v) for r, v in dense_seconds.items()}


def _device() -> str:
    import os
    import platform

    import torch
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads)"


def _meta(args, argv, pairs, h: Harness, start: float) -> dict:
    return {"command": "python -m tools.fidelity " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"), "commit": git_commit(), "device": _device(),
            "profile": args.profile, "shift": h.profile.shift, "cfg": h.profile.cfg, "solver": h.profile.solver,
            "frames": h.frames, "pairs": len(pairs), "prompts": sorted({p for p, _ in pairs}, key=[p for p, _ in pairs].index),
            "seeds": sorted({s for _, s in pairs}), "prompt_set": args.prompt_set,
            "minutes": (time.perf_counter() - start) / 60}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="wan", choices=PROFILE_NAMES, help="sampler settings (tools/fidelity_profiles.py)")
    ap.add_argument("--profiles", default=",".join(PROFILE_NAMES), help="--sensitivity: comma-separated profiles")
    ap.add_argument("--frames", type=int, default=TRAINED_FRAMES, help="latent frames (the demo model was trained on 13)")
    ap.add_argument("--prompt-set", default="all", choices=list(PROMPT_SETS))
    ap.add_argument("--prompts", type=int, default=None, help="use the first N prompts of the set")
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="use the first N seeds")
    ap.add_argument("--references", default=None, help="comma-separated reference step counts (default 20,30,50)")
    ap.add_argument("--methods", default="", help="comma-separated substrings of method names to run (default: all)")
    ap.add_argument("--ablations", action="store_true", help="add the paper-setting ablations of the older table")
    ap.add_argument("--sensitivity", action="store_true", help="only the step-reduction sensitivity, per profile")
    ap.add_argument("--quick", action="store_true", help="one prompt, one seed, reference 20 (iteration)")
    ap.add_argument("--shard", default=None, help="K/N: run every N-th prompt x seed pair from the K-th (1-based) and "
                    "keep the per-pair results for --merge; N processes run the shards in parallel")
    ap.add_argument("--merge", default=None, help="comma-separated --out folders of shards: combine them into --out")
    ap.add_argument("--out", default=str(PACK_DIR / "docs"))
    ap.add_argument("--redraw", action="store_true", help="only redraw fidelity.png from the fidelity.json in --out")
    args = ap.parse_args(argv)
    if args.quick:  # explicit --references still win
        args.prompts, args.seeds, args.references = 1, 1, args.references or "20"
    args.references = [int(r) for r in (args.references or ",".join(map(str, REFERENCES))).split(",")]
    if args.shard:
        k, _, n = args.shard.partition("/")
        if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
            ap.error(f"--shard must be K/N with 1 <= K <= N, e.g. 1/2; got {args.shard!r}")
        args.shard = (int(k), int(n))
    return args


def main(argv=None) -> None:
    from tools import fidelity_report, fidelity_sensitivity

    args = parse_args(argv)
    out = Path(args.out)
    if args.redraw:
        return fidelity_report.redraw(out)
    if args.merge:
        return fidelity_report.merge([Path(d) for d in args.merge.split(",")], out, argv if argv is not None else sys.argv[1:])
    bootstrap()
    logging.basicConfig(level=logging.ERROR)
    from tools.headless import load_nodes
    load_nodes()
    prompts = PROMPT_SETS[args.prompt_set][: args.prompts]
    pairs = [(p, s) for p in prompts for s in SEEDS[: args.seeds]]
    first = pairs[0]
    if args.shard:
        pairs = pairs[args.shard[0] - 1:: args.shard[1]]
    start = time.perf_counter()
    if args.sensitivity:
        profiles = [p.strip() for p in args.profiles.split(",")]
        results = fidelity_sensitivity.run(lambda name: Harness(PROFILES[name], args.frames), profiles, pairs)
        meta = {**_meta(args, argv, pairs, Harness(PROFILES[profiles[0]], args.frames), start), "profiles": profiles}
        return fidelity_sensitivity.write(results, meta, out)
    h = Harness(PROFILES[args.profile], args.frames)
    ratios = measure_active_cost(h.model, h.latent_shape)
    print(f"active/full cost on this machine: {ratios}", flush=True)
    references = args.references
    selected = [s.strip() for s in args.methods.split(",")] if args.methods else None
    rows, dense_seconds = run_table(h, pairs, references, ratios, args.ablations, selected, first)
    meta = {**_meta(args, argv, pairs, h, start), "active_cost": ratios, "dense_seconds": dense_seconds,
            "real_ratio": {m: real_ratio(m, h.frames) for m in ratios}}
    if args.shard:
        fidelity_report.write_shard(rows, meta, out)
    fidelity_report.write_outputs(fidelity_report.summarise(rows), meta, out)
    print((out / "fidelity_table.md").read_text())


if __name__ == "__main__":
    main()
