"""Control routes under ``/_simulator/``: steer a running simulator from another process.

They are not part of Airbyte, so they are never recorded, faulted or authenticated. They offer
over HTTP the test hooks a Python caller has on ``Simulator``, for a simulator that runs in
another process (``airbyte-fleet simulate`` behind a demo, a benchmark or a subprocess test).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ._problems import json_response
from ._state import STATE_KEY
from ._timeline import JobScript
from ._world import ConnectionNotActiveError, JobAlreadyRunningError, UnknownConnectionError

__all__ = ["add_control_routes"]


async def _control_json(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(
            text='{"error":"body must be JSON"}', content_type="application/json"
        ) from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(
            text='{"error":"body must be a JSON object"}', content_type="application/json"
        )
    return data


def _control_error(status: int, message: str) -> web.Response:
    return json_response(status, {"error": message})


async def _stats(request: web.Request) -> web.Response:
    jobs = request.query.get("jobs", "true").lower() != "false"
    return json_response(200, request.app[STATE_KEY].stats(jobs=jobs))


async def _set_faults(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    changes = await _control_json(request)
    try:
        state.faults.update(changes)
    except (TypeError, ValueError) as exc:
        return _control_error(400, str(exc))
    return json_response(200, state.faults.as_dict())


async def _set_connection(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    data = await _control_json(request)
    try:
        view = state.world.set_connection_status(
            request.match_info["connectionId"], str(data.get("status"))
        )
    except UnknownConnectionError:
        return _control_error(404, "unknown connection")
    except ValueError as exc:
        return _control_error(400, str(exc))
    return json_response(200, view)


async def _script(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    data = await _control_json(request)
    try:
        odd_status = data.get("odd_status")
        if odd_status is not None and not isinstance(odd_status, str):
            raise TypeError(f"odd_status must be a string or null, got {odd_status!r}")
        script = JobScript(
            seconds=float(data.get("seconds", 1.0)),
            incomplete_attempts=int(data.get("incomplete_attempts", 0)),
            final=data.get("final", "succeeded"),
            pending_seconds=(
                None if data.get("pending_seconds") is None else float(data["pending_seconds"])
            ),
            odd_status=odd_status,
        )
        queued = state.script(str(data.get("connectionId")), script)
    except UnknownConnectionError:
        return _control_error(404, "unknown connection")
    except (TypeError, ValueError) as exc:
        return _control_error(400, str(exc))
    return json_response(200, {"queued": queued})


async def _start_job(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    data = await _control_json(request)
    try:
        view = state.start_job(str(data.get("connectionId")), str(data.get("jobType", "sync")))
    except UnknownConnectionError:
        return _control_error(404, "unknown connection")
    except ValueError as exc:
        return _control_error(400, str(exc))
    except ConnectionNotActiveError:
        return _control_error(409, "connection is not active")
    except JobAlreadyRunningError:
        return _control_error(409, "a job is already running for this connection")
    return json_response(200, view)


async def _expire_tokens(request: web.Request) -> web.Response:
    return json_response(200, {"expired": request.app[STATE_KEY].tokens.expire_all()})


def add_control_routes(app: web.Application) -> None:
    """Register the control routes; they must come before the API's catch-all route."""
    app.router.add_get("/_simulator/stats", _stats)
    app.router.add_post("/_simulator/faults", _set_faults)
    app.router.add_post("/_simulator/connections/{connectionId}", _set_connection)
    app.router.add_post("/_simulator/script", _script)
    app.router.add_post("/_simulator/start-job", _start_job)
    app.router.add_post("/_simulator/expire-tokens", _expire_tokens)
