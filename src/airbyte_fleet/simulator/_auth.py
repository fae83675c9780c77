"""Who may call the API: bearer tokens, HTTP Basic, or nobody checked, per ``--auth``."""

from __future__ import annotations

import base64
import binascii
import hmac

from aiohttp import web

from ._problems import invalid_api_key, json_response
from ._state import SimState

__all__ = ["authorize"]


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


def authorize(state: SimState, request: web.Request) -> web.Response | None:
    """The 401 answer for a request without valid credentials, or None to let it through."""
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
