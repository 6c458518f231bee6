"""Step caches under RhymeFlow: they act in the warm-up only (docs/compatibility.md, "Step caches").

A step cache (core EasyCache / LazyCache, TeaCache, MagCache) reuses an earlier step's output
instead of running the model. After the warm-up RhymeFlow itself decides what runs: a skipped
rhythmic point would leave the active passes without a context cache (or with the last group's)
and make the non-keyframes jump on a stale or partly empty prediction, and a skipped active pass
would mix two step-skipping schemes. So for every pass after the warm-up the caches are switched
off, each through the hook it installs:

  EasyCache  DIFFUSION_MODEL wrapper "easycache": ours is made the outer one (it never sees our
             recording / active passes) and calls past it in the other full passes;
  LazyCache  PREDICT_NOISE wrapper "lazycache" (a whole step, outside the model): a per-run gate
             outside it calls past it after the warm-up;
  TeaCache, MagCache  a patched `forward_orig` (never reached by our recording / active passes),
             switched off per call by their own flags `enable_teacache` / `enable_magcache`.

At the end of a run each cache found is named once in the log and the run report: how many
warm-up steps it skipped, or that it was inert.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import comfy.patcher_extension

from . import compat

WRAPPER_KEY = "rhymeflow"
EASYCACHE, LAZYCACHE = "easycache", "lazycache"          # the core nodes' wrapper keys (comfy_extras/nodes_easycache.py)
# Per-call switches read by TeaCache's and MagCache's patched forward_orig (welltop-cn/ComfyUI-TeaCache
# nodes.py, teacache_wanmodel_forward: `enable_teacache`; Zehong-Ma/ComfyUI-MagCache nodes.py: `enable_magcache`),
# found by the settings each node puts in transformer_options.
FLAG_CACHES = {"TeaCache": ("enable_teacache", "rel_l1_thresh"), "MagCache": ("enable_magcache", "magcache_thresh")}


@dataclass
class StepCaches:
    """The step caches on one run's MODEL, the gate that confines them to the warm-up, and what they did there."""
    bypass: dict[str, tuple] = field(default_factory=dict)   # wrapper type -> the cache wrappers to call past
    flags: dict[str, str] = field(default_factory=dict)       # cache name -> its enable flag
    skipped: dict[str, int] = field(default_factory=dict)     # cache name -> warm-up steps it skipped (counted ones)
    enabled: set[str] = field(default_factory=set)            # flag caches switched on in some warm-up pass

    @property
    def names(self) -> list[str]:
        wrapped = [n for n, w in (("EasyCache", compat.WrappersMP.DIFFUSION_MODEL),
                                  ("LazyCache", compat.WrappersMP.PREDICT_NOISE)) if w in self.bypass]
        return wrapped + list(self.flags)

    # ---- passes ----------------------------------------------------------------------------------
    def full_pass(self, run, executor, to: dict, args, kwargs):
        """A stock full pass (DIFFUSION_MODEL): step caches act in the warm-up, are switched off after it."""
        if run.in_warmup:
            self.enabled.update(name for name, flag in self.flags.items() if to.get(flag, name == "TeaCache"))
            return _counting_skips(self, "EasyCache", to, executor, args, kwargs)
        for flag in self.flags.values():
            to[flag] = False   # this call's own options (a per-call copy made by calc_cond_batch)
        return call_past(executor, self.bypass.get(compat.WrappersMP.DIFFUSION_MODEL, ()), args, kwargs)

    def predict_noise_gate(self, run):
        """The per-run PREDICT_NOISE wrapper outside LazyCache."""
        def gate(executor, *args, **kwargs):
            if run.in_warmup:
                return _counting_skips(self, "LazyCache", args[2].get("transformer_options", {}), executor, args, kwargs)
            return call_past(executor, self.bypass[compat.WrappersMP.PREDICT_NOISE], args, kwargs)
        return gate

    # ---- the run report --------------------------------------------------------------------------
    def summarise(self, report) -> None:
        warmup = report.warmup_steps
        for name in self.names:
            report.warn(f"step_cache_{name.lower()}", _summary(name, warmup, self.skipped.get(name),
                                                              name not in self.flags or name in self.enabled))


def _counting_skips(caches: StepCaches, name: str, to: dict, executor, args, kwargs):
    """Run the pass; count it when the core cache's holder (transformer_options["easycache"]) says it skipped."""
    holder = to.get("easycache")
    before = getattr(holder, "total_steps_skipped", 0)
    out = executor(*args, **kwargs)
    if holder is not None and name in caches.names:
        caches.skipped[name] = caches.skipped.get(name, 0) + (getattr(holder, "total_steps_skipped", 0) > before)
    return out


def _summary(name: str, warmup: int, skipped: int | None, enabled: bool) -> str:
    where = f"the warm-up (steps 0-{warmup - 1})" if warmup > 1 else "the warm-up (step 0)"
    why = ("after it RhymeFlow's groups do the skipping, and a skipped rhythmic point would leave the "
           "active passes without their context")
    if skipped or (skipped is None and enabled):
        done = f"skipped {skipped} step(s) there" if skipped else "was switched on there"
        return f"{name} acts only in {where} under RhymeFlow ({done}); {why}."
    return (f"{name} is inert under RhymeFlow: it may act only in {where} and skipped nothing there ({why}). "
            f"Remove it, or start it earlier and lengthen the warm-up if it should act in the warm-up.")


def call_past(executor, skip: tuple, args, kwargs):
    """Continue a wrapper chain without the wrappers in `skip`. Uses WrapperExecutor's attributes
    (original, class_obj, wrappers, idx: comfy/patcher_extension.py, the same in 0.3.75 and v0.33+)."""
    rest = [w for w in executor.wrappers[executor.idx + 1:] if not any(w is s for s in skip)]
    return comfy.patcher_extension.WrapperExecutor.new_class_executor(
        executor.original, executor.class_obj, rest).execute(*args, **kwargs)


def find(model_patcher, model_options: dict) -> StepCaches | None:
    """The step caches on this MODEL, or None."""
    wrappers = getattr(model_patcher, "wrappers", {})
    to = model_options.get("transformer_options", {})
    caches = StepCaches()
    for wrapper_type, key in ((compat.WrappersMP.DIFFUSION_MODEL, EASYCACHE), (compat.WrappersMP.PREDICT_NOISE, LAZYCACHE)):
        if wrappers.get(wrapper_type, {}).get(key):
            caches.bypass[wrapper_type] = tuple(wrappers[wrapper_type][key])
    caches.flags = {name: flag for name, (flag, setting) in FLAG_CACHES.items() if setting in to}
    return caches if caches.bypass or caches.flags else None


def install(run, model_options: dict, model_patcher) -> None:
    """For this run only (its options clone): ours outside the step caches' wrappers, the LazyCache gate.

    Wrappers run in the order they were added, the first outermost. ComfyUI merges the patcher's
    wrappers into these options when sampling starts (sampler_helpers.prepare_model_patcher), after
    the keys already present; so a key listed first here ends up outermost, whatever order the user
    applied the nodes in. The user's MODEL keeps its own order.
    """
    caches = find(model_patcher, model_options)
    run.step_caches = caches
    if caches is None:
        return
    wrappers = model_options["transformer_options"].setdefault("wrappers", {})
    if compat.WrappersMP.DIFFUSION_MODEL in caches.bypass:
        present = wrappers.get(compat.WrappersMP.DIFFUSION_MODEL, {})
        wrappers[compat.WrappersMP.DIFFUSION_MODEL] = {WRAPPER_KEY: present.get(WRAPPER_KEY, []),
                                                       **{k: v for k, v in present.items() if k != WRAPPER_KEY}}
    if compat.WrappersMP.PREDICT_NOISE in caches.bypass:
        present = wrappers.get(compat.WrappersMP.PREDICT_NOISE, {})
        wrappers[compat.WrappersMP.PREDICT_NOISE] = {WRAPPER_KEY: [caches.predict_noise_gate(run)], **present}
