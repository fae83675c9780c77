"""Handlers for the public API routes. They run after faults and auth have been applied."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

from aiohttp import web
from multidict import MultiDictProxy

from ._problems import (
    ProblemError,
    bad_request,
    error_id_body,
    json_response,
    resource_not_found,
    state_conflict,
    try_again_later,
    unprocessable_entity,
)
from ._state import SimState
from ._timefmt import parse_datetime_param
from ._timeline import JOB_STATUSES, JOB_TYPES
from ._world import (
    ConnectionNotActiveError,
    JobAlreadyRunningError,
    UnknownConnectionError,
    UnknownJobError,
)

__all__ = ["HANDLERS", "Call"]

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_ORDER_BY = re.compile(r"^(createdAt|updatedAt)\|(ASC|DESC)$")
_INT64 = re.compile(r"^[+-]?\d{1,19}$")
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Call:
    """What a handler needs from the request, already read.

    ``faults`` is filled by the handler with the deliberate faults in its answer
    (``slow_post``, ``odd_status``) so the exchange can be labelled.
    """

    method: str
    prefix: str
    params: dict[str, str]
    query: MultiDictProxy[str]
    content_type: str | None
    body: bytes
    faults: set[str] = field(default_factory=set)


Handler = Callable[[SimState, Call], Awaitable[web.Response]]


# -- parameter parsing --------------------------------------------------------------------


def _uuid_value(name: str, value: str) -> str:
    if not _UUID.match(value):
        raise ProblemError(400, bad_request(f"Invalid UUID for {name}: {value}"))
    # Java compares parsed UUIDs, so upper-case input must find lower-case ids.
    return str(uuid.UUID(value))


def _uuid_list(query: MultiDictProxy[str], name: str) -> list[str]:
    # Accept the SDK's repeated form (explode=true) and the comma-joined form the server's
    # own pagination links use.
    values: list[str] = []
    for raw in query.getall(name, []):
        values.extend(part.strip() for part in raw.split(",") if part.strip())
    return [_uuid_value(name, value) for value in values]


def _int_param(query: MultiDictProxy[str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ProblemError(400, bad_request(f"Invalid value for {name}: {raw}")) from None
    if not low <= value <= high:
        bounds = f"between {low} and {high}" if high < 2**31 - 1 else f"at least {low}"
        raise ProblemError(400, bad_request(f"{name} must be {bounds}, got {value}"))
    return value


def _limit_offset(query: MultiDictProxy[str]) -> tuple[int, int]:
    return _int_param(query, "limit", 20, 1, 100), _int_param(query, "offset", 0, 0, 2**31 - 1)


def _bool_param(query: MultiDictProxy[str], name: str) -> bool:
    raw = query.get(name)
    if raw is None or raw == "":
        return False
    lowered = raw.lower()
    if lowered not in ("true", "false"):
        raise ProblemError(400, bad_request(f"Invalid boolean for {name}: {raw}"))
    return lowered == "true"


def _enum_param(query: MultiDictProxy[str], name: str, allowed: Sequence[str]) -> str | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    if raw not in allowed:
        raise ProblemError(400, bad_request(f"Invalid value for {name}: {raw}"))
    return raw


def _time_param(query: MultiDictProxy[str], name: str) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_datetime_param(raw)
    except ValueError:
        raise ProblemError(400, bad_request(f"Invalid date-time for {name}: {raw}")) from None


def _page(
    state: SimState,
    call: Call,
    resource: str,
    data: list[dict[str, Any]],
    filters: Sequence[tuple[str, str]],
    limit: int,
    offset: int,
) -> dict[str, Any]:
    """Link one already-sliced page the way Airbyte's PaginationMapper does.

    ``next`` is present whenever the page is non-empty, even a short last page, and only the
    filters Airbyte itself carries are put in the links.
    """
    base = f"{state.root_url}{call.prefix}/{resource}"

    def link(page_offset: int) -> str:
        params = [*filters, ("limit", str(limit)), ("offset", str(page_offset))]
        return base + "?" + "&".join(f"{k}={quote(v, safe=',')}" for k, v in params)

    return {
        "previous": link(max(offset - limit, 0)) if offset != 0 else "",
        "next": link(offset + limit) if data else "",
        "data": data,
    }


def _job_reply(call: Call, views: Sequence[dict[str, Any]], payload: object) -> web.Response:
    """A 200 carrying job views; flags a status outside the spec's enum (``odd_status``)."""
    if any(view["status"] not in JOB_STATUSES for view in views):
        call.faults.add("odd_status")
    return json_response(200, payload)


# -- routes ---------------------------------------------------------------------------------


async def health(state: SimState, call: Call) -> web.Response:
    return web.Response(status=200, body=b"Successful operation", content_type="text/plain")


def _token_fields(call: Call) -> dict[str, Any]:
    ctype = (call.content_type or "").split(";", 1)[0].strip().lower()
    try:
        if ctype == "application/x-www-form-urlencoded":
            parsed = parse_qs(call.body.decode("utf-8"), keep_blank_values=True)
            return {key: values[0] for key, values in parsed.items()}
        if ctype in ("", "application/json"):
            loaded = json.loads(call.body or b"null")
            if isinstance(loaded, dict):
                return loaded
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, bad_request("Malformed token request body")) from None
    raise ProblemError(415, {"message": f"Unsupported Media Type: {ctype}"})


async def create_token(state: SimState, call: Call) -> web.Response:
    fields = _token_fields(call)
    client_id, client_secret = fields.get("client_id"), fields.get("client_secret")
    if not isinstance(client_id, str) or not isinstance(client_secret, str):
        raise ProblemError(400, bad_request("client_id and client_secret are required"))
    # The grant type (grant_type, grant-type or absent) is never read by the server.
    options = state.options
    good = hmac.compare_digest(
        client_id.encode(), options.client_id.encode()
    ) & hmac.compare_digest(client_secret.encode(), options.client_secret.encode())
    if not good:
        if options.token_errors == "cloud":
            raise ProblemError(401, error_id_body())
        raise ProblemError(
            400,
            {
                "message": "Invalid client id or token",
                "exceptionClassName": "io.airbyte.commons.server.errors.BadRequestException",
                "exceptionStack": [],
                "errorId": str(uuid.uuid4()),
            },
        )
    token = state.tokens.issue()
    state.token_requests += 1
    return json_response(
        200, {"access_token": token, "token_type": "Bearer", "expires_in": state.tokens.ttl}
    )


async def list_workspaces(state: SimState, call: Call) -> web.Response:
    ids = _uuid_list(call.query, "workspaceIds")
    include_deleted = _bool_param(call.query, "includeDeleted")
    limit, offset = _limit_offset(call.query)
    items = state.world.find_workspaces(ids)
    filters: list[tuple[str, str]] = []
    if ids:
        filters.append(("workspaceIds", ",".join(ids)))
    filters.append(("includeDeleted", str(include_deleted).lower()))
    return json_response(
        200,
        _page(state, call, "workspaces", items[offset : offset + limit], filters, limit, offset),
    )


async def list_connections(state: SimState, call: Call) -> web.Response:
    ids = _uuid_list(call.query, "workspaceIds")
    tag_ids = _uuid_list(call.query, "tagIds")
    include_deleted = _bool_param(call.query, "includeDeleted")
    limit, offset = _limit_offset(call.query)
    items = state.world.find_connections(ids, tag_ids, include_deleted)
    filters: list[tuple[str, str]] = []
    if ids:
        filters.append(("workspaceIds", ",".join(ids)))
    if tag_ids:
        filters.append(("tagIds", ",".join(tag_ids)))
    filters.append(("includeDeleted", str(include_deleted).lower()))
    return json_response(
        200,
        _page(state, call, "connections", items[offset : offset + limit], filters, limit, offset),
    )


async def get_connection(state: SimState, call: Call) -> web.Response:
    connection_id = _uuid_value("connectionId", call.params["connectionId"])
    try:
        return json_response(200, state.world.connection_view(connection_id))
    except UnknownConnectionError:
        raise ProblemError(404, resource_not_found("connection", connection_id)) from None


def _job_id(call: Call) -> int:
    raw = call.params["jobId"]
    # Python's int() also takes "1_000" and " 7 "; Java's Long.parseLong does not.
    if not _INT64.match(raw) or not -(2**63) <= int(raw) <= _INT64_MAX:
        raise ProblemError(400, bad_request(f"Invalid value for jobId: {raw}"))
    return int(raw)


async def get_job(state: SimState, call: Call) -> web.Response:
    job_id = _job_id(call)
    try:
        job = state.world.job(job_id)
    except UnknownJobError:
        raise ProblemError(404, resource_not_found("job", str(job_id))) from None
    view = job.view(state.clock.now())
    return _job_reply(call, [view], view)


async def cancel_job(state: SimState, call: Call) -> web.Response:
    job_id = _job_id(call)
    now = state.clock.now()
    try:
        job = state.world.cancel_job(job_id, now)
    except UnknownJobError:
        raise ProblemError(404, resource_not_found("job", str(job_id))) from None
    view = job.view(now)
    return _job_reply(call, [view], view)


def _job_request(call: Call) -> tuple[str, str]:
    try:
        body = json.loads(call.body)
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, bad_request("Request body is not valid JSON")) from None
    if not isinstance(body, dict):
        raise ProblemError(400, bad_request("Request body must be a JSON object"))
    connection_id, job_type = body.get("connectionId"), body.get("jobType")
    if not isinstance(connection_id, str):
        raise ProblemError(400, bad_request("connectionId is required"))
    if not isinstance(job_type, str) or job_type not in JOB_TYPES:
        raise ProblemError(400, bad_request(f"Invalid jobType: {job_type!r}"))
    return _uuid_value("connectionId", connection_id), job_type


async def create_job(state: SimState, call: Call) -> web.Response:
    connection_id, job_type = _job_request(call)
    world = state.world
    # The role check resolves the connection first, so an unknown id wins over the job type.
    try:
        world.connection_view(connection_id)
    except UnknownConnectionError:
        raise ProblemError(404, resource_not_found("connection", connection_id)) from None
    if job_type == "refresh":
        raise ProblemError(
            422, unprocessable_entity("Refreshes are not supported in the public API")
        )
    try:
        job = world.create_job(connection_id, job_type, state.clock.now())
    except ConnectionNotActiveError:
        raise ProblemError(409, state_conflict()) from None
    except JobAlreadyRunningError:
        raise ProblemError(
            409, try_again_later(f"A sync is already running for: {connection_id}")
        ) from None
    delay = state.faults.slow_post_seconds
    if delay > 0:
        # Released servers block until the first attempt exists; the job is already visible.
        call.faults.add("slow_post")
        await asyncio.sleep(delay)
    view = job.view(state.clock.now())
    return _job_reply(call, [view], view)


async def list_jobs(state: SimState, call: Call) -> web.Response:
    query = call.query
    raw_connection = query.get("connectionId")
    connection_id = _uuid_value("connectionId", raw_connection) if raw_connection else None
    workspace_ids = _uuid_list(query, "workspaceIds")
    job_type = _enum_param(query, "jobType", JOB_TYPES)
    status = _enum_param(query, "status", JOB_STATUSES)
    created_start = _time_param(query, "createdAtStart")
    created_end = _time_param(query, "createdAtEnd")
    updated_start = _time_param(query, "updatedAtStart")
    updated_end = _time_param(query, "updatedAtEnd")
    order_field, descending = "createdAt", False
    raw_order = query.get("orderBy")
    if raw_order is not None:
        match = _ORDER_BY.match(raw_order)
        if not match:
            raise ProblemError(400, bad_request(f"Invalid order by clause provided: {raw_order}"))
        order_field, descending = match.group(1), match.group(2) == "DESC"
    limit, offset = _limit_offset(query)

    now = state.clock.now()
    jobs = state.world.find_jobs(
        now,
        connection_id=connection_id,
        workspace_ids=workspace_ids,
        job_type=job_type,
        status=status,
        created_start=created_start,
        created_end=created_end,
        updated_start=updated_start,
        updated_end=updated_end,
        order_by=order_field,
        descending=descending,
        first=offset + limit,
    )
    # Only these filters survive into Airbyte's links (JobsResponseMapper); status and
    # dates are lost, which is why clients should compute offsets themselves.
    filters: list[tuple[str, str]] = []
    if job_type is not None:
        filters.append(("jobType", job_type))
    if connection_id is not None:
        filters.append(("connectionId", connection_id))
    elif workspace_ids:
        filters.append(("workspaceIds", ",".join(workspace_ids)))
    views = [job.view(now) for job in jobs[offset : offset + limit]]
    return _job_reply(call, views, _page(state, call, "jobs", views, filters, limit, offset))


HANDLERS: dict[tuple[str, str], Handler] = {
    ("GET", "/health"): health,
    ("POST", "/applications/token"): create_token,
    ("GET", "/workspaces"): list_workspaces,
    ("GET", "/connections"): list_connections,
    ("GET", "/connections/{connectionId}"): get_connection,
    ("POST", "/jobs"): create_job,
    ("GET", "/jobs"): list_jobs,
    ("GET", "/jobs/{jobId}"): get_job,
    ("DELETE", "/jobs/{jobId}"): cancel_job,
}
