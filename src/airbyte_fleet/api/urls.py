"""Turn whatever URL a user pasted into the base of Airbyte's public API, and say what we understood.

Airbyte serves the same public API at three places: Cloud at ``https://api.airbyte.com/v1``,
self-managed servers ≥ 0.59 at ``<host>:8000|8001/api/public/v1``, and the old standalone API server at
``<host>:8006/v1`` (health at the root there). Users paste any of these, with or without the path.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from airbyte_fleet.api._waiting import PROBE_HINT, say_waiting, when_slow
from airbyte_fleet.api.errors import UnreachableError
from airbyte_fleet.errors import ConfigError

__all__ = ["CLOUD_BASE_URL", "ApiUrl", "UrlPlan", "plan_url", "resolve_url"]

CLOUD_BASE_URL = "https://api.airbyte.com/v1"
CLOUD_HOST = "api.airbyte.com"
PUBLIC_PATH = "/api/public/v1"
LEGACY_PATH = "/v1"

Layout = Literal["cloud", "public", "legacy"]

# OpenSSL's reasons when the answer to a ClientHello is not TLS at all (an HTTP response).
_PLAIN_HTTP_REASONS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "RECORD_LAYER_FAILURE"})

# Host names, IPv4 and (bracket-less, as urlsplit returns them) IPv6 addresses.
_HOST = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?|[0-9a-f:.]+", re.IGNORECASE)


@dataclass(frozen=True)
class ApiUrl:
    """A resolved API base: requests go to ``base + "/jobs"`` and so on."""

    base: str
    layout: Layout
    health_url: str
    explanation: str

    @property
    def is_cloud(self) -> bool:
        return self.layout == "cloud"

    @property
    def token_url(self) -> str:
        return f"{self.base}/applications/token"


@dataclass(frozen=True)
class UrlPlan:
    """What a raw URL can mean; more than one candidate means we must ask the server."""

    raw: str
    source: str
    candidates: tuple[ApiUrl, ...]

    @property
    def ambiguous(self) -> bool:
        return len(self.candidates) > 1


def _candidate(root: str, prefix: str, layout: Layout, why: str) -> ApiUrl:
    base = f"{root}{prefix}{PUBLIC_PATH if layout == 'public' else LEGACY_PATH}"
    # The standalone server (8006) answers health at its root, outside /v1; Cloud and the
    # self-managed public API answer it under the base.
    health = f"{root}{prefix}/health" if layout == "legacy" else f"{base}/health"
    return ApiUrl(base=base, layout=layout, health_url=health, explanation=why)


def plan_url(raw: str | None, *, source: str = "AIRBYTE_BASE_URL") -> UrlPlan:
    """Interpret *raw* without touching the network.

    Raises :class:`ConfigError` with one sentence naming the fix when *raw* cannot be a URL of
    Airbyte's public API.
    """
    if raw is None or not raw.strip():
        cloud = ApiUrl(
            base=CLOUD_BASE_URL,
            layout="cloud",
            health_url=f"{CLOUD_BASE_URL}/health",
            explanation=f"no AIRBYTE_BASE_URL set: using Airbyte Cloud at {CLOUD_BASE_URL}",
        )
        return UrlPlan(raw="", source=source, candidates=(cloud,))
    text = raw.strip()
    authority = text.split("://", 1)[-1].split("/", 1)[0]
    if "@" in authority:
        # Checked first and never echoed: the part before "@" is usually a password.
        raise ConfigError(
            f"{source} must not carry credentials; set AIRBYTE_USERNAME and AIRBYTE_PASSWORD "
            "instead."
        )
    if "://" not in text:
        raise ConfigError(
            f"{source} '{text}' has no scheme; write it as http://{text} or https://{text}."
        )
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ConfigError(f"{source} '{text}' is not a valid URL ({exc}).") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"{source} '{text}' uses the scheme '{parts.scheme}'; Airbyte's API needs http:// "
            "or https://."
        )
    if not parts.hostname:
        raise ConfigError(f"{source} '{text}' has no host name; write it like http://host:8000.")
    if not _HOST.fullmatch(parts.hostname):
        raise ConfigError(
            f"{source} '{text}' has the host '{parts.hostname}', which is not a valid host name."
        )
    if parts.username or parts.password:
        raise ConfigError(
            f"{source} must not carry credentials; set AIRBYTE_USERNAME and AIRBYTE_PASSWORD "
            "instead."
        )
    try:
        port = parts.port
    except ValueError:
        port_text = parts.netloc.rsplit(":", 1)[-1]
        raise ConfigError(
            f"{source} '{text}' has the port '{port_text}', which is not a number from 1 to 65535."
        ) from None
    if port == 0:
        raise ConfigError(f"{source} '{text}' has port 0; use the port Airbyte listens on.")
    if parts.query or parts.fragment:
        raise ConfigError(
            f"{source} '{text}' has a query or fragment; give only scheme, host, port and path."
        )

    root = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
    path = re.sub(r"/{2,}", "/", parts.path).rstrip("/")
    host = parts.hostname.lower()
    shown = f"{root}{path}"

    def one(prefix: str, layout: Layout, why: str) -> UrlPlan:
        return UrlPlan(raw=text, source=source, candidates=(_candidate(root, prefix, layout, why),))

    if path.endswith(PUBLIC_PATH):
        return one(path[: -len(PUBLIC_PATH)], "public", f"{shown}: the public API as given")
    if path.endswith("/api/v1"):
        fixed = f"{root}{path[: -len('/api/v1')]}{PUBLIC_PATH}"
        raise ConfigError(
            f"{source} '{text}' points at Airbyte's internal Configuration API; airbyte-fleet uses "
            f"the public API, so set {source}={fixed}."
        )
    if path.endswith("/api/public"):
        return one(
            path[: -len("/api/public")], "public", f"{shown}: added /v1 to the public API path"
        )
    if path.endswith(LEGACY_PATH):
        prefix = path[: -len(LEGACY_PATH)]
        if host == CLOUD_HOST:
            cloud = ApiUrl(
                base=f"{root}{path}",
                layout="cloud",
                health_url=f"{root}{path}/health",
                explanation=f"{shown}: Airbyte Cloud",
            )
            return UrlPlan(raw=text, source=source, candidates=(cloud,))
        return one(prefix, "legacy", f"{shown}: the standalone API server's /v1 as given")

    if host == CLOUD_HOST and not path:
        cloud = ApiUrl(
            base=CLOUD_BASE_URL if root == "https://api.airbyte.com" else f"{root}/v1",
            layout="cloud",
            health_url=f"{root}/v1/health",
            explanation=f"{shown}: Airbyte Cloud, added /v1",
        )
        return UrlPlan(raw=text, source=source, candidates=(cloud,))
    if not path and port == 8006:
        return one("", "legacy", f"{shown}: port 8006 is the standalone API server, added /v1")
    if not path and port in (8000, 8001):
        return one("", "public", f"{shown}: port {port} serves the public API, added {PUBLIC_PATH}")
    # A host behind a proxy or on another port: both layouts are possible, so ask the server.
    return UrlPlan(
        raw=text,
        source=source,
        candidates=(
            _candidate(root, path, "public", f"{shown}: found the public API at {PUBLIC_PATH}"),
            _candidate(
                root, path, "legacy", f"{shown}: found the standalone API server at {LEGACY_PATH}"
            ),
        ),
    )


async def resolve_url(
    plan: UrlPlan,
    session: aiohttp.ClientSession,
    *,
    probe_timeout: float = 10.0,
    notice_after: float = 2.0,
) -> ApiUrl:
    """Pick the candidate that answers ``GET <health>``; a single candidate is taken as is.

    A candidate that stays silent past *notice_after* seconds gets a line saying what is waited
    for and for how long (*probe_timeout*), so a hung server is not silence.
    """
    if not plan.ambiguous:
        return plan.candidates[0]
    tried: list[str] = []
    answered = False
    for candidate in plan.candidates:
        say = functools.partial(
            say_waiting,
            "GET /health (looking for Airbyte's API)",
            candidate.health_url,
            waited_s=notice_after,
            hint=PROBE_HINT,
            timeout_s=probe_timeout,
        )
        try:
            with when_slow(notice_after, say):
                async with session.get(
                    candidate.health_url,
                    timeout=aiohttp.ClientTimeout(total=probe_timeout),
                    allow_redirects=False,
                ) as response:
                    await response.read()
                answered = True
                if response.status == 200:
                    return candidate
                tried.append(f"{candidate.health_url} (HTTP {response.status})")
        except (aiohttp.ClientError, TimeoutError) as exc:
            tried.append(f"{candidate.health_url} ({describe_transport_error(exc)})")
    listing = " and ".join(tried)
    if answered:
        raise ConfigError(
            f"Airbyte's API answered at none of {listing}; set {plan.source} to the API's full "
            f"URL, e.g. {plan.candidates[0].base}."
        )
    raise UnreachableError(
        f"Could not reach Airbyte at {listing}; check {plan.source} and that the server is up."
    )


def describe_transport_error(exc: BaseException) -> str:
    """A few words for a failed connection, without aiohttp's multi-line reprs."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        why = getattr(exc.certificate_error, "verify_message", None) or "not trusted"
        return f"the TLS handshake failed: the server's certificate was refused ({why})"
    if isinstance(exc, aiohttp.ClientSSLError):
        # Before ClientConnectorError, which it also is: its errno (1, SSL_ERROR_SSL) would read
        # as "operation not permitted".
        reason = getattr(exc.os_error, "reason", None)
        if reason in _PLAIN_HTTP_REASONS:
            return (
                "the TLS handshake failed: the server does not speak TLS; if it serves plain "
                "HTTP, write the URL with http://"
            )
        return f"the TLS handshake failed ({reason or 'no reason given'})"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        errno = exc.os_error.errno
        reason = os.strerror(errno) if errno else type(exc.os_error).__name__
        return reason.lower()
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "connection closed without an answer"
    if isinstance(exc, aiohttp.ClientOSError):
        return (exc.strerror or "connection error").lower()
    return type(exc).__name__
