"""RhymeFlowKeyframes: how keyframes are chosen (a RHYMEFLOW_KEYFRAMES value for the sampler)."""
from __future__ import annotations

from ..rhymeflow_core.compat import v3_api
from ..rhymeflow_core.errors import RhymeFlowInputError
from ..rhymeflow_core.keyframes import STRATEGIES, KeyframeSpec, parse_manual_frames

_, io = v3_api()
Keyframes = io.Custom("RHYMEFLOW_KEYFRAMES")


class RhymeFlowKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowKeyframes",
            display_name="RhymeFlow Keyframes (frames computed every step)",
            category="sampling/rhymeflow",
            description="Chooses the frames RhymeFlow computes at every step (keyframes); the others are updated once "
                        "per group of steps. More keyframes: closer to dense sampling, less speed-up. The first and last "
                        "frame, and frames an image fixes (image-to-video start / end frames, frames kept by a noise "
                        "mask), are always keyframes.",
            inputs=[
                io.Combo.Input("strategy", options=list(STRATEGIES), default="semantic",
                               tooltip="semantic: new keyframe where the content changes (cosine similarity of the clean "
                                       "prediction at the end of warm-up); uniform: evenly spaced; manual: your list. "
                                       "random / first are ablations from the paper."),
                io.Int.Input("count", default=2, min=1, max=1024,
                             tooltip="Number of keyframes M in latent frames, counting the first and last frame. "
                                     "2 is the release setting; more keyframes = closer to dense, less speed-up."),
                io.Float.Input("similarity_threshold", default=0.98, min=0.0, max=1.0, step=0.001,
                               tooltip="semantic only: a frame whose similarity to the last keyframe falls below this starts a new keyframe."),
                io.Int.Input("min_gap", default=1, min=1, max=1024,
                             tooltip="Minimum distance in latent frames between two keyframes (semantic strategy)."),
                io.String.Input("manual_frames", default="", multiline=False,
                                tooltip="manual only: latent frame indices separated by commas, e.g. 0,7,20 (-1 = last frame). "
                                        "Wan latent frame k covers pixel frames 4k-3..4k."),
            ],
            outputs=[Keyframes.Output(display_name="keyframes", tooltip="Connect to RhymeFlowSampler.")],
        )

    @classmethod
    def validate_inputs(cls, manual_frames=None):
        # Only the input it checks: ComfyUI repeats a validation message once per input the function takes.
        # (strategy 'manual' with an empty list is refused when the node runs, and the schedule view says so.)
        if manual_frames is None:  # linked input: checked at execution instead
            return True
        try:
            parse_manual_frames(manual_frames)
        except RhymeFlowInputError as e:
            return str(e)
        return True

    @classmethod
    def execute(cls, strategy, count, similarity_threshold, min_gap, manual_frames) -> io.NodeOutput:
        spec = KeyframeSpec(strategy=strategy, count=count, threshold=similarity_threshold, min_gap=min_gap,
                            manual=parse_manual_frames(manual_frames) if strategy == "manual" else ())
        return io.NodeOutput(spec)
