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


def test_api_workflow_all_keyframes_equals_dense(tmp_path):
    # 17 pixel frames -> 5 latent frames, all keyframes: RhymeFlow must reproduce the dense branch.
    result = headless.run_prompt(demo_prompt(frames=17, steps=12, warmup=3, keyframes=5), tmp_path)
    assert result.success, result.error
    dense, ours = latent_of(tmp_path, "dense"), latent_of(tmp_path, "rhymeflow")
    assert ours.shape == (1, 16, 5, 16, 16)
    assert float((ours - dense).abs().max() / dense.abs().max()) <= 1e-5


def test_api_workflow_release_setting_runs(tmp_path):
    result = headless.run_prompt(demo_prompt(frames=33, steps=16, warmup=4), tmp_path)
    assert result.success, result.error
    dense, ours = latent_of(tmp_path, "dense"), latent_of(tmp_path, "rhymeflow")
    assert not torch.equal(dense, ours)
    progress = [d for ev, d in result.messages if ev == "progress" and d["max"] == 16]
    assert [d["value"] for d in progress][-1] == 16, "the ProgressBar reached the last step"


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


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_workflows_load_and_run(path, tmp_path):
    headless.load_nodes()
    workflow = json.loads(path.read_text())
    assert workflow["nodes"] and any(n["type"] == "MarkdownNote" for n in workflow["nodes"])
    prompt = ui_to_api(workflow)  # checks node types, input names and links against the host
    for node in prompt.values():
        if node["class_type"] == "BasicScheduler":
            node["inputs"]["steps"] = min(node["inputs"]["steps"], 12)
        if node["class_type"] == "SplitSigmas":
            node["inputs"]["step"] = 6
        if node["class_type"] == "RhymeFlowSampler":
            node["inputs"]["warmup_steps"] = min(node["inputs"]["warmup_steps"], 3)
    result = headless.run_prompt(prompt, tmp_path)
    assert result.success, result.error
