"""An asyncio client for Airbyte's public API: its endpoints, paging, and the rule for triggers.

How a request travels (the pooled session, the auth flow, retries, what each status means) is
:mod:`airbyte_fleet.api._transport`; this module says which requests may be repeated. Every read,
and ``DELETE /jobs/{id}``, may be. ``POST /jobs`` may not once its outcome is unclear: it raises
:class:`TriggerOutcomeUnknownError` so the caller can look for the job before trying again, and
once the caller has seen that a refused trigger made no job, :meth:`AirbyteClient.retrying` gives
it the same retry policy as every other request.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Hashable,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypedDict, TypeVar, Unpack

from pydantic import SecretStr, ValidationError

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
    PagingError,
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

T = TypeVar("T")
ParamValue = str | int | bool | datetime | Sequence[str] | None

PAGE_LIMIT = 100  # the API's maximum page size
# Connection pages asked for at once: a list of connections hardly moves while it is read.
CONNECTION_PAGES_AHEAD = 4
JOB_PAGE_OVERLAP = 10  # see _job_overlap: some job lists move towards earlier pages while read
# A page that brings nothing new is read past (see _pages); this many in a row means the list does
# not advance: the server ignores `offset`, or the list changes faster than it can be read.
MAX_STALLED_PAGES = 5
MAX_PAGES = 100_000  # and a server that invents items forever must not make us loop forever
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


class JobFilters(TypedDict, total=False):
    """The filters of ``GET /jobs`` (one name each, as the spec has them), shared by
    :meth:`AirbyteClient.list_jobs_page`, :meth:`~AirbyteClient.iter_job_pages` and
    :meth:`~AirbyteClient.list_jobs`."""

    connection_id: str | None
    workspace_ids: Sequence[str] | None
    job_type: JobType | str | None
    status: str | None
    created_at_start: datetime | None
    created_at_end: datetime | None
    updated_at_start: datetime | None
    updated_at_end: datetime | None
    order_by: str | None


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
            return Job.from_api(data)
        except ValueError:
            raise TriggerOutcomeUnknownError(
                f"Airbyte answered POST /jobs for connection {connection_id} with a body that is "
                f"not a job; {TRIGGER_UNCLEAR}.",
                happened="Airbyte answered POST /jobs with a body that is not a job",
                method="POST",
                status=200,
            ) from None

    async def get_job(self, job_id: int) -> Job:
        return await self._one(Job.from_api, "job", "GET", f"/jobs/{int(job_id)}", "/jobs/{jobId}")

    async def cancel_job(self, job_id: int) -> Job:
        """``DELETE /jobs/{id}``: cancelling twice is harmless, so it is retried like a read."""
        return await self._one(
            Job.from_api, "job", "DELETE", f"/jobs/{int(job_id)}", "/jobs/{jobId}"
        )

    async def list_jobs_page(
        self, *, limit: int = PAGE_LIMIT, offset: int = 0, **filters: Unpack[JobFilters]
    ) -> Page[Job]:
        """One page of ``GET /jobs`` with every filter the spec has (:class:`JobFilters`)."""
        workspace_ids = filters.get("workspace_ids")
        job_type = filters.get("job_type")
        params: dict[str, ParamValue] = {
            "connectionId": filters.get("connection_id"),
            "workspaceIds": list(workspace_ids) if workspace_ids else None,
            "jobType": str(job_type) if job_type is not None else None,
            "status": filters.get("status"),
            "createdAtStart": filters.get("created_at_start"),
            "createdAtEnd": filters.get("created_at_end"),
            "updatedAtStart": filters.get("updated_at_start"),
            "updatedAtEnd": filters.get("updated_at_end"),
            "orderBy": filters.get("order_by"),
            "limit": limit,
            "offset": offset,
        }
        return await self._page(Job.from_api, "job", "/jobs", params)

    def iter_job_pages(self, **filters: Unpack[JobFilters]) -> AsyncIterator[tuple[Job, ...]]:
        """Every job of ``GET /jobs``, one page at a time (the filters are
        :meth:`list_jobs_page`'s): ``async for jobs in client.iter_job_pages(...)``.

        Only one page is held at a time, and the next is asked for only when it is wanted. A job
        can come twice when the list shifts while it is read; the later copy was read later, so
        it is never older. A list that stops advancing (see :meth:`_pages`) raises
        :class:`PagingError` after the pages already given: the caller has not seen all of it.
        """

        async def page(offset: int) -> Page[Job]:
            return await self.list_jobs_page(offset=offset, **filters)

        overlap = _job_overlap(
            filters.get("order_by"), filters.get("status"), filters.get("updated_at_end")
        )
        return self._pages(page, key=_job_key, overlap=overlap, what="job")

    async def list_jobs(self, **filters: Unpack[JobFilters]) -> list[Job]:
        """Every job of ``GET /jobs`` in one list, the latest copy of each (see
        :meth:`iter_job_pages`, which holds one page at a time)."""
        return await _latest(self.iter_job_pages(**filters), _job_key)

    def iter_connection_pages(
        self,
        *,
        workspace_ids: Sequence[str] | None = None,
        tag_ids: Sequence[str] | None = None,
        include_deleted: bool = False,
    ) -> AsyncGenerator[tuple[Connection, ...], None]:
        """Every connection of ``GET /connections``, one page at a time (close it to drop the
        pages asked for ahead)."""

        async def page(offset: int) -> Page[Connection]:
            params: dict[str, ParamValue] = {
                "workspaceIds": list(workspace_ids) if workspace_ids else None,
                "tagIds": list(tag_ids) if tag_ids else None,
                "includeDeleted": include_deleted or None,
                "limit": PAGE_LIMIT,
                "offset": offset,
            }
            return await self._page(Connection.from_api, "connection", "/connections", params)

        return self._pages(
            page, key=_connection_key, what="connection", prefetch=CONNECTION_PAGES_AHEAD
        )

    async def list_connections(
        self,
        *,
        workspace_ids: Sequence[str] | None = None,
        tag_ids: Sequence[str] | None = None,
        include_deleted: bool = False,
    ) -> list[Connection]:
        pages = self.iter_connection_pages(
            workspace_ids=workspace_ids, tag_ids=tag_ids, include_deleted=include_deleted
        )
        return await _latest(pages, _connection_key)

    async def get_connection(self, connection_id: str) -> Connection:
        return await self._one(
            Connection.from_api,
            "connection",
            "GET",
            f"/connections/{connection_id}",
            "/connections/{connectionId}",
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
            return await self._page(Workspace.model_validate, "workspace", "/workspaces", params)

        pages = self._pages(page, key=lambda w: w.workspace_id, what="workspace")
        return await _latest(pages, lambda w: w.workspace_id)

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

    async def _one(
        self, parse: Callable[[Any], T], what: str, method: str, path: str, route: str
    ) -> T:
        data = await self._call(method, path, route=route, idempotent=True)
        return self._read(parse, data, what, method, route)

    async def _page(
        self, parse: Callable[[Any], T], what: str, path: str, params: Mapping[str, ParamValue]
    ) -> Page[T]:
        data = await self._call("GET", path, params=params, idempotent=True)
        return self._read(
            lambda body: Page.from_api(body, parse), data, f"page of {what}s", "GET", path
        )

    @staticmethod
    def _read(parse: Callable[[Any], T], data: Any, what: str, method: str, route: str) -> T:
        try:
            return parse(data)
        except ValueError as exc:
            # The hand readers (Job, Connection, Page) say in a few fixed words what was wrong;
            # pydantic's text quotes the body over many lines, so only its count is kept.
            why = f"{exc.error_count()} problems" if isinstance(exc, ValidationError) else exc
            raise ServerError(
                f"Airbyte answered {method} {route} with a body that is not a {what} ({why}); "
                "this is a server fault.",
                status=200,
                method=method,
            ) from None

    async def _pages(
        self,
        fetch: Callable[[int], Awaitable[Page[T]]],
        *,
        key: Callable[[T], Hashable],
        overlap: int = 0,
        what: str,
        prefetch: int = 1,
    ) -> AsyncGenerator[tuple[T, ...], None]:
        """Every item of an offset-paged list, one page at a time.

        `next` is unreliable (internal host, set even on the last page): offsets are counted
        here and a short page ends the list.

        A list can shift while it is read. Newest first by update time, a job updated meanwhile
        moves to the front and the rest move to later pages: they are read twice. When as many
        jobs were updated during one page request as a page moves on, the next page is the last
        one again (it happened in 2 of 8 runs of 10,000 syncs); that is no end of the list, and
        the read goes on past it. Where items can also shift to earlier pages, *overlap* re-reads
        that many at each page boundary so that such a shift cannot hide one (see _job_overlap).

        Progress is counted in items never seen before: a list that gives MAX_STALLED_PAGES full
        pages in a row without one is not advancing (the server ignores `offset`, or the list
        changes faster than it can be read), and :class:`PagingError` ends the read after the
        pages already given, so that a caller knows it did not see the whole list.
        """
        seen: set[Hashable] = set()
        stalled = 0
        offset = 0
        step = PAGE_LIMIT - overlap
        # Pages asked for ahead of the one being read: a list read one request after another
        # costs a round trip a page (10,000 connections: 100 in a row, seconds before a run can
        # start). A short page ends the list and the requests ahead of it are dropped.
        ahead: deque[asyncio.Future[Page[T]]] = deque()
        asked = 0
        # One page first (most lists are one page), then one more ahead after each full one: a
        # long list soon has `prefetch` pages in flight, and at most that many minus one are
        # asked for past its end.
        window = 1
        try:
            for _ in range(MAX_PAGES):
                while len(ahead) < window:
                    ahead.append(asyncio.ensure_future(fetch(asked)))
                    asked += step
                page = await ahead.popleft()
                known = len(seen)
                seen.update(map(key, page.data))
                if page.data:
                    yield page.data
                if len(page.data) < PAGE_LIMIT:
                    return
                window = min(window + 1, max(1, prefetch))
                if len(seen) > known:
                    stalled = 0
                else:
                    stalled += 1
                    log.debug("pagination_repeated_page", what=what, offset=offset, stalled=stalled)
                    if stalled >= MAX_STALLED_PAGES:
                        raise PagingError(
                            f"Airbyte's {what} list did not advance: {stalled} pages in a row up "
                            f"to offset {offset} held only {what}s already read, so the server "
                            "ignores `offset` or the list changes faster than it can be read; try "
                            f"again, and if it keeps happening check that {self.api.base} is "
                            "Airbyte's public API.",
                            method="GET",
                        )
                offset += step
            raise PagingError(
                f"Airbyte's {what} list did not end after {MAX_PAGES} pages; check that "
                f"{self.api.base} is Airbyte's public API.",
                method="GET",
            )
        finally:
            for request in ahead:
                request.cancel()
            if ahead:
                # Collected, so that a request dropped mid-flight leaves no unretrieved error.
                await asyncio.gather(*ahead, return_exceptions=True)

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


def _job_key(job: Job) -> int:
    return job.job_id


def _connection_key(connection: Connection) -> str:
    return connection.connection_id


def _job_overlap(order_by: str | None, status: str | None, updated_at_end: datetime | None) -> int:
    """How many jobs to re-read at each page boundary of a job list.

    Newest first (``…|DESC``), a job only ever moves to the front (it was updated, or it is new),
    and the jobs it passes move one place towards later pages: read twice, never skipped, so no
    overlap is needed (it would cost a tenth more requests at every tick of a batched watch).
    Oldest first, an updated job moves to the end and the jobs it leaves move towards earlier
    pages; and a ``status`` or ``updatedAtEnd`` filter drops an updated job from the list, which
    does the same. There a shift of up to the overlap cannot hide a job.
    """
    newest_first = (order_by or "").endswith("|DESC")
    return 0 if newest_first and status is None and updated_at_end is None else JOB_PAGE_OVERLAP


async def _latest(pages: AsyncIterator[tuple[T, ...]], key: Callable[[T], Hashable]) -> list[T]:
    """Every item of a paged list once: the copy read last (never older), where it was read."""
    items: dict[Hashable, T] = {}
    async for page in pages:
        for item in page:
            item_key = key(item)
            items.pop(item_key, None)
            items[item_key] = item
    return list(items.values())
