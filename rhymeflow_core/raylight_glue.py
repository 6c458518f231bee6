"""RhymeFlow on Raylight's Ray workers (docs/multi_gpu.md §3): the projection applied on every worker,
and the RhymeFlow SAMPLER made loadable in a worker process.

Written against komikndr/raylight at commit c049571 (2026-06-12); read, not copied. What it relies on:

* `RAY_ACTORS` is a dict whose "workers" are the Ray actor handles of `RayWorker`
  (src/raylight/distributed_worker/ray_worker.py, `make_ray_actor_fn`, lines 1300-1346).
* Raylight's own model-patch route (src/raylight/comfy_extra_dist/ray_patch_decorator.py, lines 7-20):
  `actor.model_function_runner.remote(fn, *args)` on every worker; the worker runs
  `self.model = fn(self.model, *args)` (ray_worker.py, lines 581-582). `fn` and its arguments travel
  pickled (Ray's cloudpickle).
* `actor.get_parallel_dict.remote()` (ray_worker.py, lines 538-539) answers the settings of the
  Ray Init node (src/raylight/nodes.py, `RayInitializer.spawn_actor`, lines 504-548): `is_fsdp`,
  `is_xdit`, `ulysses_degree`, `ring_degree`, `cfg_degree`, `pipefusion_enabled`.
* Raylight's custom-sampler nodes (src/raylight/comfy_extra_dist/nodes_custom_sampler.py,
  `XFuserSamplerCustom.ray_sample`, lines 506-538, and the Advanced / Unified / DP variants) send the
  SAMPLER object as an argument of `actor.custom_sampler.remote(...)`; the worker samples with
  `comfy.sample.sample_custom(self.model, ...)` (ray_worker.py, lines 1024-1089).
* Workers import Raylight as a top-level `raylight` package and ComfyUI from its root
  (runtime_env `py_modules` / `PYTHONPATH`, nodes.py lines 114-131); they never load custom nodes.

The import problem and its fix. ComfyUI loads this pack as a package named by its folder's path
(nodes.py `load_custom_node`: `sys.modules["/…/custom_nodes/ComfyUI-RhymeFlow"]`), so a pickle of a
RhymeFlow object would name a module no worker can import. `ByName` pickles a class or function of the
core as "add the pack's folder to sys.path (`site.addsitedir`), import `rhymeflow_core.<module>`, take
<name>": only standard-library calls, so the worker needs nothing of ours installed or imported before.
The RhymeFlow SAMPLER and its settings are registered with `copyreg` to pickle that way (our classes
only; a copy or deepcopy in this process rebuilds them from their settings, the same objects).
"""
from __future__ import annotations

import copyreg
import dataclasses
import importlib
import logging
import site
from pathlib import Path

from .errors import RhymeFlowInputError
from .patch import apply_trajectory_projection
from .run_state import ProjectionConfig
from .sampler_object import RhymeFlowSamplerObject
from .sampling_loop import SamplerSettings

PACK_DIR = Path(__file__).resolve().parents[1]
STABLE_CORE = "rhymeflow_core"   # the core's name in a worker: a top-level package in PACK_DIR
# Raylight's model patchers whose weights are not all on the worker (comfy_dist/model_patcher.py, lines 313 and 640).
SHARDED_PATCHERS = ("FSDPModelPatcher", "PipefusionModelPatcher")

log = logging.getLogger(__name__)


# ---- pickling by a name a worker can import ------------------------------------------------------

def stable_module(module_name: str) -> str:
    """`<anything>.rhymeflow_core.x` (however ComfyUI named this package) -> `rhymeflow_core.x`."""
    core = __package__ or STABLE_CORE
    if module_name != core and not module_name.startswith(core + "."):
        raise ValueError(f"{module_name} is not a module of the RhymeFlow core ({core})")
    return STABLE_CORE + module_name[len(core):]


class _PackOnPath:
    """Unpickles to None after putting the pack's folder on sys.path (appended: it shadows nothing)."""

    def __reduce__(self):
        return site.addsitedir, (str(PACK_DIR),)


class _CoreModule:
    """Unpickles to the core module `name`, imported after `_PackOnPath` ran."""

    def __init__(self, name: str):
        self.name = name

    def __reduce__(self):
        # import_module(name, package): `package` is ignored for an absolute name; passing the
        # path step there makes the unpickler run it before the import.
        return importlib.import_module, (self.name, _PackOnPath())


class ByName:
    """A top-level class or function of the core that pickles by its stable name (module docstring).
    Unpickled, it is the object itself; in this process, calling it calls the object."""

    def __init__(self, obj):
        if "." in obj.__qualname__:
            raise ValueError(f"{obj.__qualname__} is not a top-level name")
        stable_module(obj.__module__)
        self.obj = obj

    def __call__(self, *args, **kwargs):
        return self.obj(*args, **kwargs)

    def __reduce__(self):
        return getattr, (_CoreModule(stable_module(self.obj.__module__)), self.obj.__qualname__)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def _reduce_dataclass(obj):
    cls = type(obj)
    return ByName(cls), tuple(getattr(obj, f.name) for f in dataclasses.fields(cls) if f.init)


def _reduce_sampler(sampler: RhymeFlowSamplerObject):
    args = (sampler.settings, sampler.preset, sampler.extra_options.get("source"))
    return ByName(type(sampler)), args, {"inpaint_options": sampler.inpaint_options}


def _dataclass_types(value) -> set[type]:
    """The dataclass types in `value` and its fields (tuples included)."""
    if isinstance(value, tuple | list):
        return set().union(*(_dataclass_types(v) for v in value))
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        return set()
    return {type(value)}.union(*(_dataclass_types(getattr(value, f.name)) for f in dataclasses.fields(value)))


def portable_types() -> set[type]:
    """What a RhymeFlow SAMPLER carries to a worker: the sampler and its settings' dataclasses."""
    return {RhymeFlowSamplerObject} | _dataclass_types(SamplerSettings())


def _register_portable_pickling() -> None:
    copyreg.pickle(RhymeFlowSamplerObject, _reduce_sampler)
    for cls in portable_types() - {RhymeFlowSamplerObject}:
        copyreg.pickle(cls, _reduce_dataclass)


_register_portable_pickling()


# ---- on the workers ------------------------------------------------------------------------------

def project_worker_model(model, context: str, cache_device: str):
    """Runs in each Raylight worker (`model_function_runner`); the worker keeps what it returns as its model."""
    if model is None:
        raise RhymeFlowInputError("this Raylight worker has no model loaded; connect the output of "
                                  "Load Diffusion Model (Ray) to RhymeFlow Patch Raylight Model.")
    if type(model).__name__ in SHARDED_PATCHERS:
        raise RhymeFlowInputError(f"this Raylight worker's model is a {type(model).__name__}: its weights are split over "
                                  "the GPUs, and RhymeFlow's passes call the layers directly. Turn FSDP / PipeFusion off.")
    return apply_trajectory_projection(model, context, cache_device)


# ---- on the ComfyUI side -------------------------------------------------------------------------

def ray_get(refs):
    """Ray's `ray.get` (Raylight's own nodes wait on their workers the same way)."""
    try:
        ray = importlib.import_module("ray")
    except ImportError as error:
        raise RhymeFlowInputError("RAY_ACTORS come from Raylight, which needs Ray; Ray is not installed here.") from error
    return ray.get(refs)


def workers_of(ray_actors) -> list:
    workers = ray_actors.get("workers") if isinstance(ray_actors, dict) else None
    if not workers:
        raise RhymeFlowInputError(f"expected Raylight's RAY_ACTORS (a dict of Ray workers), got {type(ray_actors).__name__}. "
                                  "Connect the output of Load Diffusion Model (Ray).")
    return list(workers)


def refuse_parallel_settings(parallel: dict) -> None:
    """What RhymeFlow cannot run on, from the Ray Init node's settings; before anything reaches a worker."""
    if parallel.get("is_fsdp"):
        raise RhymeFlowInputError(
            "Raylight's FSDP is on: each GPU holds a shard of the weights, and RhymeFlow's recording and active passes "
            "call the blocks' layers directly, which skips FSDP's unshard hooks. Turn FSDP off in Ray Init Actor "
            "(each GPU then holds the whole model), or sample without RhymeFlow.")
    if parallel.get("pipefusion_enabled") or int(parallel.get("pp_degree") or 1) > 1:
        raise RhymeFlowInputError("Raylight's PipeFusion splits the blocks over the GPUs; RhymeFlow's passes need all "
                                  "blocks on each GPU. Turn PipeFusion off (Ray Init Actor without the PipeFusion config).")
    if int(parallel.get("ring_degree") or 1) > 1:
        raise RhymeFlowInputError(
            f"ring_degree {parallel['ring_degree']}: RhymeFlow does not support Raylight's ring attention. Set ring_degree "
            "to 1 in Ray Init Actor (use ulysses_degree and cfg_degree for the GPUs).")


def project_on_workers(ray_actors, context: str = "kv_cache", cache_device: str = "auto", get=None):
    """Apply RhymeFlowTrajectoryProjection to the model of every Raylight worker, through Raylight's
    model-patch route. Returns the same RAY_ACTORS (Raylight's patch nodes do the same: the state is on the workers)."""
    ProjectionConfig(context, cache_device)   # bad settings are refused here, not on every worker
    workers = workers_of(ray_actors)
    get = get or ray_get
    parallel = get(workers[0].get_parallel_dict.remote()) or {}
    refuse_parallel_settings(parallel)
    if parallel.get("is_xdit") and int(parallel.get("ulysses_degree") or 1) > 1:
        log.warning("RhymeFlow on Raylight with ulysses_degree %s: RhymeFlow's recording and active passes take its own "
                    "sequence-parallel path on xDiT's Ulysses group, which has not yet been run inside Raylight "
                    "(docs/multi_gpu.md §4).",
                    parallel["ulysses_degree"])
    get([worker.model_function_runner.remote(ByName(project_worker_model), context, cache_device) for worker in workers])
    return ray_actors
