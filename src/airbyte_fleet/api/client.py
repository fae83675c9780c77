"""An asyncio client for Airbyte's public API.

One ``aiohttp.ClientSession`` per client (pooled connections, explicit timeouts), one :class:`Auth`
flow shared by every request, and retries with stamina on what is safe to retry: transport errors,
408, 429, 502, 503, 504, and 500 on reads. ``POST /jobs`` is never retried when its outcome is unclear:
it raises :class:`TriggerOutcomeUnknownError` so the caller can look for the job before trying again.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp
import stamina
import structlog
from pydantic import BaseModel, SecretStr, ValidationError

from airbyte_fleet import __version__
from airbyte_fleet.api.auth import Auth, TokenGrant
from airbyte_fleet.api.errors import (
    AirbyteError,
    AlreadyRunningError,
    AuthError,
    BadRequestError,
    ConflictError,
    InactiveConnectionError,
    NotFoundError,
    Problem,
    RateLimitedError,
    ServerError,
    TransportError,
    TriggerOutcomeUnknownError,
    UnreachableError,
)
from airbyte_fleet.api.models import Connection, Job, JobType, Page, Workspace
from airbyte_fleet.api.urls import ApiUrl, UrlPlan, describe_transport_error, resolve_url
from airbyte_fleet.errors import ConfigError

__all__ = ["AirbyteClient", "RequestStats", "RetryPolicy", "Timeouts"]

log = structlog.get_logger("airbyte_fleet.api")

M = TypeVar("M", bound=BaseModel)
ParamValue = str | int | bool | datetime | Sequence[str] | None

PAGE_LIMIT = 100  # the API's maximum page size
JOB_PAGE_OVERLAP = 10  # see _all_pages: job lists move while they are read
MAX_PAGES = 100_000  # a server that ignores `offset` must not make us loop forever
MAX_RETRY_AFTER = 300.0


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``read`` is generous because ``POST /jobs`` may block until the job id exists (≤ 60 s)."""

    connect: float = 10.0
    read: float = 120.0


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


class _SendFailedError(TransportError):
    """The request never left (connect failed): safe to retry even for ``POST /jobs``."""


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


def _param_items(params: Mapping[str, ParamValue]) -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            items.append((key, "true" if value else "false"))
        elif isinstance(value, datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=UTC)
            items.append((key, moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")))
        elif isinstance(value, str | int):
            items.append((key, str(value)))
        else:
            # The spec's array parameters are form/explode: one key=value pair per element.
            items.extend((key, str(v)) for v in value)
    return items


class AirbyteClient:
    """Talks to one Airbyte; use as ``async with AirbyteClient(...) as client``."""

    def __init__(
        self,
        api: ApiUrl,
        auth: Auth,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        max_connections: int = 100,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.api = api
        self.auth = auth
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.stats = RequestStats()
        self.max_connections = max_connections
        # Seconds the server's clock is ahead of ours (from its Date header), for time filters.
        self.server_clock_offset: float | None = None
        self._session = session
        self._owns_session = session is None

    @classmethod
    async def open(
        cls,
        url: UrlPlan | ApiUrl,
        auth: Auth | Callable[[ApiUrl], Auth],
        **kwargs: Any,
    ) -> AirbyteClient:
        """Resolve *url* (probing ``/health`` when the layout is ambiguous) and build the client."""
        if isinstance(url, ApiUrl):
            api = url
        else:
            timeouts: Timeouts = kwargs.get("timeouts") or Timeouts()
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(connect=timeouts.connect, sock_read=timeouts.read)
            ) as probe:
                api = await resolve_url(url, probe, probe_timeout=timeouts.connect)
        return cls(api, auth if isinstance(auth, Auth) else auth(api), **kwargs)

    async def __aenter__(self) -> Self:
        self._ensure_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

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

    def server_now(self) -> datetime:
        """Our best estimate of the server's current time."""
        return datetime.now(UTC) + timedelta(seconds=self.server_clock_offset or 0.0)

    # ----------------------------------------------------------------- operations

    async def health(self) -> None:
        """``GET /health`` without credentials; raises if Airbyte is not there or not healthy."""
        status, body, _ = await self._raw("GET", self.api.health_url, "/health", {}, None, None)
        if status == 200:
            return
        if status in (404, 405):
            raise ConfigError(
                f"Airbyte's API is not at {self.api.base} (HTTP {status} from "
                f"{self.api.health_url}); set AIRBYTE_BASE_URL to the API's full URL, e.g. "
                "http://host:8000/api/public/v1."
            )
        raise ServerError(
            f"Airbyte at {self.api.base} is not healthy (HTTP {status} from /health); "
            "check the server's status and try again.",
            status=status,
            url=self.api.health_url,
            problem=Problem.parse(status, body),
        )

    async def check(self) -> None:
        """Health, then an authenticated read: proves the URL and the credentials before any work."""
        try:
            await self.health()
        except TransportError as exc:
            raise UnreachableError(
                f"Could not reach Airbyte at {self.api.base} ({exc.message}); check "
                "AIRBYTE_BASE_URL and that the server is up.",
                url=self.api.health_url,
            ) from None
        await self._call("GET", "/workspaces", params={"limit": 1}, idempotent=True)

    async def create_job(self, connection_id: str, job_type: JobType | str = JobType.SYNC) -> Job:
        """``POST /jobs``. Never retried once it may have reached Airbyte."""
        body = {"connectionId": connection_id, "jobType": str(job_type)}
        try:
            data = await self._call("POST", "/jobs", json_body=body, idempotent=False)
        except (TriggerOutcomeUnknownError, AuthError, ConflictError, NotFoundError):
            raise
        except ServerError as exc:
            raise TriggerOutcomeUnknownError(
                f"Airbyte answered POST /jobs for connection {connection_id} with HTTP "
                f"{exc.status}; the job may or may not have been created.",
                status=exc.status,
                method="POST",
                url=exc.url,
                problem=exc.problem,
            ) from exc
        try:
            return Job.model_validate(data)
        except ValidationError:
            raise TriggerOutcomeUnknownError(
                f"Airbyte answered POST /jobs for connection {connection_id} with a body that is "
                "not a job; the job may or may not have been created.",
                method="POST",
                status=200,
            ) from None

    async def get_job(self, job_id: int) -> Job:
        return await self._model(Job, "GET", f"/jobs/{int(job_id)}", route="/jobs/{jobId}")

    async def cancel_job(self, job_id: int) -> Job:
        """``DELETE /jobs/{id}``: cancelling twice is harmless, so it is retried like a read."""
        return await self._model(Job, "DELETE", f"/jobs/{int(job_id)}", route="/jobs/{jobId}")

    async def list_jobs_page(
        self,
        *,
        connection_id: str | None = None,
        workspace_ids: Sequence[str] | None = None,
        job_type: JobType | str | None = None,
        status: str | None = None,
        created_at_start: datetime | None = None,
        created_at_end: datetime | None = None,
        updated_at_start: datetime | None = None,
        updated_at_end: datetime | None = None,
        order_by: str | None = None,
        limit: int = PAGE_LIMIT,
        offset: int = 0,
    ) -> Page[Job]:
        """One page of ``GET /jobs`` with every filter the spec has."""
        params: dict[str, ParamValue] = {
            "connectionId": connection_id,
            "workspaceIds": list(workspace_ids) if workspace_ids else None,
            "jobType": str(job_type) if job_type is not None else None,
            "status": status,
            "createdAtStart": created_at_start,
            "createdAtEnd": created_at_end,
            "updatedAtStart": updated_at_start,
            "updatedAtEnd": updated_at_end,
            "orderBy": order_by,
            "limit": limit,
            "offset": offset,
        }
        data = await self._call("GET", "/jobs", params=params, idempotent=True)
        return Page[Job].model_validate(data)

    async def list_jobs(self, **filters: Any) -> list[Job]:
        """Every page of ``GET /jobs`` (see :meth:`list_jobs_page` for the filters)."""

        async def page(offset: int) -> Page[Job]:
            return await self.list_jobs_page(**filters, limit=PAGE_LIMIT, offset=offset)

        # Newest first (…|DESC): the first copy of a job is its newest; otherwise the last is.
        newest_first = str(filters.get("order_by") or "").endswith("DESC")
        return await self._all_pages(
            page, key=lambda job: job.job_id, overlap=JOB_PAGE_OVERLAP, newest_first=newest_first
        )

    async def list_connections(
        self,
        *,
        workspace_ids: Sequence[str] | None = None,
        tag_ids: Sequence[str] | None = None,
        include_deleted: bool = False,
    ) -> list[Connection]:
        async def page(offset: int) -> Page[Connection]:
            params: dict[str, ParamValue] = {
                "workspaceIds": list(workspace_ids) if workspace_ids else None,
                "tagIds": list(tag_ids) if tag_ids else None,
                "includeDeleted": include_deleted or None,
                "limit": PAGE_LIMIT,
                "offset": offset,
            }
            data = await self._call("GET", "/connections", params=params, idempotent=True)
            return Page[Connection].model_validate(data)

        return await self._all_pages(page, key=lambda c: c.connection_id)

    async def get_connection(self, connection_id: str) -> Connection:
        return await self._model(
            Connection, "GET", f"/connections/{connection_id}", route="/connections/{connectionId}"
        )

    async def list_workspaces(
        self, *, workspace_ids: Sequence[str] | None = None, include_deleted: bool = False
    ) -> list[Workspace]:
        async def page(offset: int) -> Page[Workspace]:
            params: dict[str, ParamValue] = {
                "workspaceIds": list(workspace_ids) if workspace_ids else None,
                "includeDeleted": include_deleted or None,
                "limit": PAGE_LIMIT,
                "offset": offset,
            }
            data = await self._call("GET", "/workspaces", params=params, idempotent=True)
            return Page[Workspace].model_validate(data)

        return await self._all_pages(page, key=lambda w: w.workspace_id)

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
        async for attempt in self._attempts(idempotent=True, what=f"POST {route}"):
            with attempt:
                status, raw, headers = await self._raw("POST", token_url, route, {}, None, body)
                if status != 200:
                    raise self._token_error(status, raw, headers, token_url)
        try:
            doc = json.loads(raw)
            token = doc["access_token"]
            if not isinstance(token, str) or not token:
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise AuthError(
                f"The token endpoint {token_url} answered without an access token; check that "
                "AIRBYTE_BASE_URL points at Airbyte's public API.",
                status=status,
                url=token_url,
            ) from None
        expires = doc.get("expires_in")
        return TokenGrant(
            access_token=SecretStr(token),
            expires_in=float(expires) if isinstance(expires, int | float) else None,
        )

    def _token_error(
        self, status: int, raw: bytes, headers: Mapping[str, str], url: str
    ) -> AirbyteError:
        problem = Problem.parse(status, raw)
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
        return self._error(status, raw, headers, "POST", url, "/applications/token")

    # ----------------------------------------------------------------- plumbing

    async def _model(self, model: type[M], method: str, path: str, *, route: str) -> M:
        data = await self._call(method, path, route=route, idempotent=True)
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise ServerError(
                f"Airbyte answered {method} {route} with a body that is not a "
                f"{model.__name__} ({exc.error_count()} problems); this is a server fault.",
                status=200,
                method=method,
            ) from None

    async def _all_pages(
        self,
        fetch: Callable[[int], Any],
        *,
        key: Callable[[Any], object],
        overlap: int = 0,
        newest_first: bool = False,
    ) -> list[Any]:
        """Every item of an offset-paged list.

        `next` is unreliable (internal host, set even on the last page): offsets are counted
        here and a short page ends the list. A list ordered by update time shifts while it is
        read (an item updated meanwhile moves to the end): *overlap* re-reads that many items
        at each page boundary so a shift cannot hide one, and a later copy of an item, being
        newer, replaces the earlier one (with *newest_first*, the earlier one is kept).
        """
        items: dict[object, Any] = {}
        previous: list[object] | None = None
        offset = 0
        for _ in range(MAX_PAGES):
            page = await fetch(offset)
            keys = [key(item) for item in page.data]
            if keys and keys == previous:
                # The server ignores `offset`: the same page again would loop forever.
                log.warning("pagination_repeated_page", offset=offset)
                break
            previous = keys
            for item_key, item in zip(keys, page.data, strict=True):
                if newest_first:
                    items.setdefault(item_key, item)
                else:
                    items.pop(item_key, None)
                    items[item_key] = item
            if len(page.data) < PAGE_LIMIT:
                break
            offset += PAGE_LIMIT - overlap
        return list(items.values())

    def _attempts(self, *, idempotent: bool, what: str) -> Any:
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

    async def _call(
        self,
        method: str,
        path: str,
        *,
        route: str | None = None,
        params: Mapping[str, ParamValue] | None = None,
        json_body: Any = None,
        idempotent: bool,
    ) -> Any:
        route = route or path
        url = f"{self.api.base}{path}"
        query = _param_items(params or {})
        async for attempt in self._attempts(idempotent=idempotent, what=f"{method} {route}"):
            with attempt:
                headers = await self.auth.headers(self)
                status, raw, rheaders = await self._raw(
                    method, url, route, headers, query, json_body
                )
                if status == 401 and await self.auth.refresh_after_401(self, headers):
                    self.stats.replays_after_401 += 1
                    headers = await self.auth.headers(self)
                    status, raw, rheaders = await self._raw(
                        method, url, route, headers, query, json_body
                    )
                if not 200 <= status < 300:
                    raise self._error(status, raw, rheaders, method, url, route)
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    if not idempotent:
                        raise TriggerOutcomeUnknownError(
                            f"Airbyte answered {method} {route} with a body that is not JSON; "
                            "the request may or may not have taken effect.",
                            status=status,
                            method=method,
                        ) from None
                    # A truncated or garbled body on a read is worth another try.
                    raise ServerError(
                        f"Airbyte answered {method} {route} with a body that is not JSON.",
                        status=502,
                        method=method,
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _raw(
        self,
        method: str,
        url: str,
        route: str,
        headers: Mapping[str, str],
        query: Iterable[tuple[str, str]] | None,
        json_body: Any,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        session = self._ensure_session()
        try:
            async with session.request(
                method,
                url,
                params=list(query) if query else None,
                json=json_body,
                headers=dict(headers),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                self.stats.requests[(method, route, response.status)] += 1
                if self.server_clock_offset is None:
                    self._learn_server_clock(response.headers.get("Date"))
                return response.status, body, response.headers
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
            if method == "POST" and route == "/jobs":
                raise TriggerOutcomeUnknownError(
                    message + "; the job may or may not have been created.", method=method, url=url
                ) from None
            raise TransportError(message, method=method, url=url) from None

    def _error(
        self,
        status: int,
        raw: bytes,
        headers: Mapping[str, str],
        method: str,
        url: str,
        route: str,
    ) -> AirbyteError:
        problem = Problem.parse(status, raw)
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
            if problem.is_type("state-conflict") and method == "POST" and route == "/jobs":
                return InactiveConnectionError(
                    "Airbyte will not start a job on this connection (HTTP 409 state-conflict): "
                    "it is inactive, locked or was disabled after repeated failures.",
                    **kw,
                )
            return ConflictError(f"Airbyte refused {where} (HTTP 409){detail}.", **kw)
        if status == 429:
            return RateLimitedError(
                f"Airbyte rate-limited {where} (HTTP 429).",
                retry_after=_retry_after(headers),
                **kw,
            )
        if status >= 500:
            return ServerError(
                f"Airbyte failed on {where} (HTTP {status}){detail}.",
                retry_after=_retry_after(headers),
                **kw,
            )
        return AirbyteError(f"Airbyte answered {where} with HTTP {status}{detail}.", **kw)
