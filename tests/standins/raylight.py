"""A stand-in for Raylight's Ray workers: the interface RhymeFlow's glue uses, nothing else.

Read, not copied: komikndr/raylight at commit c049571 (2026-06-12).

* `RAY_ACTORS` is `{"workers": [actor handles]}` (src/raylight/distributed_worker/ray_worker.py,
  `make_ray_actor_fn`, lines 1300-1346); a node calls `handle.method.remote(...)` and waits with
  `ray.get` (`ActorHandle.remote`, `get` here). Ray pickles every argument and the worker runs in
  another process: `remote` pickles and unpickles the call (stdlib pickle; Ray's cloudpickle honours
  the same `__reduce__` and copyreg registrations).
* `RayWorker.model_function_runner(fn, *args, **kwargs)`: `self.model = fn(self.model, *args, **kwargs)`
  (ray_worker.py, lines 581-582), the route of `ray_patch` (src/raylight/comfy_extra_dist/
  ray_patch_decorator.py, lines 7-20); `get_parallel_dict` (lines 538-539) returns the Ray Init node's
  settings (src/raylight/nodes.py, `RayInitializer.spawn_actor`, lines 504-548: `parallel_dict` here).
* `RayWorker.custom_sampler(add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image)`
  (ray_worker.py, lines 1024-1089): noise from `comfy.sample.prepare_noise` (Raylight's `Noise_RandomNoise`,
  distributed_worker/utils.py, lines 23-34), then `comfy.sample.sample_custom(self.model, ...)` under
  `torch.no_grad()`; called by `XFuserSamplerCustom.ray_sample` (comfy_extra_dist/nodes_custom_sampler.py,
  lines 506-538) on every worker with the same SAMPLER object.
* `FSDPModelPatcher` (src/raylight/comfy_dist/model_patcher.py, line 313): only its name, which the
  glue's worker-side check reads.

Left out: Ray itself, NCCL, xFuser's sequence-parallel attention, FSDP sharding, VRAM handling.

Run as a script (`python raylight.py CALLS STATE_DICT OUT`) it is one worker process that imports what
a Raylight worker imports, ComfyUI from PYTHONPATH and nothing of this pack: it loads a Wan model from
STATE_DICT, unpickles the calls in CALLS ([(method, args, kwargs)], pickled by the ComfyUI process) and
saves their results and the modules it ended up importing to OUT.
"""
from __future__ import annotations

import pickle
import sys


class RayWorkerStandIn:
    def __init__(self, model, parallel_dict: dict | None = None, local_rank: int = 0):
        self.model = model
        self.parallel_dict = parallel_dict if parallel_dict is not None else parallel_settings()
        self.local_rank = local_rank

    def get_parallel_dict(self):
        return self.parallel_dict

    def model_function_runner(self, fn, *args, **kwargs):
        self.model = fn(self.model, *args, **kwargs)

    def model_function_runner_get_values(self, fn, *args, **kwargs):
        return fn(self.model, *args, **kwargs)

    def custom_sampler(self, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        import comfy.sample
        import torch

        latent = dict(latent_image)
        samples = latent["samples"]
        if add_noise:
            noise = comfy.sample.prepare_noise(samples, noise_seed, latent.get("batch_index"))
        else:
            noise = torch.zeros(samples.size(), dtype=samples.dtype, layout=samples.layout, device="cpu")
        with torch.no_grad():
            latent["samples"] = comfy.sample.sample_custom(self.model, noise, cfg, sampler, sigmas, positive, negative,
                                                           samples, noise_mask=latent.get("noise_mask"), callback=None,
                                                           disable_pbar=True, seed=noise_seed)
        return latent


def parallel_settings(ulysses: int = 1, ring: int = 1, cfg: int = 1, fsdp: bool = False, pipefusion: bool = False) -> dict:
    """The keys of the Ray Init node's `parallel_dict` that describe the parallel layout."""
    xdit = ulysses > 1 or ring > 1 or cfg > 1
    return {"is_xdit": xdit, "is_fsdp": fsdp, "ulysses_degree": ulysses, "ring_degree": ring, "cfg_degree": cfg,
            "pp_degree": 1, "dp_degree": 1, "pipefusion_enabled": pipefusion, "global_world_size": ulysses * ring * cfg}


class _Ref:
    def __init__(self, value=None, error: BaseException | None = None):
        self.value, self.error = value, error


class _RemoteMethod:
    def __init__(self, worker, name: str):
        self.worker, self.name = worker, name

    def remote(self, *args, **kwargs) -> _Ref:
        args, kwargs = pickle.loads(pickle.dumps((args, kwargs)))   # what Ray's transport does to the arguments
        try:
            return _Ref(getattr(self.worker, self.name)(*args, **kwargs))
        except Exception as error:   # Ray raises it at ray.get
            return _Ref(error=error)


class ActorHandle:
    """`handle.method.remote(...)` runs the worker's method on pickled arguments; `calls` records the names."""

    def __init__(self, worker: RayWorkerStandIn):
        self._worker = worker
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> _RemoteMethod:
        if name.startswith("_"):
            raise AttributeError(name)
        self.calls.append(name)
        return _RemoteMethod(self._worker, name)


def ray_actors(*workers: RayWorkerStandIn) -> dict:
    return {"workers": [ActorHandle(w) for w in workers]}


def get(refs):
    """`ray.get`: a value or a list of values; a worker's exception is raised here."""
    if isinstance(refs, list):
        return [get(r) for r in refs]
    if refs.error is not None:
        raise refs.error
    return refs.value


def _worker_process(calls_path: str, state_dict_path: str, out_path: str) -> None:
    import importlib.util

    import comfy.cli_args
    comfy.cli_args.args.cpu = True
    comfy.cli_args.args.disable_smart_memory = True
    import comfy.sd
    import torch

    importable_before = importlib.util.find_spec("rhymeflow_core") is not None
    worker = RayWorkerStandIn(comfy.sd.load_diffusion_model_state_dict(torch.load(state_dict_path)))
    with open(calls_path, "rb") as f:
        calls = pickle.load(f)
    results = [getattr(worker, name)(*args, **kwargs) for name, args, kwargs in calls]
    modules = sorted(n for n in sys.modules if "rhymeflow" in n.lower())
    torch.save({"results": results, "modules": modules, "importable_before": importable_before,
                "wrapper_keys": sorted({k for w in worker.model.wrappers.values() for k in w})}, out_path)


if __name__ == "__main__":
    _worker_process(*sys.argv[1:4])
