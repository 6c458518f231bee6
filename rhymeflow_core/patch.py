"""Install RhymeFlow on a clone of a ComfyUI MODEL with keyed wrappers (no global patching).

OUTER_SAMPLE     creates the per-run state (fresh for every sampling run, freed afterwards),
                 refuses bad input before the model is loaded when our sampler is used, and
                 delivers the run report when the run ends (report.py);
DIFFUSION_MODEL  counts the call and runs the pass the sampler planned: the stock forward, or
                 the adapter's recording / active forward.
With any other sampler the patched MODEL samples exactly like the original.
"""
from __future__ import annotations

from dataclasses import replace

import comfy.model_patcher

from . import compat, context_windows, report
from .adapters import adapter_for
from .run_state import ACTIVE, FULL, KEY, ProjectionConfig, RhymeFlowRun
from .sampler_object import early_check

WRAPPER_KEY = "rhymeflow"
# Core wrappers that may return a cached output instead of calling the model. Wrapped outside ours
# they could skip a recording pass (stale or missing context cache), so ours goes outside them.
STEP_CACHES = ("easycache", "lazycache")


def apply_trajectory_projection(model, context: str = "kv_cache", cache_device: str = "auto"):
    config = ProjectionConfig(context, cache_device)   # refuses unknown settings
    adapter = adapter_for(model)  # refuses unsupported models now, not at sampling time
    patched = model.clone()
    patched.model_options.setdefault("transformer_options", {})[KEY] = replace(config, adapter=adapter.name)
    patched.remove_wrappers_with_key(compat.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY)
    patched.remove_wrappers_with_key(compat.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY)
    patched.add_wrapper_with_key(compat.WrappersMP.OUTER_SAMPLE, WRAPPER_KEY, outer_sample_wrapper)
    patched.add_wrapper_with_key(compat.WrappersMP.DIFFUSION_MODEL, WRAPPER_KEY, diffusion_model_wrapper)
    return patched


def outer_sample_wrapper(executor, *args, **kwargs):
    guider = executor.class_obj
    original_options = guider.model_options
    config = original_options.get("transformer_options", {}).get(KEY)
    if not isinstance(config, ProjectionConfig):  # our settings were replaced downstream: behave like the stock model
        return executor(*args, **kwargs)
    early_check(args, kwargs)
    guider.model_options = comfy.model_patcher.create_model_options_clone(original_options)
    _wrap_outside_step_caches(guider.model_options, guider.model_patcher)
    run = RhymeFlowRun(config, adapter_for(guider.model_patcher))
    guider.model_options["transformer_options"][KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = original_options
        report.deliver(run.close())


def _wrap_outside_step_caches(model_options: dict, model_patcher) -> None:
    """Put our DIFFUSION_MODEL wrapper outside EasyCache / LazyCache, in this run's options only.

    Wrappers run in the order they were added, the first outermost. If EasyCache was applied before
    RhymeFlow Trajectory Projection it would sit outside and see (and maybe skip) our recording
    passes. ComfyUI merges the patcher's wrappers into these options when sampling starts, after
    keys already present, so listing our key first here makes ours the outer one; EasyCache then
    sees the full passes only, exactly as when it is applied after the projection.
    """
    keys = list(getattr(model_patcher, "wrappers", {}).get(compat.WrappersMP.DIFFUSION_MODEL, {}))
    if WRAPPER_KEY not in keys or not any(key in STEP_CACHES for key in keys[: keys.index(WRAPPER_KEY)]):
        return
    wrappers = model_options["transformer_options"].setdefault("wrappers", {})
    present = wrappers.get(compat.WrappersMP.DIFFUSION_MODEL, {})
    wrappers[compat.WrappersMP.DIFFUSION_MODEL] = {WRAPPER_KEY: present.get(WRAPPER_KEY, []),
                                                   **{k: v for k, v in present.items() if k != WRAPPER_KEY}}


def diffusion_model_wrapper(executor, *args, **kwargs):
    to = compat.transformer_options_of(args, kwargs)
    run = to.get(KEY)
    if not isinstance(run, RhymeFlowRun):
        return executor(*args, **kwargs)
    diffusion_model = executor.class_obj
    frames, per_frame = run.adapter.token_grid(diffusion_model, args, kwargs)
    window = context_windows.view_of(to, frames) if run.plan is not None else None   # a context window of our sampler
    if not run.inputs_seen or window:  # with context windows, every window's conditioned frames (whole-video indices)
        run.inputs_seen = True
        run.conditioned_frames |= context_windows.to_video(window, run.adapter.conditioned_frames(diffusion_model, args, kwargs))
    kind = FULL if run.plan is None else run.plan.kind
    x = args[0] if args else kwargs["x"]
    if kind == ACTIVE and window and not window.holds_keyframe(run.plan.keyframes):  # nothing of it is read (docs/algorithm.md §9)
        run.report.count_call(context_windows.SKIPPED)
        return context_windows.unused_output(diffusion_model, x)
    # Every call is counted here, whatever it computes: rows are the video-token queries it sends through the blocks.
    queries = frames if kind != ACTIVE else len(window.local(run.plan.keyframes) if window else run.plan.keyframes)
    run.report.count_call(kind, queries * per_frame * x.shape[0])
    if kind == FULL:
        return executor(*args, **kwargs)
    return run.adapter.forward(diffusion_model, run, to, args, kwargs)


def pass_kind(transformer_options: dict) -> str | None:
    """What the model call with these transformer_options computes under RhymeFlow ("full", "record",
    "active"), or None outside a RhymeFlow run: for tools that time passes by kind."""
    run = transformer_options.get(KEY)
    if not isinstance(run, RhymeFlowRun):
        return None
    return FULL if run.plan is None else run.plan.kind
