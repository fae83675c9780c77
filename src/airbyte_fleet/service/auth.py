"""Bearer-token authentication for the worker's API."""

from __future__ import annotations

import hmac
from collections.abc import Collection

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from airbyte_fleet.service.errors import UnauthenticatedError

__all__ = ["OPEN_PATHS", "auth_middleware", "token_matches"]

# Probes and scrapers carry no credentials, and none of these routes reveals anything about runs.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries *token*, compared in constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        # Still compare, so a missing scheme costs the same time as a wrong token.
        given = ""
    # As bytes, encoded so that nothing fails: aiohttp hands over header bytes that are not
    # UTF-8 as surrogate escapes (which then never equal a token: tokens are printable ASCII).
    return hmac.compare_digest(_raw(given.strip()), _raw(token))


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def auth_middleware(token: str | None, open_paths: Collection[str] = OPEN_PATHS) -> Middleware:
    """Refuse every request to a path outside *open_paths* that lacks the token
    (:class:`UnauthenticatedError`, a 401).

    With no token (allowed on a loopback bind only) every request passes.
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None or request.path in open_paths:
            return await handler(request)
        if not token_matches(request.headers.get("Authorization"), token):
            raise UnauthenticatedError(missing="Authorization" not in request.headers)
        return await handler(request)

    return authenticate
