"""RhymeFlowRaylightProjection: RAY_ACTORS -> RAY_ACTORS, the keyframe cache installed on every Raylight worker."""
from __future__ import annotations

from ..rhymeflow_core.cache import CACHE_DEVICES
from ..rhymeflow_core.compat import v3_api
from ..rhymeflow_core.raylight_glue import project_on_workers
from ..rhymeflow_core.run_state import CONTEXT_MODES

_, io = v3_api()
RayActors = io.Custom("RAY_ACTORS")   # Raylight's type: a dict of Ray workers (rhymeflow_core/raylight_glue.py)


class RhymeFlowRaylightProjection(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowRaylightProjection",
            display_name="RhymeFlow Patch Raylight Model (multi-GPU)",
            category="sampling/rhymeflow/multi-gpu",
            description="RhymeFlow Patch Model for Raylight: prepares the model on every Raylight GPU worker for "
                        "RhymeFlow Sampler, which you then connect to Raylight's XFuser SamplerCustom (or its Advanced, "
                        "Unified Parallel and Data Parallel variants). Needs Raylight (github komikndr/raylight) with FSDP, "
                        "ring attention and PipeFusion off; Ulysses and CFG parallel work. See docs/multi_gpu.md.",
            inputs=[
                RayActors.Input("ray_actors", tooltip="From Load Diffusion Model (Ray) (or a Raylight LoRA / patch node after it): "
                                                      "a Wan, HunyuanVideo or LTX-Video model on the Ray workers."),
                io.Combo.Input("context", options=list(CONTEXT_MODES), default="kv_cache",
                               tooltip="As in RhymeFlow Patch Model. kv_cache: cached keys/values (fastest); hidden_cache: "
                                       "cached block inputs; keyframe_only: keyframes attend only to each other (ablation)."),
                io.Combo.Input("cache_device", options=list(CACHE_DEVICES), default="auto",
                               tooltip="Where each worker keeps its cache. auto: on its GPU when it fits the free memory, else in CPU RAM."),
            ],
            outputs=[RayActors.Output(tooltip="The same Ray workers, their models ready for RhymeFlow Sampler. With any other "
                                              "sampler they sample exactly as before.")],
        )

    @classmethod
    def execute(cls, ray_actors, context, cache_device) -> io.NodeOutput:
        return io.NodeOutput(project_on_workers(ray_actors, context, cache_device))
