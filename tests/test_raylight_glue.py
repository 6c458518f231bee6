"""RhymeFlow on Raylight's workers (rhymeflow_core/raylight_glue.py), with the stand-in of
tests/standins/raylight.py: the projection lands on every worker through Raylight's model-patch
route, refusals come before anything reaches a worker, and a RhymeFlow SAMPLER made by the pack as
ComfyUI loads it (a package named by its folder's path) samples in a worker process that never
loaded the pack, exactly like the same run in-process."""
from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys
from pathlib import Path

import comfy.sd
import pytest
import torch
from standins import raylight as standin

from conftest import COMFY_ROOT
from helpers import conds, sigmas_for
from rhymeflow_core import raylight_glue
from rhymeflow_core.errors import RhymeFlowInputError
from rhymeflow_core.keyframes import KeyframeSpec
from rhymeflow_core.patch import WRAPPER_KEY, apply_trajectory_projection
from rhymeflow_core.sampler_object import RhymeFlowSamplerObject
from rhymeflow_core.sampling_loop import SamplerSettings
from rhymeflow_core.schedule import ScheduleSettings
from tools import headless, tiny_models

STANDIN_SCRIPT = Path(standin.__file__).resolve()


def _settings(keyframes=None):
    return SamplerSettings(ScheduleSettings(3, 2, 3), keyframes or KeyframeSpec("uniform", 2), "euler")


def _rhymeflow_keys(model) -> set:
    return {t for t, by_key in model.wrappers.items() if WRAPPER_KEY in by_key}


def _workers(tiny_model, n=2, **parallel):
    return [standin.RayWorkerStandIn(tiny_model("wan").clone(), standin.parallel_settings(**parallel), rank) for rank in range(n)]


def _comfyui_copy(name: str):
    """The module `rhymeflow_core.<name>` of the pack as ComfyUI loads it (named by the pack folder's path)."""
    headless.load_nodes()
    # ComfyUI names a folder pack by its path (nodes.load_custom_node); pytest may also import the pack by its
    # folder's name when that is an identifier (a checkout named `main`), which is not the copy ComfyUI runs.
    copies = [m for n, m in sys.modules.items() if n.endswith(f".rhymeflow_core.{name}") and os.sep in n]
    assert len(copies) == 1, [n for n in sys.modules if n.endswith(name)]
    return copies[0]


# ---- the node's route -----------------------------------------------------------------------------

def test_projection_lands_on_every_worker(tiny_model):
    workers = _workers(tiny_model, ulysses=2)
    before = [w.model for w in workers]
    actors = standin.ray_actors(*workers)
    assert raylight_glue.project_on_workers(actors, "kv_cache", "cpu", get=standin.get) is actors
    for worker, original, handle in zip(workers, before, actors["workers"], strict=True):
        assert worker.model is not original and not _rhymeflow_keys(original)   # a clone, as the MODEL node does
        assert _rhymeflow_keys(worker.model) == {"outer_sample", "diffusion_model"}
        assert worker.model.model_options["transformer_options"]["rhymeflow"].cache_device == "cpu"
        assert handle.calls == ["model_function_runner"] or handle.calls == ["get_parallel_dict", "model_function_runner"]
    assert not _rhymeflow_keys(tiny_model("wan"))


def test_node_as_comfyui_loads_it(tiny_model, monkeypatch):
    """The registered node, from the pack loaded by ComfyUI; its function reaches the workers by a stable name."""
    import nodes

    glue = _comfyui_copy("raylight_glue")
    monkeypatch.setattr(glue, "ray_get", standin.get)
    workers = _workers(tiny_model, cfg=2)
    actors = standin.ray_actors(*workers)
    node = nodes.NODE_CLASS_MAPPINGS["RhymeFlowRaylightProjection"]
    assert node.execute(actors, "kv_cache", "auto").result[0] is actors
    assert all(_rhymeflow_keys(w.model) == {"outer_sample", "diffusion_model"} for w in workers)


@pytest.mark.parametrize(("parallel", "words"), [
    ({"fsdp": True}, "FSDP"), ({"ring": 2}, "ring_degree 2"), ({"pipefusion": True}, "PipeFusion")])
def test_refused_before_any_worker_is_touched(tiny_model, parallel, words):
    workers = _workers(tiny_model, **parallel)
    models = [w.model for w in workers]
    with pytest.raises(RhymeFlowInputError, match=words):
        raylight_glue.project_on_workers(standin.ray_actors(*workers), get=standin.get)
    assert [w.model for w in workers] == models


def test_bad_inputs_refused(tiny_model):
    with pytest.raises(RhymeFlowInputError, match="RAY_ACTORS"):
        raylight_glue.project_on_workers(tiny_model("wan"), get=standin.get)
    with pytest.raises(RhymeFlowInputError, match="context"):
        raylight_glue.project_on_workers(standin.ray_actors(*_workers(tiny_model)), "nonsense", get=standin.get)
    empty = standin.RayWorkerStandIn(None)
    with pytest.raises(RhymeFlowInputError, match="no model"):
        raylight_glue.project_on_workers(standin.ray_actors(empty), get=standin.get)
    sharded = tiny_model("wan").clone()
    sharded.__class__ = type("FSDPModelPatcher", (type(sharded),), {})   # Raylight's class, by name (a worker's own check)
    with pytest.raises(RhymeFlowInputError, match="FSDPModelPatcher"):
        raylight_glue.project_on_workers(standin.ray_actors(standin.RayWorkerStandIn(sharded)), get=standin.get)


# ---- the SAMPLER on its way to a worker -----------------------------------------------------------

def test_sampler_pickles_by_a_name_workers_can_import():
    sampler_object, sampling_loop = _comfyui_copy("sampler_object"), _comfyui_copy("sampling_loop")
    comfyui_package = sampler_object.__name__.rsplit(".", 1)[0]   # "<the pack folder's path>.rhymeflow_core"
    assert comfyui_package != "rhymeflow_core"
    kf = _comfyui_copy("keyframes").KeyframeSpec("manual", manual=(0, 2, -1))
    sampler = sampler_object.RhymeFlowSamplerObject(sampling_loop.SamplerSettings(keyframes=kf), "fast", source="7")
    data = pickle.dumps(sampler)
    assert comfyui_package.encode() not in data and b"rhymeflow_core.sampler_object" in data
    # Everything it carries is registered: a new dataclass in the settings must be added to portable_types().
    glue = _comfyui_copy("raylight_glue")
    assert glue.portable_types() >= {type(sampler), type(sampler.settings), type(sampler.settings.schedule), type(kf)}
    # In this process, copies stay this package's objects.
    for clone in (copy.copy(sampler), copy.deepcopy(sampler)):
        assert type(clone) is type(sampler) and clone.settings == sampler.settings
        assert (clone.preset, clone.extra_options["source"]) == ("fast", "7")
    # Unpickled here (the tests import the core as `rhymeflow_core`): the same settings, this copy's classes.
    loaded = pickle.loads(data)
    assert type(loaded) is RhymeFlowSamplerObject and loaded.preset == "fast" and loaded.extra_options["source"] == "7"
    assert loaded.settings == SamplerSettings(keyframes=KeyframeSpec("manual", manual=(0, 2, -1)))


def _run(workers_or_actor, sampler, sigmas, latent, cond, uncond):
    return workers_or_actor.custom_sampler(True, 11, 4.0, cond, uncond, sampler, sigmas, {"samples": latent})["samples"]


def test_unpickled_sampler_on_in_process_workers_matches(tiny_model):
    """Two workers, as XFuserSamplerCustom runs them: each gets its pickled copy of the one SAMPLER."""
    workers = _workers(tiny_model)
    actors = standin.ray_actors(*workers)
    raylight_glue.project_on_workers(actors, get=standin.get)
    sampler, (cond, uncond) = RhymeFlowSamplerObject(_settings()), conds()
    sigmas, latent = sigmas_for(workers[0].model, 8), torch.zeros(1, 16, 5, 8, 8)
    refs = [h.custom_sampler.remote(True, 11, 4.0, cond, uncond, sampler, sigmas, {"samples": latent}) for h in actors["workers"]]
    results = [r["samples"] for r in standin.get(refs)]
    direct = standin.RayWorkerStandIn(apply_trajectory_projection(tiny_model("wan")))
    expected = _run(direct, sampler, sigmas, latent, cond, uncond)
    for result in results:
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_worker_process_without_the_pack_samples_like_in_process(tmp_path):
    """A worker process that imports only ComfyUI: the pickled projection function and SAMPLER (made by the
    pack as ComfyUI loads it) bring in `rhymeflow_core` and nothing else of the pack; the result is the
    in-process run's (1e-5)."""
    state_dict = tiny_models.random_state_dict("wan", tiny_models.variant_of("wan"), 0)
    torch.save(state_dict, tmp_path / "model.pt")
    glue, sampler_object = _comfyui_copy("raylight_glue"), _comfyui_copy("sampler_object")
    settings = _comfyui_copy("sampling_loop").SamplerSettings(
        _comfyui_copy("schedule").ScheduleSettings(3, 2, 3), _comfyui_copy("keyframes").KeyframeSpec("uniform", 2), "euler")
    shipped = sampler_object.RhymeFlowSamplerObject(settings, "custom", source="4")
    model = comfy.sd.load_diffusion_model_state_dict(torch.load(tmp_path / "model.pt"))
    (cond, uncond), sigmas, latent = conds(), sigmas_for(model, 8), torch.zeros(1, 16, 5, 8, 8)
    calls = [("model_function_runner", (glue.ByName(glue.project_worker_model), "kv_cache", "auto"), {}),
             ("custom_sampler", (True, 11, 4.0, cond, uncond, shipped, sigmas, {"samples": latent}), {})]
    (tmp_path / "calls.pkl").write_bytes(pickle.dumps(calls))
    env = {**os.environ, "PYTHONPATH": str(COMFY_ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(STANDIN_SCRIPT), str(tmp_path / "calls.pkl"), str(tmp_path / "model.pt"),
                           str(tmp_path / "out.pt")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    out = torch.load(tmp_path / "out.pt")
    assert not out["importable_before"]
    assert out["modules"] and all(n == "rhymeflow_core" or n.startswith("rhymeflow_core.") for n in out["modules"])
    assert "rhymeflow" in out["wrapper_keys"]
    expected = _run(standin.RayWorkerStandIn(apply_trajectory_projection(model)), RhymeFlowSamplerObject(_settings()),
                    sigmas, latent, cond, uncond)
    torch.testing.assert_close(out["results"][1]["samples"], expected, rtol=0, atol=1e-5)
