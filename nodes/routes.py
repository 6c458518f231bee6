"""The pack's server side for the browser: the schedule route and the after-run report event.

POST /rhymeflow/schedule  widget values in, `rhymeflow_core.schedule_view` out (the drawing's data);
event "rhymeflow.report"  sent after each RhymeFlow run to the client that queued the prompt.
Both exist only when ComfyUI runs its server; headless runs and tests have none.
"""
from __future__ import annotations

from ..rhymeflow_core import compat, report
from ..rhymeflow_core.errors import RhymeFlowInputError
from ..rhymeflow_core.schedule_view import schedule_view, view_from_request

ROUTE = "/rhymeflow/schedule"
EVENT = "rhymeflow.report"


async def schedule_route(request):
    from aiohttp import web
    try:
        data = await request.json()
    except ValueError:
        return web.json_response({"error": "RhymeFlow: the schedule request must be JSON."}, status=400)
    try:
        return web.json_response(view_from_request(data))
    except RhymeFlowInputError as e:
        return web.json_response({"error": str(e)}, status=400)


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
    view = schedule_view(run.steps, run.frames, "custom", run.schedule, run.keyframe_spec, run.keyframes)
    view["preset"] = run.preset
    return {"node": run.source, "preset": run.preset, "report": run.to_json(), "view": view}


def send_report(run: report.RunReport) -> None:
    """A run-report observer: a finished run of one of our sampler nodes goes to the browser that queued it."""
    server = compat.prompt_server()
    if server is not None and run.source is not None and run.completed:
        server.send_sync(EVENT, report_event(run), server.client_id)
