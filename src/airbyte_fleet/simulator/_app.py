"""The aiohttp application: routing, fault injection, auth, recording and control routes."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from typing import Any

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


class _Dropped(Exception):
    """The connection was closed on purpose; there is no response to send."""


def _micronaut_error(message: str, path: str) -> dict[str, Any]:
    return {
        "message": message,
        "_links": {"self": {"href": path, "templated": False}},
        "_embedded": {"errors": [{"message": message}]},
    }


def _drop(request: web.Request, *, reset: bool) -> None:
    transport = request.transport
    if transport is not None:
        # abort() sends an RST (a "reset"); close() a clean FIN, like a server going away.
        if reset:
            transport.abort()
        else:
            transport.close()
    raise _Dropped


def _retry_after_value(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


def _inject_faults(state: SimState, request: web.Request, route: str) -> web.Response | None:
    faults = state.faults
    # Always draw three numbers so the fault sequence for a seed does not depend on which
    # rates are switched on.
    rng = state.fault_rng
    draw_reset, draw_429, draw_5xx = rng.random(), rng.random(), rng.random()
    window = faults.down_window
    if window is not None:
        elapsed = state.clock.now() - state.started_at
        if window[0] <= elapsed < window[1]:
            _drop(request, reset=False)
    if draw_reset < faults.reset_rate:
        _drop(request, reset=True)
    if draw_429 < faults.rate_429:
        # Airbyte's load shedder deliberately sends no Retry-After; it is opt-in here.
        headers = None
        if faults.retry_after is not None:
            headers = {"Retry-After": _retry_after_value(faults.retry_after)}
        return json_response(429, {"message": "You are being rate limited."}, headers)
    if draw_5xx < faults.rate_5xx:
        return json_response(faults.error_status, error_id_body())
    if route == "/applications/token" and faults.token_failures > 0:
        faults.token_failures -= 1
        return json_response(502, error_id_body())
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
            return faulted
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
    except _Dropped:
        dropped = True
        response = web.Response(status=_DROPPED_PLACEHOLDER)
    except Exception:
        # Mirrors Airbyte's UncaughtExceptionHandler; a bug here should still look like a 500.
        _log.exception("simulator handler failed for %s %s", request.method, request.path)
        response = json_response(500, error_id_body())
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
        )
    )
    return response


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
        script = JobScript(
            seconds=float(data.get("seconds", 1.0)),
            incomplete_attempts=int(data.get("incomplete_attempts", 0)),
            final=data.get("final", "succeeded"),
            pending_seconds=(
                None if data.get("pending_seconds") is None else float(data["pending_seconds"])
            ),
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
