"""RhymeFlowCompare: two decoded videos -> side-by-side / difference video and a fidelity report.

Timing. ComfyUI gives a node no wall times of other nodes, and "the last RhymeFlow run" is not
reliable inside its executor: a prompt may hold several runs (two experts, several branches), and a
cached branch does not run again. So the node keeps the latest run report of every RhymeFlow sampler
node (the report's `source` is that node's id, delivered through rhymeflow_core.report's observer
hook), walks the prompt upstream from the candidate input, and uses the reports of the RhymeFlow
samplers that feed the candidate but not the reference. A cached sampler's report is the one of the
run that produced the cached output; the text says so. Typed times (reference_seconds and
candidate_seconds, 0 = unknown) take precedence, for samplers that report nothing (fewer dense steps).
"""
from __future__ import annotations

import threading

from ..rhymeflow_core.compat import log, v3_api
from ..rhymeflow_core.metrics import Timing, compare_videos, format_report, side_by_side, timing_from_reports
from ..rhymeflow_core.report import add_observer
from .routes import send_comparison

_, io = v3_api()
RHYMEFLOW_SAMPLERS = {"RhymeFlowSampler", "RhymeFlowKSampler"}
_MAX_SOURCES = 256


class _ReportsBySource:
    """The latest prompt's completed run reports of each RhymeFlow sampler node, by node id."""

    def __init__(self):
        self._lock = threading.Lock()
        self._runs: dict[str, tuple[str | None, list]] = {}

    def __call__(self, report) -> None:
        if not report.completed or report.source is None:
            return
        prompt_id = _current_prompt_id()
        with self._lock:
            previous = self._runs.pop(str(report.source), None)
            reports = previous[1] if previous is not None and previous[0] == prompt_id and prompt_id is not None else []
            self._runs[str(report.source)] = (prompt_id, [*reports, report])
            while len(self._runs) > _MAX_SOURCES:
                self._runs.pop(next(iter(self._runs)))

    def get(self, source: str) -> tuple[str | None, list]:
        with self._lock:
            return self._runs.get(str(source), (None, []))


def _current_prompt_id() -> str | None:
    try:
        from comfy_execution.utils import get_executing_context
    except ImportError:
        return None
    context = get_executing_context()
    return None if context is None else context.prompt_id


REPORTS = _ReportsBySource()
add_observer(REPORTS, key="RhymeFlowCompare.reports")  # a second import replaces, never doubles


def upstream(prompt: dict, node_id: str) -> set[str]:
    """Every node `node_id` depends on in an API prompt (itself excluded)."""
    seen: set[str] = set()
    frontier = [str(node_id)]
    while frontier:
        node = prompt.get(frontier.pop())
        if node is None:
            continue
        for value in node.get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) not in seen:
                seen.add(str(value[0]))
                frontier.append(str(value[0]))
    return seen


def candidate_samplers(prompt: dict | None, node_id: str | None) -> list[str]:
    """The RhymeFlow sampler nodes that feed the candidate input and not the reference input."""
    if not prompt or node_id is None or str(node_id) not in prompt:
        return []
    inputs = prompt[str(node_id)].get("inputs", {})
    ref, cand = inputs.get("reference"), inputs.get("candidate")
    if not (isinstance(ref, list) and isinstance(cand, list)):
        return []
    ours = upstream(prompt, str(cand[0])) | {str(cand[0])}
    theirs = upstream(prompt, str(ref[0])) | {str(ref[0])}
    return sorted(n for n in ours - theirs if prompt.get(n, {}).get("class_type") in RHYMEFLOW_SAMPLERS)


def candidate_timing(prompt: dict | None, node_id: str | None) -> Timing | None:
    """Timing from the RhymeFlow runs that feed the candidate input and not the reference input."""
    samplers = candidate_samplers(prompt, node_id)
    if not samplers:
        return None
    current = _current_prompt_id()
    reports, cached = [], False
    for sid in samplers:
        prompt_id, runs = REPORTS.get(sid)
        reports += runs
        cached |= bool(runs) and (prompt_id != current or current is None)
    ids = ", ".join(samplers)
    where = f"run report of RhymeFlow node {ids}" + (", the run that made the cached result" if cached else "")
    return timing_from_reports(reports, where)


class RhymeFlowCompare(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="RhymeFlowCompare",
            display_name="RhymeFlow Compare Videos (quality, time saved)",
            category="sampling/rhymeflow",
            description="Measures how close a video is to a reference made with the same model, prompt and seed: "
                        "PSNR, SSIM, temporal error and the time saved, shown on the node, plus a side-by-side video "
                        "(reference | candidate | amplified difference). Use it to check RhymeFlow (or fewer steps) "
                        "against dense sampling on your own model.",
            inputs=[
                io.Image.Input("reference", tooltip="The reference video's frames, e.g. dense sampling after VAE Decode."),
                io.Image.Input("candidate", tooltip="The video to judge, same prompt, seed, length and size: e.g. RhymeFlow, "
                                                    "or dense sampling with fewer steps, after VAE Decode."),
                io.String.Input("reference_name", default="dense", tooltip="What the reference is called in the text and the video."),
                io.String.Input("candidate_name", default="RhymeFlow", tooltip="What the candidate is called in the text and the video."),
                io.Float.Input("difference_gain", default=4.0, min=1.0, max=100.0, step=0.5,
                               tooltip="The difference panel shows |candidate - reference| multiplied by this, so small "
                                       "differences become visible (black = identical)."),
                io.Float.Input("reference_seconds", default=0.0, min=0.0, max=1e7, step=0.01, optional=True,
                               tooltip="Optional: the reference sampler's time in seconds (0 = unknown). With "
                                       "candidate_seconds, the text reports the time saved."),
                io.Float.Input("candidate_seconds", default=0.0, min=0.0, max=1e7, step=0.01, optional=True,
                               tooltip="Optional: the candidate sampler's time in seconds (0 = unknown: taken from the "
                                       "RhymeFlow sampler feeding the candidate when there is one)."),
            ],
            outputs=[
                io.Image.Output(display_name="side_by_side",
                                tooltip="Per frame: reference | candidate | difference x gain, under a strip naming them. "
                                        "Save or preview it like any video frames."),
                io.String.Output(display_name="report", tooltip="The text shown on the node: PSNR, SSIM, temporal error, time."),
            ],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, reference, candidate, reference_name, candidate_name, difference_gain,
                reference_seconds=0.0, candidate_seconds=0.0) -> io.NodeOutput:
        reference_name = reference_name.strip() or "reference"
        candidate_name = candidate_name.strip() or "candidate"
        timing = None
        if candidate_seconds > 0:
            timing = Timing(reference_seconds if reference_seconds > 0 else None, candidate_seconds, "typed in")
        else:
            try:
                timing = candidate_timing(cls.hidden.prompt, cls.hidden.unique_id)
            except Exception:  # timing is extra: never fail the comparison over it
                log.warning("RhymeFlow: could not read the run reports for the comparison", exc_info=True)
        comparison = compare_videos(reference, candidate, reference_name, candidate_name, timing)
        text = format_report(comparison)
        _tell_the_samplers(cls.hidden.prompt, cls.hidden.unique_id, comparison)
        video = side_by_side(reference, candidate, difference_gain, reference_name, candidate_name)
        return io.NodeOutput(video, text, ui=_preview_text(text))


def _tell_the_samplers(prompt, node_id, comparison) -> None:
    """The schedule views of the RhymeFlow samplers behind the candidate show this comparison (nodes/routes.py)."""
    try:
        samplers = candidate_samplers(prompt, node_id)
        if samplers:
            send_comparison(str(node_id), samplers, comparison)
    except Exception:  # the view's extra line is never worth failing the comparison
        log.warning("RhymeFlow: could not send the comparison to the schedule view", exc_info=True)


def _preview_text(text: str):
    """The node's UI text ({"text": [text]} in the history; web/js/rhymeflow_compare.js shows it on the node)."""
    try:
        from comfy_api.latest import ui
        return ui.PreviewText(text)
    except (ImportError, AttributeError):
        return {"text": (text,)}
