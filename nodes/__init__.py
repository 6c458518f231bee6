"""V3 node registration: thin node classes, all logic in rhymeflow_core."""
from __future__ import annotations

from ..rhymeflow_core.compat import v3_api
from .compare import RhymeFlowCompare
from .demo import RhymeFlowDemoDecode, RhymeFlowDemoModel, RhymeFlowDemoPrompt
from .keyframes import RhymeFlowKeyframes
from .ksampler import RhymeFlowKSamplerNode
from .projection import RhymeFlowTrajectoryProjection
from .raylight import RhymeFlowRaylightProjection
from .routes import register_routes
from .sampler import RhymeFlowSampler

ComfyExtension, io = v3_api()

NODES = [RhymeFlowKeyframes, RhymeFlowTrajectoryProjection, RhymeFlowSampler, RhymeFlowKSamplerNode, RhymeFlowDemoModel,
         RhymeFlowDemoPrompt, RhymeFlowDemoDecode, RhymeFlowCompare, RhymeFlowRaylightProjection]

# The schedule view's route, on ComfyUI's server when there is one (it reads routes added before start-up).
register_routes()


class RhymeFlowExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> RhymeFlowExtension:
    return RhymeFlowExtension()
