"""RhymeFlowTrajectoryProjection: MODEL -> MODEL with the active-pass forward installed."""
from __future__ import annotations

from ..rhymeflow_core.cache import CACHE_DEVICES
from ..rhymeflow_core.compat import v3_api
from ..rhymeflow_core.patch import apply_trajectory_projection
from ..rhymeflow_core.run_state import CONTEXT_MODES

_, io = v3_api()


class RhymeFlowTrajectoryProjection(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowTrajectoryProjection",
            display_name="RhymeFlow Patch Model (keyframe cache)",
            category="sampling/rhymeflow",
            description="Prepares a video model for RhymeFlow Sampler: most steps then compute only the keyframes, and "
                        "the other frames come from a cache filled every few steps. The model you connect is not "
                        "changed, and other samplers use the output like the original.",
            inputs=[
                io.Model.Input("model", tooltip="A video model: Wan 2.1 / 2.2 (T2V, I2V, FLF2V, TI2V-5B; each Wan 2.2 expert gets its own node), "
                                               "HunyuanVideo 1.0 / 1.5 or LTX-Video."),
                io.Combo.Input("context", options=list(CONTEXT_MODES), default="kv_cache",
                               tooltip="Where non-keyframes' keys/values come from in active passes. kv_cache: cached keys/values "
                                       "(fastest); hidden_cache: cached block inputs re-projected each step (the reference code); "
                                       "keyframe_only: keyframes attend only to each other (ablation, lower quality)."),
                io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default="auto",
                               tooltip="Where the cache lives. auto: on the GPU when it fits the free memory, else in CPU RAM."),
            ],
            outputs=[io.Model.Output(tooltip="The model, ready for RhymeFlowSampler.")],
        )

    @classmethod
    def execute(cls, model, context, cache_device) -> io.NodeOutput:
        return io.NodeOutput(apply_trajectory_projection(model, context, cache_device))
