"""RhymeFlowSampler: a SAMPLER for SamplerCustomAdvanced that runs the RhymeFlow schedule."""
from __future__ import annotations

from ..rhymeflow_core.compat import v3_api
from ..rhymeflow_core.keyframes import KeyframeSpec
from ..rhymeflow_core.presets import DEFAULT_PRESET, LEGACY_PRESET, PRESET_NAMES
from ..rhymeflow_core.sampler_object import RhymeFlowSamplerObject
from ..rhymeflow_core.sampling_loop import SamplerSettings
from ..rhymeflow_core.schedule import ScheduleSettings
from ..rhymeflow_core.schedule_view import WIDGET_LIMITS
from ..rhymeflow_core.solvers import SOLVERS
from .keyframes import Keyframes

_, io = v3_api()

PRESET_TOOLTIP = ("quality / balanced / fast fix the schedule for any step count: warm-up 30 / 20 / 15 % of the steps, "
                  "strides 2-3 / 3-5 / 4-5 (balanced = the paper's release setting). custom uses warmup_steps, strides, "
                  "transitions and stride_schedule as set. The schedule view below shows the result; while a preset is "
                  "chosen, the widgets it overrides are greyed out (their values are kept for custom).")


def schedule_inputs(preset_default: str) -> list:
    """The schedule widgets shared by RhymeFlowSampler and RhymeFlowKSampler. Their ranges are the schedule
    route's (rhymeflow_core.schedule_view.WIDGET_LIMITS), so the view accepts whatever the widgets allow."""
    return [
        io.Int.Input("warmup_steps", default=10, min=WIDGET_LIMITS["warmup_steps"][0], max=WIDGET_LIMITS["warmup_steps"][1],
                     tooltip="Synchronous full steps before any frame skips; the strongest quality knob. "
                             "Release: 10 of 50 steps. At 30 steps 6-10, at 20 steps 4-6 (see README). Used with preset custom."),
        io.Int.Input("min_stride", default=3, min=WIDGET_LIMITS["min_stride"][0], max=WIDGET_LIMITS["min_stride"][1],
                     tooltip="Group length (steps per full pass) early after warm-up. Used with preset custom."),
        io.Int.Input("max_stride", default=5, min=WIDGET_LIMITS["max_stride"][0], max=WIDGET_LIMITS["max_stride"][1],
                     tooltip="Group length late in sampling. Strides above 5 start to shimmer (paper, Fig. 6). Used with preset custom."),
        io.Float.Input("transition_1", default=0.3, min=WIDGET_LIMITS["transition_1"][0], max=WIDGET_LIMITS["transition_1"][1], step=0.01,
                       tooltip="Where the middle stride (min+1) starts: a fraction of the post-warm-up steps, "
                               "or an absolute step offset if above 1. Used with preset custom."),
        io.Float.Input("transition_2", default=0.7, min=WIDGET_LIMITS["transition_2"][0], max=WIDGET_LIMITS["transition_2"][1], step=0.01,
                       tooltip="Where max_stride starts: a fraction of the post-warm-up steps, or an absolute offset if above 1. "
                               "Used with preset custom."),
        io.Combo.Input("stride_schedule", options=["progressive", "fixed"], default="progressive",
                       tooltip="progressive: strides grow min -> min+1 -> max; fixed: min_stride everywhere. Used with preset custom."),
        # Last of the widgets and optional, so workflows and API prompts made before presets existed
        # load and run unchanged, as custom: API prompts through execute's default, saved workflows
        # through web/js/rhymeflow.js (a node saved without a preset value loads as custom).
        io.Combo.Input("preset", options=list(PRESET_NAMES), default=preset_default, optional=True, tooltip=PRESET_TOOLTIP),
        Keyframes.Input("keyframes", optional=True,
                        tooltip="From RhymeFlowKeyframes. Default: semantic, 2 keyframes (first and last frame)."),
        # Optional and last, default 0 (the paper): saved workflows and API prompts run unchanged.
        io.Float.Input("refresh_budget", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                       tooltip="Partial passes (Wan, context kv_cache, experimental): each active pass also refreshes this "
                               "share of the non-keyframes, those that changed most first, for that much more active-pass "
                               "compute. 0: the paper's active passes. See docs/algorithm.md §11."),
    ]


def sampler_settings(solver, warmup_steps, min_stride, max_stride, transition_1, transition_2, stride_schedule,
                     keyframes=None, refresh_budget=0.0) -> SamplerSettings:
    return SamplerSettings(
        schedule=ScheduleSettings(warmup_steps, min_stride, max_stride, transition_1, transition_2,
                                  progressive=stride_schedule == "progressive"),
        keyframes=keyframes if keyframes is not None else KeyframeSpec(),
        solver=solver,
        refresh_budget=float(refresh_budget),
    )


class RhymeFlowSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowSampler",
            display_name="RhymeFlow Sampler (for SamplerCustomAdvanced)",
            category="sampling/rhymeflow",
            description="Faster video sampling without retraining (RhymeFlow, arXiv 2606.06309), for SamplerCustomAdvanced: "
                        "ordinary steps first (warm-up), then only the keyframes are computed every step and the other "
                        "frames once per group: about half the model compute with the default preset balanced (scaled "
                        "to your step count; the paper's release setting at 50 steps). Needs the model from RhymeFlow "
                        "Patch Model. Check the result against dense with RhymeFlow Compare Videos.",
            inputs=[
                io.Combo.Input("solver", options=list(SOLVERS), default="uni_pc",
                               tooltip="Solver for keyframes (and all frames during warm-up). Identical to ComfyUI's sampler of "
                                       "the same name; non-keyframes always take one Euler jump per group."),
                *schedule_inputs(preset_default=DEFAULT_PRESET),
            ],
            outputs=[io.Sampler.Output(tooltip="Connect to SamplerCustomAdvanced.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, solver, warmup_steps, min_stride, max_stride, transition_1, transition_2,
                stride_schedule, preset=LEGACY_PRESET, keyframes=None, refresh_budget=0.0) -> io.NodeOutput:
        settings = sampler_settings(solver, warmup_steps, min_stride, max_stride, transition_1, transition_2,
                                    stride_schedule, keyframes, refresh_budget)
        return io.NodeOutput(RhymeFlowSamplerObject(settings, preset, source=cls.hidden.unique_id))
