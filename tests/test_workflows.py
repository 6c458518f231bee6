"""Workflows through ComfyUI's own PromptExecutor, with the pack loaded by ComfyUI's node loader."""
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch

from tools import headless
from tools.workflows import demo_prompt, two_expert_prompt, ui_to_api

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "example_workflows").glob("*.json"))


def latent_of(out_dir: Path, prefix: str) -> torch.Tensor:
    (path,) = sorted(out_dir.rglob(f"{prefix}_*.latent"))[-1:]
    return safetensors.torch.load_file(str(path))["latent_tensor"]


def test_pack_nodes_load_with_schema_conventions():
    import nodes
    headless.load_nodes()
    ours = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("RhymeFlow")}
    assert {"RhymeFlowKeyframes", "RhymeFlowTrajectoryProjection", "RhymeFlowSampler"} <= set(ours)
    for node_id, cls in ours.items():
        schema = cls.GET_SCHEMA()
        assert schema.category.startswith("sampling/rhymeflow")
        for inp in schema.inputs:
            assert inp.tooltip, f"{node_id}.{inp.id} has no tooltip"


@pytest.mark.slow
def test_api_workflow_all_keyframes_equals_dense(tmp_path):
    # 17 pixel frames -> 5 latent frames, all keyframes: RhymeFlow must reproduce the dense branch.
    result = headless.run_prompt(demo_prompt(frames=17, steps=12, warmup=3, keyframes=5), tmp_path)
    assert result.success, result.error
    dense, ours = latent_of(tmp_path, "dense"), latent_of(tmp_path, "rhymeflow")
    assert ours.shape == (1, 16, 5, 16, 16)
    # Active passes reorder float sums (keys gathered from the cache); through the trained demo model,
    # cfg 5 and 12 uni_pc steps that stays below 2e-4 (the random-weight sampler tests hold 1e-5).
    assert float((ours - dense).abs().max() / dense.abs().max()) <= 2e-4


@pytest.mark.slow
def test_api_workflow_release_setting_runs(tmp_path):
    result = headless.run_prompt(demo_prompt(frames=33, steps=16, warmup=4), tmp_path)
    assert result.success, result.error
    dense, ours = latent_of(tmp_path, "dense"), latent_of(tmp_path, "rhymeflow")
    assert not torch.equal(dense, ours)
    progress = [d for ev, d in result.messages if ev == "progress" and d["max"] == 16]
    assert [d["value"] for d in progress][-1] == 16, "the ProgressBar reached the last step"


@pytest.mark.slow
def test_two_expert_workflow_runs(tmp_path):
    result = headless.run_prompt(two_expert_prompt(), tmp_path)
    assert result.success, result.error
    assert torch.isfinite(latent_of(tmp_path, "two_expert")).all()


def test_bad_input_reaches_the_user_as_our_message(tmp_path):
    prompt = demo_prompt(steps=8, warmup=3, dense=False)
    prompt["5"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    result = headless.run_prompt(prompt, tmp_path)
    assert not result.success
    # SamplerCustomAdvanced turns the image latent into a one-frame Wan latent; we refuse that.
    assert "RhymeFlowInputError" in result.error and "RhymeFlow needs a video latent" in result.error


def test_malformed_manual_keyframes_fail_validation(tmp_path):
    prompt = demo_prompt(steps=8, warmup=3, dense=False)
    prompt["14"]["inputs"].update(strategy="manual", manual_frames="0, x, 12")
    result = headless.run_prompt(prompt, tmp_path)
    assert not result.success and "not a frame number" in result.error


MODEL_FILE_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
SHIPPED = {"rhymeflow_demo", "rhymeflow_compare_demo", "rhymeflow_wan22_two_experts_demo", "rhymeflow_wan21_t2v_1.3b",
           "rhymeflow_wan22_a14b_t2v"}
LAID_OUT = {"rhymeflow_demo": {"Dense", "RhymeFlow", "Compare"},  # group titles start with these
            "rhymeflow_compare_demo": {"Dense", "RhymeFlow", "Fewer steps", "Compare"}}
RUN_SMALLER = {"rhymeflow_compare_demo"}  # three samplers: run at a smaller size by test_compare_workflow_runs_headless


def _check_ui_graph(workflow: dict) -> None:
    """Every link joins existing nodes and slots of the same type, and both ends list it."""
    nodes_by_id = {n["id"]: n for n in workflow["nodes"]}
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        assert src in nodes_by_id and dst in nodes_by_id, f"link {link_id} joins a missing node"
        out = nodes_by_id[src]["outputs"][src_slot]
        inp = nodes_by_id[dst]["inputs"][dst_slot]
        assert link_id in out["links"] and inp["link"] == link_id, f"link {link_id} is not recorded on both nodes"
        assert out["type"] == inp["type"] == kind, f"link {link_id}: {out['type']} -> {inp['type']} ({kind})"


def _validation_problems(prompt: dict) -> list[str]:
    """The host's own prompt validation, less missing model files (CI has no Wan weights)."""
    import asyncio

    import execution
    valid, error, _, node_errors = asyncio.run(execution.validate_prompt("load-check", prompt, None))
    problems = [] if valid or node_errors else [str(error)]
    for nid, entry in node_errors.items():
        for e in entry["errors"]:
            value = e.get("extra_info", {}).get("received_value")
            missing_file = e["type"] == "value_not_in_list" and str(value).endswith(MODEL_FILE_SUFFIXES)
            if not missing_file:
                problems.append(f"node {nid} ({prompt[nid]['class_type']}): {e['message']}: {e['details']}")
    return problems


def _needs_model_files(prompt: dict) -> bool:
    return any(isinstance(v, str) and v.endswith(MODEL_FILE_SUFFIXES) for n in prompt.values() for v in n["inputs"].values())


def test_the_shipped_examples_are_there():
    assert SHIPPED <= {p.stem for p in EXAMPLES}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_workflow_loads_in_this_host(path):
    headless.load_nodes()
    workflow = json.loads(path.read_text())
    assert workflow["nodes"] and any(n["type"] in ("MarkdownNote", "Note") for n in workflow["nodes"]), "a note explains the settings"
    _check_ui_graph(workflow)
    prompt = ui_to_api(workflow)  # node types, input names and links against the host
    assert not _validation_problems(prompt), _validation_problems(prompt)


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_workflow_runs_where_it_needs_no_model_files(path, tmp_path):
    headless.load_nodes()
    prompt = ui_to_api(json.loads(path.read_text()))
    if _needs_model_files(prompt):
        pytest.skip("needs real model files (loading is checked by test_example_workflow_loads_in_this_host)")
    if path.stem in RUN_SMALLER:
        pytest.skip("run at a smaller size by its own test")
    for node in prompt.values():
        if node["class_type"] == "BasicScheduler":
            node["inputs"]["steps"] = min(node["inputs"]["steps"], 12)
        if node["class_type"] == "SplitSigmas":
            node["inputs"]["step"] = 6
        if node["class_type"] == "RhymeFlowSampler":
            node["inputs"]["warmup_steps"] = min(node["inputs"]["warmup_steps"], 3)
    result = headless.run_prompt(prompt, tmp_path)
    assert result.success, result.error


def test_demo_example_keeps_what_the_demo_tool_needs():
    # tools/demo.py overrides warmup_steps on the RhymeFlowSampler: only preset custom honours it.
    from tools.demo import samplers_by_branch
    headless.load_nodes()
    prompt = ui_to_api(json.loads((EXAMPLES[0].parent / "rhymeflow_demo.json").read_text()))
    assert set(samplers_by_branch(prompt)) == {"dense", "rhymeflow"}
    (sampler,) = [n for n in prompt.values() if n["class_type"] == "RhymeFlowSampler"]
    assert sampler["inputs"]["preset"] == "custom"


@pytest.mark.slow
def test_rhymeflow_ksampler_workflow_runs_on_the_demo_model(tmp_path):
    # The Wan 2.1 example's layout with the demo model in place of the Wan loaders.
    from tools.workflows import NEGATIVE, wan21_t2v_prompt
    prompt = wan21_t2v_prompt(steps=10, frames=17, width=64, height=64, preset="balanced")
    prompt["1"] = {"class_type": "RhymeFlowDemoModel", "inputs": {}}
    prompt["5"] = {"class_type": "RhymeFlowDemoPrompt", "inputs": {"text": "a red circle moves right"}}
    prompt["6"] = {"class_type": "RhymeFlowDemoPrompt", "inputs": {"text": NEGATIVE}}
    for nid in ("2", "3", "10", "11", "12"):
        del prompt[nid]
    prompt["20"] = {"class_type": "SaveLatent", "inputs": {"samples": ["9", 0], "filename_prefix": "ksampler"}}
    result = headless.run_prompt(prompt, tmp_path)
    assert result.success, result.error
    assert latent_of(tmp_path, "ksampler").shape == (1, 16, 5, 8, 8)


@pytest.mark.parametrize("name", sorted(LAID_OUT))
def test_laid_out_examples_put_every_node_in_a_titled_group(name):
    workflow = json.loads((EXAMPLES[0].parent / f"{name}.json").read_text())
    groups = workflow["groups"]
    assert {prefix for prefix in LAID_OUT[name] if any(g["title"].startswith(prefix) for g in groups)} == LAID_OUT[name]
    boxes = [g["bounding"] for g in groups]
    for node in workflow["nodes"]:
        if node["type"] in ("MarkdownNote", "Note"):
            continue
        (x, y), (w, h) = node["pos"], node["size"]
        inside = [b for b in boxes if b[0] <= x and x + w <= b[0] + b[2] and b[1] <= y - 30 and y + h <= b[1] + b[3]]
        assert len(inside) == 1, f"{name}: node {node['id']} ({node['type']}) is in {len(inside)} groups"
    placed = [n for n in workflow["nodes"]]
    for a in placed:  # no two nodes (title bars included) overlap
        for b in placed:
            if a["id"] < b["id"]:
                ax, ay, aw, ah = a["pos"][0], a["pos"][1] - 30, a["size"][0], a["size"][1] + 30
                bx, by, bw, bh = b["pos"][0], b["pos"][1] - 30, b["size"][0], b["size"][1] + 30
                assert ax + aw <= bx or bx + bw <= ax or ay + ah <= by or by + bh <= ay, f"{name}: {a['id']} overlaps {b['id']}"


def test_demo_example_compares_rhymeflow_with_dense():
    from tools.demo import samplers_by_branch
    headless.load_nodes()
    prompt = ui_to_api(json.loads((EXAMPLES[0].parent / "rhymeflow_demo.json").read_text()))
    samplers = samplers_by_branch(prompt)
    (compare,) = [n["inputs"] for n in prompt.values() if n["class_type"] == "RhymeFlowCompare"]
    decoded_from = {name: prompt[compare[name][0]]["inputs"]["samples"][0] for name in ("reference", "candidate")}
    assert decoded_from == {"reference": samplers["dense"], "candidate": samplers["rhymeflow"]}


def test_compare_workflow_runs_headless(tmp_path, monkeypatch):
    # The shipped example at a smaller size: 5 latent frames of 8x8, 8 steps (dense and RhymeFlow, preset balanced) and 5.
    headless.load_nodes()
    prompt = ui_to_api(json.loads((EXAMPLES[0].parent / "rhymeflow_compare_demo.json").read_text()))
    by_class: dict = {}
    for nid, node in prompt.items():
        by_class.setdefault(node["class_type"], []).append(nid)
    assert len(by_class["SamplerCustomAdvanced"]) == 3 and len(by_class["RhymeFlowCompare"]) == 2
    schedulers = sorted(by_class["BasicScheduler"], key=lambda n: -prompt[n]["inputs"]["steps"])
    (noise,) = by_class["RandomNoise"]  # one seed for all three
    assert all(prompt[n]["inputs"]["noise"] == [noise, 0] for n in by_class["SamplerCustomAdvanced"])
    (rf,) = by_class["RhymeFlowSampler"]
    assert prompt[rf]["inputs"]["preset"] == "balanced"
    prompt[by_class["EmptyHunyuanLatentVideo"][0]]["inputs"].update(length=17, width=64, height=64)
    prompt[schedulers[0]]["inputs"]["steps"], prompt[schedulers[1]]["inputs"]["steps"] = 8, 5
    from helpers import install_fake_server
    server = install_fake_server(monkeypatch)  # to see what the browser would be sent
    with headless.observe_reports() as reports:
        result = headless.run_prompt(prompt, tmp_path)
    assert result.success, result.error
    assert [r.steps for r in reports if r.completed] == [8]
    (compared,) = [data for event, data, _ in server.sent if event == "rhymeflow.compare"]  # the fewer-steps one has no view
    assert compared["samplers"] == [rf] and compared["line"].startswith("last comparison: PSNR ")
    texts = {prompt[n]["inputs"]["candidate_name"]: result.outputs[n]["text"][0] for n in by_class["RhymeFlowCompare"]}
    ours, fewer = texts["RhymeFlow"], texts["fewer steps"]
    assert ours.startswith("RhymeFlow vs dense: 5 frames of 64x64") and "PSNR " in ours and "SSIM " in ours
    assert f"run report of RhymeFlow node {rf})" in ours and "equal time: dense at" in ours  # this run's, not cached
    assert fewer.startswith("fewer steps vs dense: 5 frames") and "time: not measured" in fewer
    previews = sorted(tmp_path.rglob("dense_vs_*.webp"))
    assert [p.name.split("_0")[0] for p in previews] == ["dense_vs_fewer_steps", "dense_vs_rhymeflow"]
