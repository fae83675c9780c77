"""Authentication for the worker's API: the bearer token, or a browser's session cookie.

A script sends ``Authorization: Bearer <token>``. A browser logs in once (``POST /login`` with the
token) and then sends the session cookie (``session_cookie.py``), which ``EventSource`` can carry
where it cannot carry a header. A cookie travels with every request the browser makes, whichever
page asked for it, so a request that changes something and is authenticated by the cookie alone
must come from the worker's own page (``origin.py``): ``SameSite=Strict`` says the same, and this
holds where a browser or a proxy in between does not honour it.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from airbyte_fleet.service.errors import CrossSiteError, LoginRequiredError, UnauthenticatedError
from airbyte_fleet.service.origin import SAFE_METHODS, sent_by_own_page
from airbyte_fleet.service.session_cookie import COOKIE_NAME, SessionCookies

__all__ = [
    "OPEN_PATHS",
    "OPEN_PREFIXES",
    "UI_PREFIX",
    "auth_middleware",
    "token_matches",
    "token_text_matches",
]

# Probes and scrapers carry no credentials, and none of these routes reveals anything about runs;
# logging in and out needs no session, and the login page none either.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/login", "/logout", "/ui/login"})
# The web page's own scripts and styles: the same for everyone, with nothing of any run in them.
OPEN_PREFIXES = ("/ui/static/",)
# The web page: without credentials it sends the browser to the login form, not a JSON 401.
UI_PREFIX = "/ui"


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries *token*, compared in constant time."""
    scheme, _, given = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        # Still compare, so a missing scheme costs the same time as a wrong token.
        given = ""
    return token_text_matches(given.strip(), token)


def token_text_matches(given: str, token: str) -> bool:
    """Whether *given* is *token*, compared in constant time."""
    # As bytes, encoded so that nothing fails: aiohttp hands over header bytes that are not
    # UTF-8 as surrogate escapes (which then never equal a token: tokens are printable ASCII).
    return hmac.compare_digest(_raw(given), _raw(token))


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _is_open(path: str, open_paths: Collection[str]) -> bool:
    return path in open_paths or path.startswith(OPEN_PREFIXES)


def _is_page(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def auth_middleware(
    token: str | None,
    cookies: SessionCookies | None = None,
    open_paths: Collection[str] = OPEN_PATHS,
) -> Middleware:
    """Refuse every request to a path outside *open_paths* that lacks the token or a valid session
    cookie (:class:`UnauthenticatedError`, a 401; a page of the UI: :class:`LoginRequiredError`,
    a redirect to the login form). A request authenticated by its cookie alone that changes
    something and does not come from the worker's own page is refused (:class:`CrossSiteError`).

    With no token (allowed on a loopback bind only) every request passes.
    """

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is None or _is_open(request.path, open_paths):
            return await handler(request)
        header = request.headers.get("Authorization")
        if header is not None:
            # A script's request: the header decides, whatever cookie came with it.
            if not token_matches(header, token):
                raise UnauthenticatedError(missing=False)
            return await handler(request)
        if cookies is not None and cookies.valid(request.cookies.get(COOKIE_NAME)):
            if request.method not in SAFE_METHODS and not sent_by_own_page(request):
                raise CrossSiteError
            return await handler(request)
        if _is_page(request.path) and request.method in SAFE_METHODS:
            raise LoginRequiredError(quote(request.path_qs, safe="/"))
        raise UnauthenticatedError(missing=True)

    return authenticate
