"""The aiohttp application: routing, fault injection, auth, recording and control routes."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from email.utils import formatdate
from typing import Any, NoReturn

from aiohttp import web

from ._exchange import Exchange
from ._handlers import HANDLERS, Call
from ._problems import ProblemError, error_id_body, invalid_api_key, json_response
from ._routing import ROUTE_METHODS, classify
from ._state import SimState
from ._world import (
    ConnectionNotActiveError,
    JobAlreadyRunningError,
    JobScript,
    UnknownConnectionError,
)

__all__ = ["STATE_KEY", "build_app"]

_log = logging.getLogger("airbyte_fleet.simulator")

STATE_KEY: web.AppKey[SimState] = web.AppKey("simulator_state", SimState)

# Status used for the placeholder response after a deliberate drop; it is never delivered,
# because aiohttp quietly gives up writing to a closed transport.
_DROPPED_PLACEHOLDER = 599


# Proper prefixes of these compact JSON objects are the "truncated" bodies of the malformed
# fault: a JSON object cut anywhere before its closing brace never parses.
_MALFORMED_TEMPLATES: dict[str, bytes] = {
    "job": (
        b'{"jobId":10004217,"status":"running","jobType":"sync","startTime":"2025-10-09T08:54:05Z",'
        b'"connectionId":"5b2a7c1e-3f4d-4e8a-9b6c-0d1e2f3a4b5c","duration":"PT42S"}'
    ),
    "page": (
        b'{"previous":"","next":"http://localhost/api/public/v1/items?limit=20&offset=20",'
        b'"data":[{"name":"Postgres to Snowflake 001","status":"active"}]}'
    ),
    "connection": (
        b'{"connectionId":"5b2a7c1e-3f4d-4e8a-9b6c-0d1e2f3a4b5c","name":"Postgres to Snowflake",'
        b'"status":"active","schedule":{"scheduleType":"manual"}}'
    ),
}
_MALFORMED_TEMPLATE_BY_ROUTE = {
    "/jobs/{jobId}": "job",
    "/connections/{connectionId}": "connection",
}


class _Dropped(Exception):
    """The connection was closed on purpose; there is no response to send."""

    def __init__(self, fault: str) -> None:
        super().__init__(fault)
        self.fault = fault


def _micronaut_error(message: str, path: str) -> dict[str, Any]:
    return {
        "message": message,
        "_links": {"self": {"href": path, "templated": False}},
        "_embedded": {"errors": [{"message": message}]},
    }


def _drop(request: web.Request, *, fault: str) -> NoReturn:
    transport = request.transport
    if transport is not None:
        # abort() sends an RST (a "reset"); close() a clean FIN, like a server going away.
        if fault == "reset":
            transport.abort()
        else:
            transport.close()
    raise _Dropped(fault)


def _retry_after_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _malformed(state: SimState, method: str, route: str) -> web.Response:
    """200 ``application/json`` whose body is cut short, sometimes with bytes that are not
    UTF-8 either; which cut and which template follow the seed."""
    rng = state.malformed_rng
    name = _MALFORMED_TEMPLATE_BY_ROUTE.get(route, "page")
    if route == "/jobs" and method == "POST":
        name = "job"
    template = _MALFORMED_TEMPLATES[name]
    body = template[: rng.randrange(1, len(template))]
    if rng.random() < 0.25:
        body += b"\xff\xfe"
    return web.Response(status=200, body=body, content_type="application/json")


def _inject_faults(
    state: SimState, request: web.Request, route: str
) -> tuple[web.Response, str] | None:
    """The injected answer and its fault label, or None to let the request through."""
    faults = state.faults
    # Always draw the same numbers so the fault sequence for a seed does not depend on which
    # rates are switched on.
    rng = state.fault_rng
    draw_reset, draw_429, draw_5xx = rng.random(), rng.random(), rng.random()
    draw_malformed = state.malformed_rng.random()
    window = faults.down_window
    if window is not None:
        elapsed = state.clock.now() - state.started_at
        if window[0] <= elapsed < window[1]:
            _drop(request, fault="down")
    if draw_reset < faults.reset_rate:
        _drop(request, fault="reset")
    if draw_429 < faults.rate_429:
        # Airbyte's load shedder deliberately sends no Retry-After; it is opt-in here.
        headers = None
        if faults.retry_after is not None:
            headers = {"Retry-After": _retry_after_value(faults.retry_after)}
        return json_response(429, {"message": "You are being rate limited."}, headers), "429"
    if draw_5xx < faults.rate_5xx:
        return json_response(faults.error_status, error_id_body()), "5xx"
    if route == "/applications/token":
        if faults.token_failures > 0:
            faults.token_failures -= 1
            return json_response(502, error_id_body()), "token_failure"
    elif draw_malformed < faults.malformed_rate:
        return _malformed(state, request.method, route), "malformed"
    return None


def _basic_ok(state: SimState, header: str) -> bool:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{state.options.username}:{state.options.password}".encode()
    return hmac.compare_digest(decoded, expected)


def _basic_challenge() -> web.Response:
    # nginx (airbyte-proxy) answered with an HTML page; a JSON invalid-api-key problem is used
    # instead so every error body stays machine-readable and inside the documented shapes.
    return json_response(
        401,
        invalid_api_key("Basic credentials are missing or wrong."),
        {"WWW-Authenticate": 'Basic realm="Airbyte"'},
    )


def _authorize(state: SimState, request: web.Request) -> web.Response | None:
    mode = state.options.auth
    header = request.headers.get("Authorization", "")
    if mode == "none":
        return None
    if mode == "basic":
        return None if _basic_ok(state, header) else _basic_challenge()
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return json_response(401, invalid_api_key("Missing bearer token."))
    if not state.tokens.is_valid(token):
        return json_response(401, invalid_api_key("Invalid or expired access token."))
    return None


async def _process(
    state: SimState, request: web.Request, call: Call, route: str | None
) -> web.Response:
    if route is None:
        return json_response(404, _micronaut_error("Page Not Found", request.path))
    if route != "/health":
        faulted = _inject_faults(state, request, route)
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
            denied = _authorize(state, request)
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
    try:
        response = await _process(state, request, call, route)
    except ProblemError as exc:
        response = exc.response()
    except _Dropped as exc:
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
            fault=_fault_label(call.faults),
        )
    )
    return response


def _fault_label(faults: set[str]) -> str | None:
    # At most one fault is injected per request; a slow POST can also carry an odd status,
    # and then the broken body is what matters.
    if not faults:
        return None
    if len(faults) > 1:
        faults = faults - {"slow_post"}
    return min(faults)


# -- control routes (not part of Airbyte; never recorded, faulted or authenticated) ---------


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
    return json_response(200, request.app[STATE_KEY].stats())


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


def build_app(state: SimState) -> web.Application:
    app = web.Application()
    app[STATE_KEY] = state
    app.router.add_get("/_simulator/stats", _stats)
    app.router.add_post("/_simulator/faults", _set_faults)
    app.router.add_post("/_simulator/connections/{connectionId}", _set_connection)
    app.router.add_post("/_simulator/script", _script)
    app.router.add_post("/_simulator/start-job", _start_job)
    app.router.add_post("/_simulator/expire-tokens", _expire_tokens)
    app.router.add_route("*", "/{tail:.*}", _api)
    return app
