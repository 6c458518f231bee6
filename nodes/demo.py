"""Demo nodes (sampling/rhymeflow/demo): the embedded trained model, its prompt encoder and decoder."""
from __future__ import annotations

from ..rhymeflow_core.compat import v3_api
from ..rhymeflow_core.demo_model import decode_for_display, encode_prompt, load_demo_model
from ..rhymeflow_core.demo_prompt import EXAMPLE, grammar_help

_, io = v3_api()
CATEGORY = "sampling/rhymeflow/demo"


class RhymeFlowDemoModel(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowDemoModel",
            display_name="RhymeFlow Demo Model",
            category=CATEGORY,
            description="The pack's small trained text-to-video model (ComfyUI's WanModel class, 5.4 M parameters, "
                        "trained on coloured shapes that move). Runs on a CPU in seconds.",
            inputs=[],
            outputs=[io.Model.Output(tooltip="A Wan-class MODEL; use it like a loaded Wan 2.1 T2V model.")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(load_demo_model())


class RhymeFlowDemoPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowDemoPrompt",
            display_name="RhymeFlow Demo Prompt",
            category=CATEGORY,
            description=f"Encodes a demo prompt such as '{EXAMPLE}' "
                        "into the 4096-wide token embeddings Wan's text projection expects (demo model only).",
            inputs=[io.String.Input("text", multiline=True, default=EXAMPLE, tooltip=grammar_help())],
            outputs=[io.Conditioning.Output(tooltip="CONDITIONING for the demo model.")],
        )

    @classmethod
    def execute(cls, text) -> io.NodeOutput:
        return io.NodeOutput([[encode_prompt(text), {}]])


class RhymeFlowDemoDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowDemoDecode",
            display_name="RhymeFlow Demo Decode",
            category=CATEGORY,
            description="Decodes a demo-model latent to frames exactly (one latent frame is one frame, one latent "
                        "pixel a 2x2 RGB block), enlarged for viewing.",
            inputs=[
                io.Latent.Input("samples", tooltip="A video latent sampled with the demo model."),
                io.Int.Input("scale", default=4, min=1, max=16,
                             tooltip="Nearest-neighbour enlargement for viewing (the model makes 32x32 frames from a 128x128 empty latent)."),
            ],
            outputs=[io.Image.Output(tooltip="All frames of all videos in the batch, in order.")],
        )

    @classmethod
    def execute(cls, samples, scale) -> io.NodeOutput:
        return io.NodeOutput(decode_for_display(samples["samples"], scale))
