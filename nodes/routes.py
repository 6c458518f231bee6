"""The pack's server side for the browser: the schedule route and the after-run report event.

POST /rhymeflow/schedule  widget values in, `rhymeflow_core.schedule_view` out (the drawing's data);
event "rhymeflow.report"  sent after each RhymeFlow run to the client that queued the prompt;
event "rhymeflow.compare" sent by RhymeFlowCompare to the same client, for the views of the samplers it judged.
Both exist only when ComfyUI runs its server; headless runs and tests have none.
"""
from __future__ import annotations

import gc
import json
import math

from ..rhymeflow_core import compat, report
from ..rhymeflow_core.errors import RhymeFlowInputError
from ..rhymeflow_core.metrics import Comparison, summary_line
from ..rhymeflow_core.presets import CUSTOM, PRESET_NAMES, resolve_schedule
from ..rhymeflow_core.schedule_view import run_line, schedule_view, view_from_request

ROUTE = "/rhymeflow/schedule"
EVENT = "rhymeflow.report"
COMPARE_EVENT = "rhymeflow.compare"
MAX_BODY = 64 * 1024  # the frontend sends well under 8 KiB; ComfyUI's own limit is the upload size (100 MB)


class _BadBody(ValueError):
    pass


def _no_constants(name: str):
    raise _BadBody(f"{name} is not a number JSON allows; send finite numbers.")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadBody(f"{text[:30]} is too large for a number; send finite numbers.")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 30:
        raise _BadBody(f"{text[:30]}... is too large for a whole number.")
    return int(text)


def parse_body(body: bytes):
    """The request body as JSON, strictly: no NaN / Infinity, no numbers beyond float, bounded nesting."""
    try:
        return json.loads(body, parse_constant=_no_constants, parse_float=_finite, parse_int=_int)
    except _BadBody as e:
        raise RhymeFlowInputError(f"the schedule request has a bad number: {e}") from None
    except RecursionError:
        raise RhymeFlowInputError("the schedule request nests too deeply; send a flat JSON object of widget values.") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise RhymeFlowInputError(f"the schedule request must be JSON (UTF-8): {str(e)[:120]}.") from None


async def _read(request, limit: int = MAX_BODY) -> bytes:
    too_big = f"the schedule request is larger than {limit // 1024} KiB; send only the widget values."
    if request.content_length is not None and request.content_length > limit:
        raise RhymeFlowInputError(too_big)
    chunks, size = [], 0
    while True:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise RhymeFlowInputError(too_big)


def answer(body: bytes) -> tuple[int, str]:
    """(HTTP status, JSON text) for a request body: the view, or 400 with {"error": "RhymeFlow: <problem and fix>"}.

    A long schedule makes tens of thousands of small objects (a group per rhythmic point), none in a
    cycle: reference counting frees them all before this returns. The cyclic collector is paused
    meanwhile, so they cannot set off a full collection of the whole ComfyUI heap (about half a second)
    in the middle of a request; with them freed, its allocation count is where it was.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        return 200, json.dumps(view_from_request(parse_body(body)))
    except RhymeFlowInputError as e:
        return 400, json.dumps({"error": str(e)})
    finally:
        if collecting:
            gc.enable()


async def schedule_route(request):
    from aiohttp import web
    try:
        status, text = answer(await _read(request))
    except RhymeFlowInputError as e:  # too large
        status, text = 400, json.dumps({"error": str(e)})
    return web.Response(text=text, status=status, content_type="application/json")


def register_routes() -> bool:
    """Add the route to the running server (before it starts serving) and send run reports to the
    browser; False when there is no server."""
    server = compat.prompt_server()
    if server is None:
        return False
    if not any(getattr(r, "path", None) == ROUTE for r in server.routes):  # the pack may be imported twice
        server.routes.post(ROUTE)(schedule_route)
    report.add_observer(send_report, key=EVENT)
    return True


def report_event(run: report.RunReport) -> dict:
    """The event body: what the run did, and the schedule view redrawn with the keyframes it chose."""
    # The report's schedule is already resolved for the run's step count: draw it as given.
    # Drawn with the run's preset when that preset gives exactly this schedule again (it always does for the
    # run's own step count); otherwise as custom, so the drawing is the schedule that ran whatever happens.
    preset = run.preset if run.preset in PRESET_NAMES and resolve_schedule(run.preset, run.schedule, run.steps) == run.schedule \
        else CUSTOM
    view = schedule_view(run.steps, run.frames, preset, run.schedule, run.keyframe_spec, run.keyframes,
                         steps_source="the run", frames_source="the run",
                         refresh_budget=run.refresh_budget, chosen_refresh=run.refreshed)
    view["preset"] = run.preset
    data = run.to_json()
    view["lines"].append(run_line(data))
    return {"node": run.source, "preset": run.preset, "report": data, "view": view}


def send_report(run: report.RunReport) -> None:
    """A run-report observer: a finished run of one of our sampler nodes goes to the browser that queued it."""
    server = compat.prompt_server()
    if server is not None and run.source is not None and run.completed:
        server.send_sync(EVENT, report_event(run), server.client_id)


def comparison_event(node: str, samplers: list[str], comparison: Comparison) -> dict:
    """The event body: which compare node, the RhymeFlow samplers behind its candidate, the numbers and the
    caption line their schedule views add (written here: the browser computes nothing)."""
    numbers = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in comparison.to_json().items()}
    # NaN (the temporal error of one frame) is not JSON: the browser's parser would drop the whole message.
    return {"node": node, "samplers": samplers, "line": summary_line(comparison), "comparison": numbers}


def send_comparison(node: str, samplers: list[str], comparison: Comparison) -> None:
    """Send a finished comparison to the browser that queued the prompt; nothing without a server."""
    server = compat.prompt_server()
    if server is not None:
        server.send_sync(COMPARE_EVENT, comparison_event(node, samplers, comparison), server.client_id)
