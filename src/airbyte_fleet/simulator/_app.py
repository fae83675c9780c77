"""The aiohttp application: one request's way through faults, auth and a handler, recorded.

Every API request follows the same order as in Airbyte's stack: an unknown path is a 404, then
faults are injected (``_fault_injection``), then a wrong method is a 405, credentials are
checked (``_auth``) and the route's handler answers (``_handlers``). Each exchange is then
recorded for tests and the spec check. The control routes (``_control``) bypass all of this.
"""

from __future__ import annotations

import logging
import time
from email.utils import formatdate
from typing import Any

from aiohttp import web

from ._auth import authorize
from ._control import add_control_routes
from ._exchange import Exchange
from ._fault_injection import Dropped, fault_label, inject_faults
from ._handlers import HANDLERS, Call
from ._problems import ProblemError, error_id_body, json_response
from ._routing import ROUTE_METHODS, classify
from ._state import STATE_KEY, SimState

__all__ = ["build_app"]

_log = logging.getLogger("airbyte_fleet.simulator")

# Status used for the placeholder response after a deliberate drop; it is never delivered,
# because aiohttp quietly gives up writing to a closed transport.
_DROPPED_PLACEHOLDER = 599


def _micronaut_error(message: str, path: str) -> dict[str, Any]:
    return {
        "message": message,
        "_links": {"self": {"href": path, "templated": False}},
        "_embedded": {"errors": [{"message": message}]},
    }


async def _process(
    state: SimState, request: web.Request, call: Call, route: str | None
) -> web.Response:
    if route is None:
        return json_response(404, _micronaut_error("Page Not Found", request.path))
    if route != "/health":
        faulted = inject_faults(state, request, route)
        if faulted is not None:
            response, fault = faulted
            call.faults.add(fault)
            return response
    allowed = ROUTE_METHODS[route]
    if call.method not in allowed:
        return json_response(
            405,
            _micronaut_error("Method Not Allowed", request.path),
            {"Allow": ", ".join(sorted(allowed))},
        )
    if route != "/health":
        if route != "/applications/token" or state.options.auth == "basic":
            denied = authorize(state, request)
            if denied is not None:
                return denied
        # The old basic-auth standalone server had no token endpoint at all.
        if route == "/applications/token" and state.options.auth == "basic":
            return json_response(404, _micronaut_error("Page Not Found", request.path))
    return await HANDLERS[(call.method, route)](state, call)


def _headers(items: Any) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def _body_bytes(response: web.Response) -> bytes:
    body = response.body
    return bytes(body) if isinstance(body, bytes | bytearray) else b""


async def _api(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    at = state.clock.now()
    body = await request.read()
    prefix, route, params = classify(request.path, state.options.layouts)
    state.arrived(request.method, route)
    call = Call(
        method=request.method,
        prefix=prefix,
        params=params,
        query=request.rel_url.query,
        content_type=request.headers.get("Content-Type"),
        body=body,
    )
    dropped = False
    cpu_started = time.process_time()
    try:
        response = await _process(state, request, call, route)
    except ProblemError as exc:
        response = exc.response()
    except Dropped as exc:
        dropped = True
        call.faults.add(exc.fault)
        response = web.Response(status=_DROPPED_PLACEHOLDER)
    except Exception:
        # Mirrors Airbyte's UncaughtExceptionHandler; a bug here should still look like a 500.
        _log.exception("simulator handler failed for %s %s", request.method, request.path)
        response = json_response(500, error_id_body())
    if not dropped:
        # The server's own clock, as Airbyte's Date header would carry it: clients that filter by
        # time (updatedAtStart) calibrate against it, so it must agree with the job timestamps.
        response.headers["Date"] = formatdate(state.clock.now(), usegmt=True)
    # One event loop: the process's CPU time across the handler is the handler's, except
    # while a slow POST sleeps, when other requests' CPU is counted here too.
    state.answered(
        request.method, route, 0 if dropped else response.status, time.process_time() - cpu_started
    )
    if not state.record_exchanges:
        return response
    state.record(
        Exchange(
            method=request.method,
            path=request.path,
            query=request.query_string,
            route=route,
            prefix=prefix,
            request_headers=_headers(request.headers.items()),
            request_body=body,
            status=0 if dropped else response.status,
            response_headers={} if dropped else _headers(response.headers.items()),
            response_body=b"" if dropped else _body_bytes(response),
            at=at,
            fault=fault_label(call.faults),
        )
    )
    return response


def build_app(state: SimState) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    add_control_routes(app)
    app.router.add_route("*", "/{tail:.*}", _api)
    return app
