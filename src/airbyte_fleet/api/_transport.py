"""How one request reaches Airbyte and what its answer means, whatever the endpoint.

One ``aiohttp.ClientSession`` per client (pooled connections, explicit timeouts), the :class:`Auth`
flow (headers before each request; on 401 one refresh and one replay, never a loop), the mapping of
statuses and transport failures onto :mod:`airbyte_fleet.api.errors`, retries with stamina on
what is safe to retry: transport errors, 408, 429, 502, 503, 504, and 500 on reads, and a line
saying what is waited for when Airbyte stays silent (:mod:`airbyte_fleet.api._waiting`).

Which requests may be repeated is the caller's word (``idempotent``), never a route test here: a
request that is not idempotent is not retried once it may have reached Airbyte, and an unclear
answer to it raises :class:`TriggerOutcomeUnknownError`. The only endpoint this module knows is the
token request, because the auth flow needs it before any other request can be sent.
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NamedTuple

import aiohttp
import stamina
from pydantic import SecretStr

from airbyte_fleet._logging import get_logger
from airbyte_fleet._version import __version__
from airbyte_fleet.api._waiting import REQUEST_HINT, say_waiting, when_slow
from airbyte_fleet.api.auth import Auth, TokenGrant
from airbyte_fleet.api.errors import (
    AirbyteError,
    AlreadyRunningError,
    AuthError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    Problem,
    RateLimitedError,
    ServerError,
    TransportError,
    TriggerOutcomeUnknownError,
)
from airbyte_fleet.api.urls import describe_transport_error

__all__ = [
    "Answer",
    "RequestStats",
    "RetryPolicy",
    "Timeouts",
    "Transport",
    "probe_session",
    "retry_decision",
]

log = get_logger("airbyte_fleet.api")

MAX_RETRY_AFTER = 300.0
# How an unclear answer to a request that is not idempotent ends its message, unless the caller
# can say more precisely what may have happened.
UNCLEAR = "the request may or may not have taken effect"


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``read`` is generous because ``POST /jobs`` may block until the job id exists (≤ 60 s).

    ``notice`` is how long a request may go without an answer before a line says what it waits for
    and for how long (once per stall: see :meth:`Transport.send`).
    """

    connect: float = 10.0
    read: float = 120.0
    notice: float = 2.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    timeout: float = 300.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0


@dataclass
class RequestStats:
    """What this client sent, by (method, route template, status); status 0 is a transport failure."""

    requests: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    retries: int = 0
    replays_after_401: int = 0

    @property
    def total(self) -> int:
        return sum(self.requests.values())

    def count(self, method: str | None = None, route: str | None = None) -> int:
        return sum(
            n
            for (m, r, _), n in self.requests.items()
            if (method is None or m == method) and (route is None or r == route)
        )


class Answer(NamedTuple):
    """One HTTP answer, whatever its status."""

    status: int
    body: bytes
    headers: Mapping[str, str]


class _SendFailedError(TransportError):
    """The request never left (connect failed): safe to retry even when it is not idempotent."""


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def retry_decision(exc: Exception, *, idempotent: bool) -> bool | float:
    """stamina's backoff hook: ``False`` to give up, ``True`` for jittered backoff, seconds to wait."""
    if isinstance(exc, RateLimitedError):
        return exc.retry_after if exc.retry_after is not None else True
    if isinstance(exc, ServerError):
        # A 5xx after a non-idempotent request leaves its outcome unknown: never repeat it blindly.
        if idempotent and exc.status in (500, 502, 503, 504):
            return exc.retry_after if exc.retry_after is not None else True
        return False
    if isinstance(exc, _SendFailedError):
        return True
    if isinstance(exc, TransportError) and not isinstance(exc, TriggerOutcomeUnknownError):
        return idempotent or exc.status == 408
    return False


def probe_session(timeouts: Timeouts) -> aiohttp.ClientSession:
    """A short-lived session for probing where the API is, before the pooled one exists."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(connect=timeouts.connect, sock_read=timeouts.read)
    )


class Transport:
    """Sends requests to one Airbyte for one client: the pool, the auth flow, retries, statistics."""

    def __init__(
        self,
        auth: Auth,
        *,
        timeouts: Timeouts,
        retry: RetryPolicy,
        max_connections: int,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.auth = auth
        self.timeouts = timeouts
        self.retry = retry
        self.stats = RequestStats()
        self.max_connections = max_connections
        # Seconds the server's clock is ahead of ours (from its Date header), for time filters.
        self.server_clock_offset: float | None = None
        self._session = session
        self._owns_session = session is None
        # When Airbyte last answered anything, and whether the stall since then was logged.
        self._last_answer = float("-inf")
        self._stall_logged = False

    def open(self) -> None:
        self._ensure_session()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, limit_per_host=self.max_connections
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # sock_connect, not connect: waiting for a free pooled connection (10,000 syncs
                # share 100) is not a failure to reach Airbyte, and must not time out a trigger.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeouts.connect, sock_read=self.timeouts.read
                ),
                headers={"User-Agent": f"airbyte-fleet/{__version__}"},
                raise_for_status=False,
            )
            self._owns_session = True
        return self._session

    def _learn_server_clock(self, date: str | None) -> None:
        if not date:
            return
        try:
            server = parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return
        if server.tzinfo is None:
            return
        # The header has one-second resolution: round towards "server is behind", the safe side
        # for an updatedAtStart filter.
        self.server_clock_offset = (server - datetime.now(UTC)).total_seconds() - 1.0

    def attempts(self, *, idempotent: bool, what: str) -> AsyncIterator[stamina.Attempt]:
        """stamina's retry loop for one request, counting and logging every retry."""
        policy = self.retry
        stats = self.stats

        def hook(exc: Exception) -> bool | float:
            decision = retry_decision(exc, idempotent=idempotent)
            if decision is not False:
                stats.retries += 1
                log.info(
                    "airbyte_retry",
                    request=what,
                    reason=getattr(exc, "message", type(exc).__name__),
                    status=getattr(exc, "status", None),
                    wait_s=decision if not isinstance(decision, bool) else None,
                )
            return decision

        return stamina.retry_context(
            on=hook,
            attempts=policy.attempts,
            timeout=policy.timeout,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
            wait_jitter=policy.wait_jitter,
        )

    async def request(
        self,
        method: str,
        url: str,
        route: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        json_body: Any = None,
        idempotent: bool,
        unclear: str = UNCLEAR,
    ) -> Any:
        """An authenticated, retried request; its JSON body, or the error its answer means.

        *route* is the path template (``/jobs/{jobId}``) that statistics and messages name. When the
        request is not *idempotent*, *unclear* ends the message of an unclear answer.
        """
        send = functools.partial(
            self.send,
            method,
            url,
            route,
            query=query,
            json_body=json_body,
            idempotent=idempotent,
            unclear=unclear,
        )
        once = functools.partial(self._answer, send, method, url, route, idempotent, unclear)
        # The first try outside any retry policy: nearly every request succeeds at once, and a
        # policy's state (stamina's context, tenacity's machinery) costs more than the request's
        # own bookkeeping. Only a try that failed in a way worth retrying enters the policy, which
        # counts it, logs it and waits before the next, exactly as if it had been made there.
        try:
            return await once()
        except Exception as exc:
            if retry_decision(exc, idempotent=idempotent) is False:
                raise
            failed: Exception | None = exc
        async for attempt in self.attempts(idempotent=idempotent, what=f"{method} {route}"):
            with attempt:
                if failed is not None:
                    first, failed = failed, None
                    raise first
                return await once()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _answer(
        self,
        send: Callable[..., Awaitable[Answer]],
        method: str,
        url: str,
        route: str,
        idempotent: bool,
        unclear: str,
    ) -> Any:
        """One authenticated try (a 401 replayed once with a fresh token): its JSON body, or the
        error its answer means."""
        headers = await self.auth.headers(self)
        answer = await send(headers=headers)
        if answer.status == 401 and await self.auth.refresh_after_401(self, headers):
            self.stats.replays_after_401 += 1
            headers = await self.auth.headers(self)
            answer = await send(headers=headers)
        if not 200 <= answer.status < 300:
            raise self.error(answer, method, url, route)
        try:
            return json.loads(answer.body) if answer.body else None
        except ValueError:
            if not idempotent:
                happened = f"Airbyte answered {method} {route} with a body that is not JSON"
                raise TriggerOutcomeUnknownError(
                    f"{happened}; {unclear}.",
                    happened=happened,
                    status=answer.status,
                    method=method,
                ) from None
            # A truncated or garbled body on a read is worth another try.
            raise ServerError(
                f"Airbyte answered {method} {route} with a body that is not JSON.",
                status=502,
                method=method,
            ) from None

    async def send(
        self,
        method: str,
        url: str,
        route: str,
        *,
        headers: Mapping[str, str] | None = None,
        query: Sequence[tuple[str, str]] = (),
        json_body: Any = None,
        idempotent: bool = True,
        unclear: str = UNCLEAR,
    ) -> Answer:
        """One request, once: its answer whatever the status, or the transport failure it met."""
        session = self._ensure_session()
        stalled = functools.partial(self._log_stall, f"{method} {route}", url, time.monotonic())
        try:
            with when_slow(self.timeouts.notice, stalled):
                async with session.request(
                    method,
                    url,
                    params=list(query) if query else None,
                    json=json_body,
                    headers=dict(headers or {}),
                    allow_redirects=False,
                ) as response:
                    body = await response.read()
            self._last_answer = time.monotonic()
            self._stall_logged = False
            self.stats.requests[(method, route, response.status)] += 1
            if self.server_clock_offset is None:
                self._learn_server_clock(response.headers.get("Date"))
            return Answer(response.status, body, response.headers)
        except (
            aiohttp.ClientConnectorError,
            aiohttp.ConnectionTimeoutError,
            aiohttp.InvalidURL,
        ) as exc:
            # Refused, unroutable, DNS: the request never reached Airbyte.
            self.stats.requests[(method, route, 0)] += 1
            raise _SendFailedError(
                f"{method} {route} could not connect: {describe_transport_error(exc)}",
                method=method,
                url=url,
            ) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.stats.requests[(method, route, 0)] += 1
            message = f"{method} {route} got no answer: {describe_transport_error(exc)}"
            if not idempotent:
                raise TriggerOutcomeUnknownError(
                    f"{message}; {unclear}.", happened=message, method=method, url=url
                ) from None
            raise TransportError(message, method=method, url=url) from None

    def _log_stall(self, request: str, url: str, began: float) -> None:
        # A slow answer while others keep coming is a busy pool or a slow endpoint, not a hung
        # Airbyte: say nothing then, and say it once per stall, not once per waiting request.
        if self._last_answer >= began or self._stall_logged:
            return
        self._stall_logged = True
        say_waiting(
            request,
            url,
            waited_s=self.timeouts.notice,
            hint=REQUEST_HINT,
            connect_timeout_s=self.timeouts.connect,
            read_timeout_s=self.timeouts.read,
        )

    # ----------------------------------------------------------------- token

    async def fetch_token(
        self, token_url: str, client_id: str, client_secret: SecretStr
    ) -> TokenGrant:
        """``POST <base>/applications/token``; retried on transport errors and 5xx."""
        # The spec's required list spells the grant `grant_type`; the server ignores it either way.
        body = {
            "client_id": client_id,
            "client_secret": client_secret.get_secret_value(),
            "grant_type": "client_credentials",
        }
        route = "/applications/token"
        async for attempt in self.attempts(idempotent=True, what=f"POST {route}"):
            with attempt:
                answer = await self.send("POST", token_url, route, json_body=body)
                if answer.status != 200:
                    raise self._token_error(answer, token_url)
        try:
            doc = json.loads(answer.body)
            token = doc["access_token"]
            if not isinstance(token, str) or not token:
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise AuthError(
                f"The token endpoint {token_url} answered without an access token; check that "
                "AIRBYTE_BASE_URL points at Airbyte's public API.",
                status=answer.status,
                url=token_url,
            ) from None
        expires = doc.get("expires_in")
        return TokenGrant(
            access_token=SecretStr(token),
            expires_in=float(expires) if isinstance(expires, int | float) else None,
        )

    def _token_error(self, answer: Answer, url: str) -> AirbyteError:
        status = answer.status
        problem = Problem.parse(status, answer.body)
        if status in (400, 401, 403):
            return AuthError(
                f"Airbyte rejected the client credentials (HTTP {status} from {url}); check "
                "AIRBYTE_CLIENT_ID and AIRBYTE_CLIENT_SECRET.",
                status=status,
                url=url,
                problem=problem,
            )
        if status in (404, 405):
            return AuthError(
                f"Airbyte has no token endpoint at {url} (HTTP {status}); servers before 1.0 use "
                "basic auth (set AIRBYTE_USERNAME and AIRBYTE_PASSWORD) or none "
                "(AIRBYTE_AUTH_TYPE=none).",
                status=status,
                url=url,
                problem=problem,
            )
        return self.error(answer, "POST", url, "/applications/token")

    # ----------------------------------------------------------------- statuses

    def error(self, answer: Answer, method: str, url: str, route: str) -> AirbyteError:
        """What a status other than 2xx means, as the error a caller can act on."""
        status = answer.status
        problem = Problem.parse(status, answer.body)
        where = f"{method} {route}"
        detail = f": {problem.text}" if problem.text else ""
        kw: dict[str, Any] = {"status": status, "method": method, "url": url, "problem": problem}
        if status in (400, 422):
            return BadRequestError(f"Airbyte refused {where} (HTTP {status}){detail}.", **kw)
        if status == 401 and self.auth.mode == "none":
            return AuthError(
                f"Airbyte requires credentials for {where} (HTTP 401); set AIRBYTE_CLIENT_ID and "
                "AIRBYTE_CLIENT_SECRET (or AIRBYTE_API_TOKEN, or AIRBYTE_USERNAME and "
                "AIRBYTE_PASSWORD).",
                **kw,
            )
        if status == 401:
            return AuthError(
                f"Airbyte refused the credentials on {where} (HTTP 401) even with a fresh "
                f"login; check the {self.auth.mode} credentials and their access.",
                **kw,
            )
        if status == 403:
            return AuthError(
                f"Airbyte does not allow {where} for these credentials (HTTP 403){detail}; "
                "give the application access to the workspace.",
                **kw,
            )
        if status == 404:
            return NotFoundError(
                f"Airbyte has no such resource for {where} (HTTP 404){detail}.", **kw
            )
        if status == 408:
            return TransportError(f"{where} timed out at the server (HTTP 408).", **kw)
        if status == 409:
            text = problem.text
            if problem.is_type("try-again-later") or "already running" in text.lower():
                connection = text.rsplit(":", 1)[-1].strip() if "running for:" in text else None
                return AlreadyRunningError(
                    f"A sync is already running for connection {connection or '?'} (HTTP 409).",
                    connection_id=connection,
                    **kw,
                )
            return ConflictError(f"Airbyte refused {where} (HTTP 409){detail}.", **kw)
        if status == 429:
            return RateLimitedError(
                f"Airbyte rate-limited {where} (HTTP 429).",
                retry_after=_retry_after(answer.headers),
                **kw,
            )
        if status >= 500:
            return ServerError(
                f"Airbyte failed on {where} (HTTP {status}){detail}.",
                retry_after=_retry_after(answer.headers),
                **kw,
            )
        return AirbyteError(f"Airbyte answered {where} with HTTP {status}{detail}.", **kw)
