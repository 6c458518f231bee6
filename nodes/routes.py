"""The pack's server side for the browser: the schedule route and the after-run report event.

POST /rhymeflow/schedule  widget values in, `rhymeflow_core.schedule_view` out (the drawing's data);
event "rhymeflow.report"  sent after each RhymeFlow run to the client that queued the prompt.
Both exist only when ComfyUI runs its server; headless runs and tests have none.
"""
from __future__ import annotations

from ..rhymeflow_core import compat
from ..rhymeflow_core.errors import RhymeFlowInputError
from ..rhymeflow_core.keyframes import KeyframeSpec
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
    """Add the route to the running server (before it starts serving); False when there is none."""
    server = compat.prompt_server()
    if server is None:
        return False
    if not any(getattr(r, "path", None) == ROUTE for r in server.routes):  # the pack may be imported twice
        server.routes.post(ROUTE)(schedule_route)
    return True


def report_event(node_id: str, summary: dict, preset: str, keyframes: KeyframeSpec) -> dict:
    """The event body: what the run did, and the schedule view redrawn with the keyframes it chose."""
    # The summary's schedule is already resolved for the run's step count: draw it as given.
    view = schedule_view(summary["steps"], summary["frames"], "custom", summary["schedule"], keyframes, summary["keyframes"])
    view["preset"] = preset
    report = {k: v for k, v in summary.items() if k != "schedule"}
    return {"node": node_id, "preset": preset, "report": report, "view": view}


def report_sender(node_id: str | None, preset: str, keyframes: KeyframeSpec):
    """The sampler's on_report callback for this node, or None where no browser can receive it."""
    if node_id is None or compat.prompt_server() is None:
        return None

    def send(summary: dict) -> None:
        server = compat.prompt_server()
        if server is not None:
            server.send_sync(EVENT, report_event(node_id, summary, preset, keyframes), server.client_id)
    return send
