"""V3 node registration: thin node classes, all logic in rhymeflow_core."""
from __future__ import annotations

from ..rhymeflow_core.compat import v3_api
from .demo import RhymeFlowDemoDecode, RhymeFlowDemoModel, RhymeFlowDemoPrompt
from .keyframes import RhymeFlowKeyframes
from .projection import RhymeFlowTrajectoryProjection
from .sampler import RhymeFlowSampler

ComfyExtension, io = v3_api()

NODES = [RhymeFlowKeyframes, RhymeFlowTrajectoryProjection, RhymeFlowSampler, RhymeFlowDemoModel, RhymeFlowDemoPrompt,
         RhymeFlowDemoDecode]


class RhymeFlowExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> RhymeFlowExtension:
    return RhymeFlowExtension()
