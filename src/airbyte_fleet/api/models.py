"""Airbyte's public API objects, read leniently where the real server is loose.

Unknown statuses are kept as strings (Airbyte added ``queued`` without warning once), times may lack
seconds or be missing, numbers may be null, and fields the server adds later are ignored.

:class:`Job` and :class:`Connection` are held by the thousand for a whole run, so they are slotted
records read by hand from the decoded JSON (:meth:`Job.from_api`, :meth:`Connection.from_api`)
rather than pydantic models: a pydantic ``Connection`` cost 1,720 bytes (its fields-set alone 728)
and a ``Job`` 1,312, and a ``TypeAdapter`` over a slotted dataclass, with the lenient validators
this module needs, parsed a job two times slower than the hand mapping. Only the fields the rest
of the package reads are kept, and strings that repeat from one object to the next (statuses, job
types, connection and workspace ids, tag names) are interned, so 10,000 jobs share them and a
job's connection id is the very string its connection holds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

__all__ = [
    "TERMINAL_STATUSES",
    "Connection",
    "Job",
    "JobStatus",
    "JobType",
    "Page",
    "Tag",
    "Workspace",
]


class JobStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    INCOMPLETE = "incomplete"
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    CANCELLED = "cancelled"


class JobType(StrEnum):
    SYNC = "sync"
    RESET = "reset"
    REFRESH = "refresh"
    CLEAR = "clear"


# Airbyte's JobStatus.TERMINAL_STATUSES; `incomplete` is NOT final (an attempt failed, another follows).
TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
_KNOWN_STATUSES = frozenset(JobStatus._value2member_map_)

_datetime = TypeAdapter(datetime)


def _lenient_datetime(value: Any) -> datetime | None:
    """Whatever pydantic reads as a time (epoch numbers, ISO forms ``fromisoformat`` refuses)."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        parsed = _datetime.validate_python(value)
    except ValidationError:
        return None
    # Java's OffsetDateTime always carries an offset; a naive value can only mean UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Jobs triggered in the same second carry the same start time: they share one parsed object, and
# the text is parsed once.
@lru_cache(maxsize=256)
def _time_text(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return _lenient_datetime(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _time(value: object) -> datetime | None:
    if isinstance(value, str):
        return _time_text(value) if value else None
    return _lenient_datetime(value)


def _lenient_int(value: Any) -> int | None:
    if type(value) is int:
        return value
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _id(value: object, name: str) -> int:
    """A job id: an integer, or what pydantic's lax mode read as one ("12", 12.0)."""
    if type(value) is int:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{name} is not an integer")


def _text(value: object, name: str, default: str) -> str:
    """A short string that repeats across objects (interned), or *default* when null or absent."""
    if isinstance(value, str):
        return sys.intern(value)
    if value is None:
        return default
    raise ValueError(f"{name} is not a string")


def _object(data: object, what: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError(f"not {what} (a JSON {type(data).__name__})")
    return data


@dataclass(frozen=True, slots=True)
class Job:
    """``JobResponse``, the fields a runner reads. Equal when every field is."""

    job_id: int
    status: str
    job_type: str = "sync"
    connection_id: str = ""
    start_time: datetime | None = None
    last_updated_at: datetime | None = None
    rows_synced: int | None = None
    bytes_synced: int | None = None

    @classmethod
    def from_api(cls, data: object) -> Job:
        """A ``JobResponse`` as decoded JSON; ``ValueError`` if it is not one."""
        body = _object(data, "a job")
        if "jobId" not in body or "status" not in body:
            raise ValueError("a job needs jobId and status")
        status = body["status"]
        if not isinstance(status, str):
            raise ValueError("status is not a string")
        get = body.get
        return cls(
            _id(body["jobId"], "jobId"),
            sys.intern(status),
            _text(get("jobType"), "jobType", "sync"),
            _text(get("connectionId"), "connectionId", ""),
            _time(get("startTime")),
            _time(get("lastUpdatedAt")),
            _lenient_int(get("rowsSynced")),
            _lenient_int(get("bytesSynced")),
        )

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_known_status(self) -> bool:
        return self.status in _KNOWN_STATUSES


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Tag(_Model):
    tag_id: str = Field(default="", alias="tagId")
    name: str = ""
    workspace_id: str = Field(default="", alias="workspaceId")
    color: str = ""


def _tag_names(value: object) -> tuple[str, ...]:
    """Airbyte's ``Tag`` objects (or plain names) → their names; a nameless tag is left out."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ValueError("tags is not a list")
    names: list[str] = []
    for tag in value:
        name = (
            tag.name if isinstance(tag, Tag) else tag.get("name") if isinstance(tag, dict) else tag
        )
        if isinstance(name, str):
            names.append(sys.intern(name))
    return tuple(names)


def _schedule_type(value: object) -> str | None:
    """``{"scheduleType": "cron", ...}`` → ``"cron"``."""
    if isinstance(value, dict):
        value = value.get("scheduleType")
    return sys.intern(value) if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class Connection:
    """``ConnectionResponse``, the parts a runner reads: 10,000 of them are held for a whole run."""

    connection_id: str
    name: str = ""
    workspace_id: str = ""
    status: str = "active"
    tags: tuple[str, ...] = ()
    schedule_type: str | None = None

    @classmethod
    def from_api(cls, data: object) -> Connection:
        """A ``ConnectionResponse`` as decoded JSON; ``ValueError`` if it is not one."""
        body = _object(data, "a connection")
        connection_id = body.get("connectionId")
        if not isinstance(connection_id, str):
            raise ValueError("a connection needs a connectionId")
        get = body.get
        name = get("name")
        if name is not None and not isinstance(name, str):
            raise ValueError("name is not a string")
        return cls(
            sys.intern(connection_id),
            name or "",
            _text(get("workspaceId"), "workspaceId", ""),
            _text(get("status"), "status", "active"),
            _tag_names(get("tags")),
            _schedule_type(get("schedule")),
        )

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    @property
    def tag_names(self) -> tuple[str, ...]:
        return self.tags


class Workspace(_Model):
    workspace_id: str = Field(alias="workspaceId")
    name: str = ""
    data_residency: str | None = Field(default=None, alias="dataResidency")


T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list response. ``next``/``previous`` are informational only: Airbyte builds
    them from its own configured host (possibly internal) and sets ``next`` even on the last page."""

    data: tuple[T, ...] = ()
    next: str | None = None
    previous: str | None = None

    @staticmethod
    def from_api(data: object, item: Callable[[Any], U]) -> Page[U]:
        """A list response as decoded JSON, each element read by *item* (``ValueError`` if the
        body or an element is not what it should be)."""
        body = _object(data, "a page")
        items = body.get("data")
        if items is None:
            items = []
        if not isinstance(items, list):
            raise ValueError("data is not a list")
        links = body.get("next"), body.get("previous")
        return Page(
            tuple(item(element) for element in items),
            *(link if isinstance(link, str) else None for link in links),
        )
