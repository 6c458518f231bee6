"""Install RhymeFlow on a clone of a ComfyUI MODEL with keyed wrappers (no global patching).

OUTER_SAMPLE     creates the per-run state (fresh for every sampling run, freed afterwards),
                 refuses bad input before the model is loaded when our sampler is used, and
                 delivers the run report when the run ends (report.py);
DIFFUSION_MODEL  counts the call and runs the pass the sampler planned: the stock forward, or
                 the adapter's recording / active forward (a repeated call of the same step is
                 answered from the first: pass_outputs.py).
Step caches on the same MODEL (EasyCache, LazyCache, TeaCache, MagCache) act in the warm-up only: step_caches.py.
With any other sampler the patched MODEL samples exactly like the original.
"""
from __future__ import annotations

from dataclasses import replace

import comfy.model_patcher

from . import compat, context_windows, report, step_caches
from .adapters import adapter_for
from .run_state import ACTIVE, FULL, KEY, ProjectionConfig, RhymeFlowRun
from .sampler_object import early_check

WRAPPER_KEY = step_caches.WRAPPER_KEY


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
    early_check(args, kwargs, guider.model_patcher.model.diffusion_model)
    guider.model_options = comfy.model_patcher.create_model_options_clone(original_options)
    run = RhymeFlowRun(config, adapter_for(guider.model_patcher))
    step_caches.install(run, guider.model_options, guider.model_patcher)  # EasyCache, LazyCache, ...: warm-up only
    guider.model_options["transformer_options"][KEY] = run
    try:
        return executor(*args, **kwargs)
    finally:
        guider.model_options = original_options
        if run.step_caches is not None and run.report.steps:
            run.step_caches.summarise(run.report)
        report.deliver(run.close())


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
        # Filled from the rhythmic point like other active outputs, for guidance functions' whole-latent statistics.
        return run.outputs.keep(run, x, to, context_windows.unused_output(diffusion_model, x), window)
    # Every call is counted here, whatever it computes: rows are the video-token queries it sends through the blocks.
    # A partial pass's refresh frames are queries too (docs/algorithm.md §11; never with context windows).
    queries = frames if kind != ACTIVE else len(window.local(run.plan.keyframes) if window else run.plan.keyframes) + \
        len(run.plan.refresh)
    rows = queries * per_frame * x.shape[0]
    if kind == FULL:
        run.report.count_call(kind, rows)
        if run.step_caches is not None:  # step caches act in the warm-up only (step_caches.py)
            return run.step_caches.full_pass(run, executor, to, args, kwargs)
        return executor(*args, **kwargs)
    return _adapter_pass(run, diffusion_model, to, args, kwargs, rows, window)


def _adapter_pass(run: RhymeFlowRun, diffusion_model, to: dict, args, kwargs, rows: int, window):
    """A recording or active pass, unless this step already answered the same call (pass_outputs.py)."""
    x = args[0] if args else kwargs["x"]
    repeat = run.outputs.repeat_of(run, x, to, window)
    if repeat is not None:  # e.g. skip-layer guidance's extra cond pass, whose block patches these passes cannot honour
        run.report.warn("repeated_pass", "a second pass with the same cond and input in one step (skip-layer guidance "
                                         "after the warm-up) was answered from the first, without running the model.")
        return repeat
    run.report.count_call(run.plan.kind, rows)
    return run.outputs.keep(run, x, to, run.adapter.forward(diffusion_model, run, to, args, kwargs), window)


def pass_kind(transformer_options: dict) -> str | None:
    """What the model call with these transformer_options computes under RhymeFlow ("full", "record",
    "active"), or None outside a RhymeFlow run: for tools that time passes by kind."""
    run = transformer_options.get(KEY)
    if not isinstance(run, RhymeFlowRun):
        return None
    return FULL if run.plan is None else run.plan.kind
