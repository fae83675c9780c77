"""An asyncio client for Airbyte's public API: its endpoints, paging, and the rule for triggers.

How a request travels (the pooled session, the auth flow, retries, what each status means) is
:mod:`airbyte_fleet.api._transport`; this module says which requests may be repeated. Every read,
and ``DELETE /jobs/{id}``, may be. ``POST /jobs`` may not once its outcome is unclear: it raises
:class:`TriggerOutcomeUnknownError` so the caller can look for the job before trying again, and
once the caller has seen that a refused trigger made no job, :meth:`AirbyteClient.retrying` gives
it the same retry policy as every other request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

from airbyte_fleet._logging import get_logger
from airbyte_fleet.api._transport import (
    UNCLEAR,
    RequestStats,
    RetryPolicy,
    Timeouts,
    Transport,
    probe_session,
)
from airbyte_fleet.api.auth import Auth, TokenGrant
from airbyte_fleet.api.errors import (
    AlreadyRunningError,
    AuthError,
    ConflictError,
    InactiveConnectionError,
    NotFoundError,
    Problem,
    ServerError,
    TransportError,
    TriggerOutcomeUnknownError,
    UnreachableError,
)
from airbyte_fleet.api.models import Connection, Job, JobType, Page, Workspace
from airbyte_fleet.api.urls import ApiUrl, UrlPlan, resolve_url
from airbyte_fleet.errors import ConfigError

if TYPE_CHECKING:
    import aiohttp
    import stamina

__all__ = ["AirbyteClient", "RequestStats", "RetryPolicy", "Timeouts"]

log = get_logger("airbyte_fleet.api")

M = TypeVar("M", bound=BaseModel)
ParamValue = str | int | bool | datetime | Sequence[str] | None

PAGE_LIMIT = 100  # the API's maximum page size
JOB_PAGE_OVERLAP = 10  # see _all_pages: job lists move while they are read
MAX_PAGES = 100_000  # a server that ignores `offset` must not make us loop forever
# An unclear answer to a trigger leaves this unknown; the caller looks for the job before retrying.
TRIGGER_UNCLEAR = "the job may or may not have been created"


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
        self._transport = Transport(
            auth,
            timeouts=timeouts or Timeouts(),
            retry=retry or RetryPolicy(),
            max_connections=max_connections,
            session=session,
        )

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
            async with probe_session(timeouts) as probe:
                api = await resolve_url(
                    url, probe, probe_timeout=timeouts.connect, notice_after=timeouts.notice
                )
        return cls(api, auth if isinstance(auth, Auth) else auth(api), **kwargs)

    async def __aenter__(self) -> Self:
        self._transport.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._transport.close()

    # The transport's settings and counters, read where they live so there is one copy of each.

    @property
    def auth(self) -> Auth:
        return self._transport.auth

    @property
    def timeouts(self) -> Timeouts:
        return self._transport.timeouts

    @property
    def retry(self) -> RetryPolicy:
        return self._transport.retry

    @property
    def stats(self) -> RequestStats:
        return self._transport.stats

    @property
    def max_connections(self) -> int:
        return self._transport.max_connections

    @property
    def server_clock_offset(self) -> float | None:
        """Seconds the server's clock is ahead of ours (from its Date header), for time filters."""
        return self._transport.server_clock_offset

    def server_now(self) -> datetime:
        """Our best estimate of the server's current time."""
        return datetime.now(UTC) + timedelta(seconds=self.server_clock_offset or 0.0)

    # ----------------------------------------------------------------- operations

    async def health(self) -> None:
        """``GET /health`` without credentials; raises if Airbyte is not there or not healthy."""
        answer = await self._transport.send("GET", self.api.health_url, "/health")
        status = answer.status
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
            problem=Problem.parse(status, answer.body),
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
            data = await self._call(
                "POST", "/jobs", json_body=body, idempotent=False, unclear=TRIGGER_UNCLEAR
            )
        except (TriggerOutcomeUnknownError, AuthError, AlreadyRunningError, NotFoundError):
            raise
        except ConflictError as exc:
            if exc.problem is None or not exc.problem.is_type("state-conflict"):
                raise
            raise InactiveConnectionError(
                "Airbyte will not start a job on this connection (HTTP 409 state-conflict): "
                "it is inactive, locked or was disabled after repeated failures.",
                status=exc.status,
                method=exc.method,
                url=exc.url,
                problem=exc.problem,
            ) from None
        except ServerError as exc:
            detail = f" ({exc.problem.text})" if exc.problem and exc.problem.text else ""
            happened = f"Airbyte answered POST /jobs with HTTP {exc.status}{detail}"
            raise TriggerOutcomeUnknownError(
                f"Airbyte answered POST /jobs for connection {connection_id} with HTTP "
                f"{exc.status}; {TRIGGER_UNCLEAR}.",
                happened=happened,
                status=exc.status,
                method="POST",
                url=exc.url,
                problem=exc.problem,
                answer=exc,
            ) from exc
        try:
            return Job.model_validate(data)
        except ValidationError:
            raise TriggerOutcomeUnknownError(
                f"Airbyte answered POST /jobs for connection {connection_id} with a body that is "
                f"not a job; {TRIGGER_UNCLEAR}.",
                happened="Airbyte answered POST /jobs with a body that is not a job",
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

    def retrying(self, *, what: str) -> AsyncIterator[stamina.Attempt]:
        """The client's HTTP retry policy (attempts, backoff, testing mode) for a caller's own loop
        around a request that is not idempotent.

        An :class:`AirbyteError` raised in an attempt is retried as it would be on a read, so
        raise one only once the request is known to have taken no effect: a trigger refused with
        a 5xx from which Airbyte lists no job. Each retry is counted and logged as
        ``airbyte_retry`` with *what* named. When the policy gives up, the last error is raised.
        """
        return self._transport.attempts(idempotent=True, what=what)

    # ----------------------------------------------------------------- token

    async def fetch_token(
        self, token_url: str, client_id: str, client_secret: SecretStr
    ) -> TokenGrant:
        """``POST <base>/applications/token`` (the transport's auth flow sends it; see there)."""
        return await self._transport.fetch_token(token_url, client_id, client_secret)

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

    async def _call(
        self,
        method: str,
        path: str,
        *,
        route: str | None = None,
        params: Mapping[str, ParamValue] | None = None,
        json_body: Any = None,
        idempotent: bool,
        unclear: str = UNCLEAR,
    ) -> Any:
        return await self._transport.request(
            method,
            f"{self.api.base}{path}",
            route or path,
            query=_param_items(params or {}),
            json_body=json_body,
            idempotent=idempotent,
            unclear=unclear,
        )
