"""Requests that web pages send to the worker are refused.

A browser lets any page send a "simple" request (a form post, or ``fetch`` in ``no-cors`` mode)
to any address, loopback included, with no token: against a worker without one, that is enough
to trigger syncs. Browsers say where such a request comes from (``Origin``, ``Sec-Fetch-Site``),
and scripts and the command line send neither; so a request that changes something is refused
unless it comes from the worker's own origin or from no page at all. A page can also make its own
name resolve to 127.0.0.1 (DNS rebinding) and so look same-origin: a worker without a token
answers only requests addressed to a loopback name.

Bodies must also be declared ``application/json`` (``routes.py``): no simple request can say so.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from airbyte_fleet.service.errors import CrossSiteError, NotLoopbackError
from airbyte_fleet.service.options import is_loopback

__all__ = ["SAFE_METHODS", "origin_middleware", "sent_by_own_page"]

# Methods that change nothing; a page cannot read their answers without CORS, which is not served.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Sec-Fetch-Site values of requests a page of another origin did not send ("none": the user
# typed the address).
OWN_SITES = frozenset({"same-origin", "none"})


def origin_middleware(*, loopback_only: bool) -> Middleware:
    """Refuse (:class:`CrossSiteError`) a request that changes something and was sent by a page of
    another origin; with *loopback_only* (a worker without a token), refuse
    (:class:`NotLoopbackError`) every request addressed to a name that is not loopback."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get(hdrs.HOST)
        if loopback_only and host is not None and not is_loopback(_hostname(host)):
            raise NotLoopbackError
        if request.method not in SAFE_METHODS and _from_another_site(request, host):
            raise CrossSiteError
        return await handler(request)

    return guard


def _hostname(host: str) -> str:
    """The name in a ``Host`` header (``[::1]:8080`` -> ``::1``); '' when it is not one."""
    try:
        return urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return ""


def _from_another_site(request: web.Request, host: str | None) -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in OWN_SITES:
        return True
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return False
    try:
        # Scheme aside: behind a TLS proxy the page says https and the worker hears http.
        sent_from = urlsplit(origin.strip()).netloc.lower()
    except ValueError:
        return True
    return host is None or sent_from != host.strip().lower()


def sent_by_own_page(request: web.Request) -> bool:
    """Whether a browser says the request comes from one of the worker's own pages: stricter than
    :func:`origin_middleware`, which lets a request that names no page at all (a script's) pass.
    For a request authenticated by a cookie, which a browser attaches whoever asks."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() != "same-origin":
        return False
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        # Browsers send Origin with every request that is not a GET or HEAD; without it, only
        # a same-origin Sec-Fetch-Site vouches for the page.
        return site is not None
    return not _from_another_site(request, request.headers.get(hdrs.HOST))
