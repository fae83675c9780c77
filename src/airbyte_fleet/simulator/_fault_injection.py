"""Deliberate faults, applied to an API request before any handler runs.

The knobs live in ``Faults`` (``_options``); this module draws against them for each request and
answers in its place: a 429, a 5xx, a failed token request, a truncated body, or a dropped
connection. Because the answer comes before any handler, nothing is created by a faulted request.
"""

from __future__ import annotations

from typing import NoReturn

from aiohttp import web

from ._problems import error_id_body, json_response
from ._state import SimState

__all__ = ["Dropped", "fault_label", "inject_faults"]

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


class Dropped(Exception):
    """The connection was closed on purpose; there is no response to send."""

    def __init__(self, fault: str) -> None:
        super().__init__(fault)
        self.fault = fault


def _drop(request: web.Request, *, fault: str) -> NoReturn:
    transport = request.transport
    if transport is not None:
        # abort() sends an RST (a "reset"); close() a clean FIN, like a server going away.
        if fault == "reset":
            transport.abort()
        else:
            transport.close()
    raise Dropped(fault)


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


def inject_faults(
    state: SimState, request: web.Request, route: str
) -> tuple[web.Response, str] | None:
    """The injected answer and its fault label, or None to let the request through.

    Raises ``Dropped`` after closing the connection for the ``reset`` and ``down`` faults.
    """
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


def fault_label(faults: set[str]) -> str | None:
    """The one label an exchange carries (``Exchange.fault``), from the faults of its answer."""
    # At most one fault is injected per request; a slow POST can also carry an odd status,
    # and then the broken body is what matters.
    if not faults:
        return None
    if len(faults) > 1:
        faults = faults - {"slow_post"}
    return min(faults)
