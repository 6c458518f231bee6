"""What the schedule view in the browser shows, computed here so Python stays the one source of truth.

`view_from_request` turns what the frontend reads off the graph (the sampler's widget values, and
the nodes upstream of it: scheduler, latent, model loader) into `schedule_view`: the role of every
step, the pass counts, the keyframes (planned, or the ones a run chose), the ideal speedup, and the
caption, legend and greyed widgets. The JavaScript only reads widget values and draws this.

Every request is checked before any work: a malformed one raises RhymeFlowInputError (the route
answers 400 with its message), and the step and frame counts are capped, so one request costs
at most a few milliseconds of server time (the schedule is built in O(steps)).
"""
from __future__ import annotations

import math

import torch

from .errors import RhymeFlowInputError
from .keyframes import STRATEGIES, KeyframeSpec, parse_manual_frames, select_keyframes
from .presets import CUSTOM, PRESET_NAMES, PRESETS, resolve_schedule
from .sampling_loop import Refresher, SamplerSettings, check_inputs, refresh_refusal
from .schedule import ScheduleSettings, build_schedule

# Cost of an active pass as a fraction of a full pass, by keyframe count M: measured for Wan 2.1
# 1.3B at 480x832x81 frames with the kv_cache context on an H200 (docs/algorithm.md §6).
# The cost grows with M because keyframe tokens are the queries; other models and sizes differ.
ACTIVE_COST = {2: 0.109, 3: 0.154, 4: 0.198, 6: 0.301}
ACTIVE_COST_SOURCE = "active pass = {cost:.3f} of a full pass, measured on Wan 2.1 1.3B 480p, kv_cache, M={m}"

# ---- limits: the widgets' own ranges (nodes/sampler.py declares its widgets with these) -----------
MAX_STEPS, MAX_FRAMES = 10000, 4096           # the hosts' steps widgets stop at 10000; 16384 pixel frames / 4 + 1
WIDGET_LIMITS = {                              # name: (low, high), inclusive
    "warmup_steps": (0, 1000), "min_stride": (1, 100), "max_stride": (1, 100),
    "transition_1": (0.0, 1000.0), "transition_2": (0.0, 1000.0),
}
KEYFRAME_LIMITS = {"count": (1, 1024), "similarity_threshold": (0.0, 1.0), "min_gap": (1, 1024)}
MAX_MANUAL_CHARS = 4000
MAX_CHAIN, MAX_WIDGETS, MAX_NAME, MAX_TEXT = 16, 64, 200, 1000
DEFAULT_STEPS, DEFAULT_FRAMES = 30, 21         # drawn (and said to be assumed) when the graph does not tell

# The widgets a preset other than custom overrides (the view greys them out while one is chosen).
PRESET_WIDGETS = ("warmup_steps", "min_stride", "max_stride", "transition_1", "transition_2", "stride_schedule")

# What the drawing's colours mean; the browser draws with these colours and shows this legend.
LEGEND = (
    ("warmup", "#6b7f91", "warm-up (full pass)"),
    ("rhythmic", "#e0a030", "rhythmic point (full pass)"),
    ("active", "#36b3d6", "active pass (keyframes only)"),
    ("skipped", "#1c2830", "skipped (non-keyframe)"),
    ("keyframe", "#ffffff", "keyframe tick / line where they are chosen"),
    ("refresh", "#2a6f86", "refreshed non-keyframe (partial pass)"),
)
COLORS = {key: color for key, color, _ in LEGEND} | {"grid": "#0e1418"}
PARTIAL_ONLY = ("refresh",)   # legend entries shown only when the view has partial passes

# ---- how the host sizes a video latent: (pixel frames - 1) // temporal factor + 1 -----------------
# Latent nodes of the model families RhymeFlow runs, by class: the widget holding the pixel frame
# count and the VAE's temporal compression (as in ComfyUI's comfy_extras/nodes_{hunyuan,wan,lt}.py).
LATENT_NODES = {
    **{name: ("length", 4) for name in (
        "EmptyHunyuanLatentVideo", "EmptyHunyuanVideo15Latent", "HunyuanImageToVideo", "HunyuanVideo15ImageToVideo",
        "WanImageToVideo", "WanFirstLastFrameToVideo", "WanFunControlToVideo", "Wan22FunControlToVideo",
        "WanCameraImageToVideo", "WanPhantomSubjectToVideo", "WanTrackToVideo", "Wan22ImageToVideoLatent")},
    "EmptyLTXVLatentVideo": ("length", 8), "LTXVImgToVideo": ("length", 8),
}
# Nodes that hand a latent on with its frame count unchanged (samplers, spatial and batch edits).
LATENT_PASS_THROUGH = frozenset((
    "KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "RhymeFlowKSampler",
    "SetLatentNoiseMask", "LatentUpscale", "LatentUpscaleBy", "RepeatLatentBatch", "LatentBatchSeedBehavior"))
# A model family's temporal factor, for a latent node the table above does not know. The demo model
# has no VAE: one latent frame is one frame (RhymeFlowDemoDecode), so its frame count is its latent count.
FAMILY_TEMPORAL = {"wan": 4, "hunyuan": 4, "ltxv": 8, "demo": 1}
FAMILY_NAMES = {"wan": "Wan", "hunyuan": "HunyuanVideo", "ltxv": "LTX-Video", "demo": "the demo model"}
LENGTH_WIDGETS = ("length", "frames", "num_frames", "video_length")
# Model loaders whose file name tells the family (only used with a latent node not listed above).
FAMILY_HINTS = (("ltx", "ltxv"), ("hunyuan", "hunyuan"), ("wan", "wan"))

# ---- how the host counts the steps of a SIGMAS output --------------------------------------------
# Schedulers: "steps" = the steps widget; "steps*denoise" = round(steps * denoise) below 1
# (AlignYourSteps, GITS, OptimalSteps); "steps|denoise" = the steps widget unless denoise <= 0.
SCHEDULERS = {
    **{name: "steps" for name in ("KarrasScheduler", "ExponentialScheduler", "PolyexponentialScheduler",
                                  "LaplaceScheduler", "VPScheduler", "BetaSamplingScheduler", "LTXVScheduler",
                                  "Flux2Scheduler")},
    **{name: "steps*denoise" for name in ("AlignYourStepsScheduler", "GITSScheduler", "OptimalStepsScheduler")},
    **{name: "steps|denoise" for name in ("BasicScheduler", "KSampler", "KSamplerAdvanced", "RhymeFlowKSampler")},
    "SDTurboScheduler": "sdturbo",
}
SIGMA_PASS_THROUGH = frozenset(("FlipSigmas", "SetFirstSigma"))


def active_cost(keyframes: int, frames: int) -> float:
    """Active/full cost ratio for M keyframes: the measured table, linear between and beyond its points."""
    if keyframes >= frames:
        return 1.0  # every frame is a keyframe: an "active" pass is a full pass
    points = sorted(ACTIVE_COST.items())
    m = max(keyframes, points[0][0])
    if m in ACTIVE_COST:
        return ACTIVE_COST[m]
    for (m0, c0), (m1, c1) in zip(points, points[1:], strict=False):
        if m <= m1:
            return c0 + (c1 - c0) * (m - m0) / (m1 - m0)
    (m0, c0), (m1, c1) = points[-2:]
    return min(1.0, c1 + (c1 - c0) * (m - m1) / (m1 - m0))


def planned_keyframes(frames: int, spec: KeyframeSpec) -> tuple[list[int], int]:
    """(keyframes known before sampling, how many more the semantic scan picks at the end of warm-up)."""
    if spec.strategy == "semantic" and spec.count < frames:
        known = sorted({0, frames - 1})
        return known, max(0, spec.count - len(known))
    # The other strategies do not look at the content: ask the real selection with a blank latent.
    return select_keyframes(torch.zeros(1, 1, frames, 1, 1), spec), 0


def latent_frames(length: int, temporal: int) -> int:
    """Latent frames of a video of `length` pixel frames, as the host's latent nodes compute them."""
    return (length - 1) // temporal + 1


def _fmt(x: float) -> str:
    return f"{x:g}"


def planned_refresh(plan, frames: int, keyframes: list[int], pending: int, budget: float) -> list[list[int]]:
    """Per step, the frames its partial pass refreshes, chosen by the sampler's own `Refresher`; [] without a
    budget. Which frames is chosen by content at each rhythmic point (most-changed first, docs/algorithm.md
    §11); before a run the view ranks the non-keyframes in frame order, so the drawing shows how many."""
    keys = set(keyframes)
    nonkey = [f for f in range(frames) if f not in keys][: max(0, frames - len(keyframes) - pending)]
    if not budget or not nonkey:
        return []
    refresher = Refresher(budget, plan.steps)
    for group in plan.groups:
        refresher.rank(nonkey)
        for i in range(group.start + 1, group.end):
            refresher.choose(nonkey, i)
    return refresher.refreshed


def schedule_view(steps: int, frames: int, preset: str = CUSTOM, schedule: ScheduleSettings = ScheduleSettings(),
                  keyframes: KeyframeSpec = KeyframeSpec(), chosen: list[int] | None = None,
                  steps_source: str = "", frames_source: str = "", assumed: tuple[str, ...] = (),
                  refresh_budget: float = 0.0, chosen_refresh: list[list[int]] | None = None) -> dict:
    """The view's data for a sampler with these settings. `*_source` say where the counts came from;
    `assumed` names the counts that are stand-ins because the graph does not tell. With a refresh
    budget, `chosen_refresh` is what a run refreshed (per step), else the view plans it."""
    settings = resolve_schedule(preset, schedule, steps)
    plan = build_schedule(steps, settings)
    warnings = []
    try:  # the sampler's own pre-flight check, on a synthetic latent and sigmas of this size
        check_inputs(SamplerSettings(settings, keyframes), (1, 16, frames, 1, 1), torch.linspace(1.0, 0.0, steps + 1))
        known, pending = (sorted(chosen), 0) if chosen else planned_keyframes(frames, keyframes)
    except RhymeFlowInputError as e:
        warnings.append(str(e))
        known, pending = (sorted(chosen), 0) if chosen else ([0, frames - 1] if frames > 1 else [0], 0)
    count = len(known) + pending
    refresh = chosen_refresh if chosen_refresh else planned_refresh(plan, frames, known, pending, refresh_budget)
    refreshes = sum(map(len, refresh))
    queries = count + (refreshes / plan.active_passes if plan.active_passes else 0.0)   # mean query frames per active pass
    cost = active_cost(queries, frames)
    speedup = plan.ideal_speedup(cost)
    stride_schedule = "progressive" if settings.progressive else "fixed"
    preset_values = {} if preset == CUSTOM else {
        "warmup_steps": settings.warmup_steps, "min_stride": settings.min_stride, "max_stride": settings.max_stride,
        "transition_1": settings.transition_1, "transition_2": settings.transition_2, "stride_schedule": stride_schedule}
    source = "chosen" if chosen else "planned"

    # The caption: every number in it is one the drawing shows.
    def sized(n, unit, src, what):
        if what in assumed:
            return f"{n} {unit} (assumed: {src})"
        return f"{n} {unit}" + (f" ({src})" if src else "")
    lines = [f"{sized(steps, 'steps', steps_source, 'steps')} x {sized(frames, 'latent frames', frames_source, 'frames')}"]
    if preset == CUSTOM:
        lines.append(f"custom: warm-up {settings.warmup_steps}, strides {settings.min_stride}-{settings.max_stride} "
                     f"({stride_schedule}), transitions {_fmt(settings.transition_1)} / {_fmt(settings.transition_2)}")
    else:
        lines.append(f"preset {preset} at {steps} steps: warm-up {settings.warmup_steps} "
                     f"({PRESETS[preset].warmup_percent}%), strides {settings.min_stride}-{settings.max_stride}; "
                     f"the widgets it overrides are ignored (kept for custom)")
    warmup_note = ""
    if settings.warmup_steps < plan.warmup:
        warmup_note = f" (warmup_steps {settings.warmup_steps}: the first step is always a full pass)"
    elif settings.warmup_steps > plan.warmup:
        warmup_note = f" (warmup_steps {settings.warmup_steps} cut to {plan.warmup}: one step must remain)"
    lines.append(f"full passes {plan.full_passes} = warm-up {plan.warmup}{warmup_note} + rhythmic {len(plan.groups)}; "
                 f"active passes {plan.active_passes}")
    if refresh_budget:
        nonkey = max(0, frames - count)
        lines.append(f"partial passes: refresh_budget {_fmt(refresh_budget)} of {nonkey} non-keyframes, "
                     f"{refreshes} refreshes over {plan.active_passes} active passes ({queries:.2f} query frames each); "
                     + ("the frames the last run refreshed" if chosen_refresh else
                        "which frames is chosen by content at each rhythmic point"))
    lines.append(f"ideal speedup {speedup:.2f}x ({ACTIVE_COST_SOURCE.format(cost=cost, m=_fmt(round(queries, 2)))})")
    picked = f" + {pending} picked by content at the end of step {plan.detect_step + 1}" if pending else ""
    lines.append(f"keyframes {'chosen in the last run' if chosen else 'planned'}: [{', '.join(map(str, known))}]{picked}")
    return {
        "steps": steps, "frames": frames, "preset": preset,
        "warmup_steps": settings.warmup_steps, "min_stride": settings.min_stride, "max_stride": settings.max_stride,
        "transition_1": settings.transition_1, "transition_2": settings.transition_2, "stride_schedule": stride_schedule,
        "warmup_passes": plan.warmup,  # drawn as warm-up: at least 1, whatever warmup_steps says
        "roles": plan.roles(), "groups": [[g.start, g.end] for g in plan.groups], "detect_step": plan.detect_step,
        "full_passes": plan.full_passes, "active_passes": plan.active_passes,
        "keyframes": known, "keyframes_pending": pending, "keyframes_source": source,
        "active_cost": cost, "active_cost_note": ACTIVE_COST_SOURCE.format(cost=cost, m=_fmt(round(queries, 2))),
        "refresh_budget": refresh_budget, "refresh": refresh, "refresh_source": "chosen" if chosen_refresh else "planned",
        "ideal_speedup": speedup, "warnings": warnings,
        "steps_source": steps_source, "frames_source": frames_source, "assumed": list(assumed),
        "preset_widgets": list(PRESET_WIDGETS), "preset_values": preset_values,
        "lines": lines, "colors": COLORS,
        "legend": [{"key": k, "color": c, "label": label} for k, c, label in LEGEND if refreshes or k not in PARTIAL_ONLY],
    }


def run_line(report: dict) -> str:
    """The after-run line of the caption, from `RunReport.to_json()`: what the run took and saved (or cost)."""
    saved, dense = report.get("seconds_saved", 0.0), report.get("estimated_dense_seconds", 0.0)
    if not dense:
        verdict = "no dense estimate (no full-pass step was timed)"
    elif saved >= 0:
        verdict = f"saved about {saved:.2f} s vs dense (est. {dense:.2f} s)"
    else:
        verdict = f"slower by {-saved:.2f} s than dense (est. {dense:.2f} s)"
    return (f"last run: {report.get('full_passes', 0)} full / {report.get('active_passes', 0)} active passes, "
            f"sampler {report.get('sampler_seconds', 0.0):.2f} s, {verdict}")


# ---- request parsing --------------------------------------------------------------------------------
# The frontend sends the sampler's widget values by their input names, and describes the nodes upstream
# as chains (nearest first) of {"class_type", "slot", "widgets"}: `sigmas` (or the KSampler itself),
# `latent` and `model`. Explicit `steps` / `frames` (latent frames) or `length` + `family` also work.
TOP_LEVEL = frozenset(("steps", "frames", "length", "family", "sigmas", "latent", "model", "preset", "keyframes",
                       "chosen_keyframes", "stride_schedule", "refresh_budget", *WIDGET_LIMITS))
KEYFRAME_FIELDS = frozenset(("strategy", "count", "similarity_threshold", "min_gap", "manual_frames"))


def _fail(message: str):
    raise RhymeFlowInputError(message)


def _int(value, name: str, low: int, high: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or int(value) != value:
        _fail(f"{name} must be a whole number from {low} to {high}, got {_show(value)}.")
    if not low <= value <= high:
        _fail(f"{name} must be from {low} to {high}, got {int(value)}.{hint}")
    return int(value)


def _float(value, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(f"{name} must be a finite number from {_fmt(low)} to {_fmt(high)}, got {_show(value)}.")
    if not low <= value <= high:
        _fail(f"{name} must be from {_fmt(low)} to {_fmt(high)}, got {_fmt(value)}.")
    return float(value)


def _choice(value, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        _fail(f"{name} must be one of {', '.join(options)}, got {_show(value)}.")
    return value


def _show(value) -> str:
    """A short description of a value for an error message (never deep: bodies can nest)."""
    if isinstance(value, dict):
        return f"an object with {len(value)} field(s)"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def keyframe_spec_from(data) -> KeyframeSpec:
    """A RhymeFlowKeyframes node's widget values as the KeyframeSpec it would produce (None: the default)."""
    if data is None:
        return KeyframeSpec()
    if not isinstance(data, dict):
        _fail(f"keyframes must be an object of the RhymeFlowKeyframes node's widget values, got {_show(data)}.")
    unknown = sorted(set(map(str, data)) - KEYFRAME_FIELDS)
    if unknown:
        _fail(f"keyframes has unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(KEYFRAME_FIELDS))}.")
    strategy = _choice(data.get("strategy", "semantic"), "keyframes.strategy", STRATEGIES)
    manual = data.get("manual_frames", "")
    if manual is None:
        manual = ""
    if not isinstance(manual, str) or len(manual) > MAX_MANUAL_CHARS:
        _fail(f"keyframes.manual_frames must be text of at most {MAX_MANUAL_CHARS} characters such as '0,7,20', "
              f"got {_show(manual)}.")
    return KeyframeSpec(
        strategy=strategy, count=_int(data.get("count", 2), "keyframes.count", *KEYFRAME_LIMITS["count"]),
        threshold=_float(data.get("similarity_threshold", 0.98), "keyframes.similarity_threshold",
                         *KEYFRAME_LIMITS["similarity_threshold"]),
        min_gap=_int(data.get("min_gap", 1), "keyframes.min_gap", *KEYFRAME_LIMITS["min_gap"]),
        manual=parse_manual_frames(manual) if strategy == "manual" else ())


def _chain(data: dict, name: str) -> list[dict] | None:
    """A chain of node descriptions, checked for shape: [{"class_type": str, "slot": int|None, "widgets": {...}}]."""
    chain = data.get(name)
    if chain is None:
        return None
    if not isinstance(chain, list) or len(chain) > MAX_CHAIN:
        _fail(f"{name} must be a list of at most {MAX_CHAIN} node descriptions (nearest first), got {_show(chain)}.")
    out = []
    for k, entry in enumerate(chain):
        where = f"{name}[{k}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("class_type"), str) or not entry["class_type"] \
                or len(entry["class_type"]) > MAX_NAME:
            _fail(f"{where} must be an object with a node class name in class_type, got {_show(entry)}.")
        if set(entry) - {"class_type", "slot", "widgets"}:
            _fail(f"{where} may hold only class_type, slot and widgets, got {', '.join(sorted(map(str, entry)))}.")
        slot = entry.get("slot")
        if slot is not None:
            _int(slot, f"{where}.slot", 0, 255)
        widgets = entry.get("widgets", {})
        if not isinstance(widgets, dict) or len(widgets) > MAX_WIDGETS:
            _fail(f"{where}.widgets must be an object of at most {MAX_WIDGETS} widget values, got {_show(widgets)}.")
        for key, value in widgets.items():
            ok = value is None or isinstance(value, (bool, int, str)) or (isinstance(value, float) and math.isfinite(value))
            if len(key) > MAX_NAME or not ok or (isinstance(value, str) and len(value) > MAX_TEXT):
                _fail(f"{where}.widgets.{key[:40]} must be a number, a boolean or a short text, got {_show(value)}.")
        out.append({"class_type": entry["class_type"], "slot": slot, "widgets": widgets})
    return out


def _sigma_count(chain: list[dict], k: int = 0) -> tuple[int | None, str]:
    """(how many sigmas chain[k]'s output holds, which node says so); None when the view cannot tell."""
    if k >= len(chain):
        return None, "no scheduler connected"
    node = chain[k]
    cls, w = node["class_type"], node["widgets"]
    where = f"{cls} in sigmas[{k}]"
    if cls in SCHEDULERS:
        steps = _int(w.get("steps"), f"the steps of {where}", 0, MAX_STEPS)
        rule = SCHEDULERS[cls]
        denoise = 1.0 if rule == "steps" else _float(w.get("denoise", 1.0), f"the denoise of {where}", 0.0, 1.0)
        if rule == "sdturbo":
            steps = min(steps, int(10 * denoise))
        elif denoise <= 0.0:
            steps = 0
        elif rule == "steps*denoise" and denoise < 1.0:
            steps = round(steps * denoise)
        return (steps + 1 if steps else 0), cls
    if cls in SIGMA_PASS_THROUGH or cls in ("SplitSigmas", "SplitSigmasDenoise"):
        n, source = _sigma_count(chain, k + 1)
        if n is None:
            return None, source
        if cls in SIGMA_PASS_THROUGH:
            return n, source
        half = node["slot"] or 0
        if cls == "SplitSigmas":
            step = _int(w.get("step"), f"the step of {where}", 0, MAX_STEPS)
            return (min(step + 1, n) if half == 0 else max(n - step, 0)), f"{source}, {'first' if half == 0 else 'second'} " \
                                                                          f"part of SplitSigmas at step {step}"
        total = round(max(n - 1, 0) * _float(w.get("denoise"), f"the denoise of {where}", 0.0, 1.0))
        return ((n - total if total else 0) if half == 0 else min(total + 1, n)), \
            f"{source}, {'high' if half == 0 else 'low'} part of SplitSigmasDenoise"
    return None, f"sigmas from {cls}, which the view cannot count"


def _model_family(chain: list[dict] | None) -> tuple[str | None, str]:
    """The model family at the top of a model chain (a loader's file name, or the demo model), if any."""
    if not chain:
        return None, ""
    top = chain[-1]
    if top["class_type"] == "RhymeFlowDemoModel":
        return "demo", "RhymeFlowDemoModel"
    for value in top["widgets"].values():
        if isinstance(value, str):
            name = value.lower()
            for hint, family in FAMILY_HINTS:
                if hint in name:
                    return family, f"{top['class_type']} {value!r}"
    return None, ""


def _latent_size(chain: list[dict], family: str | None, family_source: str) -> tuple[int | None, str]:
    for k, node in enumerate(chain):
        cls, w = node["class_type"], node["widgets"]
        if cls in LATENT_NODES:
            widget, temporal = LATENT_NODES[cls]
            length = _int(w.get(widget), f"the {widget} of {cls} in latent[{k}]", 1, 1 << 20)
            return latent_frames(length, temporal), f"{cls}: {length} pixel frames, {temporal}x in time + 1"
        if cls in LATENT_PASS_THROUGH:
            continue
        found = [name for name in LENGTH_WIDGETS if isinstance(w.get(name), int) and not isinstance(w.get(name), bool)]
        if found and family:
            length = _int(w[found[0]], f"the {found[0]} of {cls} in latent[{k}]", 1, 1 << 20)
            temporal = FAMILY_TEMPORAL[family]
            how = "1:1" if temporal == 1 else f"{temporal}x in time + 1"
            return latent_frames(length, temporal), f"{cls}: {length} frames, {FAMILY_NAMES[family]} {how} ({family_source})"
        return None, f"latent from {cls}, which the view cannot size"
    return None, "no video latent connected"


def _steps(data: dict) -> tuple[int, str, bool]:
    """(steps, where from, assumed?): given, or counted from the sigmas chain the browser sent."""
    sigmas = _chain(data, "sigmas")
    if "steps" in data and sigmas is not None:
        _fail("send steps or sigmas, not both.")
    if "steps" in data:
        return _int(data["steps"], "steps", 1, MAX_STEPS, " Lower the scheduler's steps."), "", False
    n, source = _sigma_count(sigmas or [])
    if n is None:
        return DEFAULT_STEPS, source + ("; connect a scheduler" if sigmas else "; connect a scheduler to the sampler's runner"), True
    if n < 2:
        _fail(f"{source} gives no sampling step; RhymeFlow needs at least 2. "
              "Raise the scheduler's steps (or denoise), or move the SplitSigmas step.")
    if n - 1 > MAX_STEPS:
        _fail(f"{source} gives {n - 1} steps; the view draws at most {MAX_STEPS}. Lower the scheduler's steps.")
    return n - 1, source, False


def _frames(data: dict) -> tuple[int, str, bool]:
    """(latent frames, where from, assumed?): given, from a pixel length and family, or from the latent node."""
    latent, model = _chain(data, "latent"), _chain(data, "model")
    given = [k for k in ("frames", "length", "latent") if data.get(k) is not None]
    if len(given) > 1:
        _fail(f"send one of frames (latent frames), length with family, or latent, not {' and '.join(given)}.")
    family = data.get("family")
    family_source = "family given"
    if family is not None:
        _choice(family, "family", tuple(FAMILY_TEMPORAL))
    else:
        family, family_source = _model_family(model)
    hint = " Shorten the video (the latent node's length)."
    if "frames" in given:
        return _int(data["frames"], "frames", 1, MAX_FRAMES, hint), "", False
    if "length" in given:
        if family is None:
            _fail(f"length (pixel frames) needs family, one of {', '.join(FAMILY_TEMPORAL)}, to give latent frames.")
        length = _int(data["length"], "length", 1, 1 << 20)
        frames, source = latent_frames(length, FAMILY_TEMPORAL[family]), f"{length} frames of {FAMILY_NAMES[family]}"
    else:
        frames, source = _latent_size(latent or [], family, family_source)
        if frames is None:
            return DEFAULT_FRAMES, source + "; connect a video latent", True
    if frames > MAX_FRAMES:
        _fail(f"{source} gives {frames} latent frames; the view draws at most {MAX_FRAMES}.{hint}")
    return frames, source, False


def _counts(data: dict) -> tuple[int, str, int, str, tuple[str, ...]]:
    """(steps, where from, latent frames, where from, which of them are assumed)."""
    steps, steps_source, steps_assumed = _steps(data)
    frames, frames_source, frames_assumed = _frames(data)
    assumed = tuple(name for name, yes in (("steps", steps_assumed), ("frames", frames_assumed)) if yes)
    return steps, steps_source, frames, frames_source, assumed


def view_from_request(data: dict) -> dict:
    if not isinstance(data, dict):
        _fail("the schedule request must be a JSON object of widget values, e.g. {\"steps\": 30, \"frames\": 21}.")
    unknown = sorted(set(map(str, data)) - TOP_LEVEL)
    if unknown:
        _fail(f"unknown field(s) {', '.join(_show(u) for u in unknown[:5])}; known: {', '.join(sorted(TOP_LEVEL))}.")
    values = {name: data.get(name, getattr(ScheduleSettings(), name)) for name in WIDGET_LIMITS}
    schedule = ScheduleSettings(
        warmup_steps=_int(values["warmup_steps"], "warmup_steps", *WIDGET_LIMITS["warmup_steps"]),
        min_stride=_int(values["min_stride"], "min_stride", *WIDGET_LIMITS["min_stride"]),
        max_stride=_int(values["max_stride"], "max_stride", *WIDGET_LIMITS["max_stride"]),
        transition_1=_float(values["transition_1"], "transition_1", *WIDGET_LIMITS["transition_1"]),
        transition_2=_float(values["transition_2"], "transition_2", *WIDGET_LIMITS["transition_2"]),
        progressive=_choice(data.get("stride_schedule", "progressive"), "stride_schedule", ("progressive", "fixed"))
        == "progressive")
    preset = _choice(data.get("preset", CUSTOM), "preset", PRESET_NAMES)
    refresh_budget = _float(data.get("refresh_budget", 0.0), "refresh_budget", 0.0, 1.0)
    spec = keyframe_spec_from(data.get("keyframes"))
    steps, steps_source, frames, frames_source, assumed = _counts(data)
    chosen = data.get("chosen_keyframes")
    if chosen is not None:
        rule = (f"chosen_keyframes must be a list of distinct latent frame indices from 0 to {frames - 1} "
                f"(the keyframes a run chose on this {frames}-frame latent)")
        if not isinstance(chosen, list) or not 1 <= len(chosen) <= frames:
            _fail(f"{rule}, got {_show(chosen)}.")
        bad = next((f for f in chosen if isinstance(f, bool) or not isinstance(f, int) or not 0 <= f < frames), None)
        if bad is not None:
            _fail(f"{rule}; {_show(bad)} is not one.")
        if len(set(chosen)) != len(chosen):
            _fail(f"{rule}; the list repeats a frame.")
    view = schedule_view(steps=steps, frames=frames, preset=preset, schedule=schedule, keyframes=spec,
                         chosen=chosen or None, steps_source=steps_source, frames_source=frames_source, assumed=assumed,
                         refresh_budget=refresh_budget)
    problem = _partial_pass_problem(_chain(data, "model") or []) if refresh_budget else None
    if problem:   # the sampler refuses it before the first step (sampling_loop.check_refresh)
        view["warnings"].append(refresh_refusal(problem))
    return view


def _partial_pass_problem(model: list[dict]) -> str | None:
    """What in the model chain the sampler's partial passes would refuse: another family, another context."""
    family, _ = _model_family(model)
    if family in ("hunyuan", "ltxv"):
        return f"the {FAMILY_NAMES[family]} model family"
    context = next((n["widgets"].get("context") for n in model if n["class_type"] == "RhymeFlowTrajectoryProjection"), None)
    return f"context={context}" if context not in (None, "kv_cache") else None

