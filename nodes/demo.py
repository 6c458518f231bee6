"""Demo nodes (sampling/rhymeflow/demo): the embedded tiny Wan model and its prompt encoder."""
from __future__ import annotations

from ..rhymeflow_core.compat import v3_api
from ..rhymeflow_core.demo_model import encode_prompt, load_tiny_wan

_, io = v3_api()


class RhymeFlowDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowDemoModel",
            display_name="RhymeFlow Demo Model",
            category="sampling/rhymeflow/demo",
            description="A tiny ComfyUI WanModel (random weights, built in memory) for trying RhymeFlow on a CPU.",
            inputs=[io.Int.Input("seed", default=0, min=0, max=2**31 - 1, tooltip="Seed of the random demo weights.")],
            outputs=[io.Model.Output(tooltip="A Wan-class MODEL; use it like a loaded Wan 2.1 T2V model.")],
        )

    @classmethod
    def execute(cls, seed) -> io.NodeOutput:
        return io.NodeOutput(load_tiny_wan(seed))


class RhymeFlowDemoPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowDemoPrompt",
            display_name="RhymeFlow Demo Prompt",
            category="sampling/rhymeflow/demo",
            description="Turns a prompt into the 4096-wide token embeddings Wan's text projection expects (demo model only).",
            inputs=[io.String.Input("text", multiline=True, default="a red circle moves right",
                                    tooltip="The prompt. Deterministic: the same text always gives the same embedding.")],
            outputs=[io.Conditioning.Output(tooltip="CONDITIONING for the demo model.")],
        )

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        return io.NodeOutput([[encode_prompt(text), {}]])
