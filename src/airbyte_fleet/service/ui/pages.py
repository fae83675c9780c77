"""The pages of ``/ui`` and their files, and the headers every answer of the worker carries.

Each page is a static HTML file; its script reads what it shows from the API (runs, the event
stream, schedules) with the browser's session cookie. The auth middleware sends a browser without
one to ``/ui/login``.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE_ROUTES", "STATIC_DIR", "security_headers"]

STATIC_DIR = Path(__file__).resolve().parent / "static"

# Nothing from another origin, no inline script or style, no eval, never in a frame.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

PAGE_ROUTES = web.RouteTableDef()


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, the API's too: a JSON answer opened as a page is no page either."""
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/ui"):
        # Always asked again (an unchanged file is a 304): a new version of the worker brings new
        # scripts under the same names.
        response.headers.setdefault("Cache-Control", "no-cache")


def _page(name: str) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / name)


@PAGE_ROUTES.get("/ui")
async def runs_page(request: web.Request) -> web.StreamResponse:
    return _page("runs.html")


@PAGE_ROUTES.get("/ui/")
async def runs_page_slash(request: web.Request) -> web.StreamResponse:
    return _page("runs.html")


@PAGE_ROUTES.get("/ui/runs/{run_id}")
async def run_page(request: web.Request) -> web.StreamResponse:
    return _page("run.html")


@PAGE_ROUTES.get("/ui/schedules")
async def schedules_page(request: web.Request) -> web.StreamResponse:
    return _page("schedules.html")


@PAGE_ROUTES.get("/ui/login")
async def login_page(request: web.Request) -> web.StreamResponse:
    return _page("login.html")


PAGE_ROUTES.static("/ui/static", STATIC_DIR, append_version=False)
