"""Airbyte's public API objects, read leniently where the real server is loose.

Unknown statuses are kept as strings (Airbyte added ``queued`` without warning once), times may lack
seconds or be missing, durations may be null, and fields the server adds later are ignored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

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

_datetime = TypeAdapter(datetime)
_timedelta = TypeAdapter(timedelta)


def _lenient_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = _datetime.validate_python(value)
    except ValidationError:
        return None
    # Java's OffsetDateTime always carries an offset; a naive value can only mean UTC.
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _lenient_timedelta(value: Any) -> timedelta | None:
    if value is None or value == "":
        return None
    try:
        return _timedelta.validate_python(value)
    except ValidationError:
        return None


def _lenient_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


LenientDatetime = Annotated[datetime | None, BeforeValidator(_lenient_datetime)]
LenientTimedelta = Annotated[timedelta | None, BeforeValidator(_lenient_timedelta)]
LenientInt = Annotated[int | None, BeforeValidator(_lenient_int)]


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Job(_Model):
    """``JobResponse``."""

    job_id: int = Field(alias="jobId")
    status: str
    job_type: str = Field(default="sync", alias="jobType")
    connection_id: str = Field(default="", alias="connectionId")
    start_time: LenientDatetime = Field(default=None, alias="startTime")
    last_updated_at: LenientDatetime = Field(default=None, alias="lastUpdatedAt")
    duration: LenientTimedelta = None
    rows_synced: LenientInt = Field(default=None, alias="rowsSynced")
    bytes_synced: LenientInt = Field(default=None, alias="bytesSynced")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_known_status(self) -> bool:
        return self.status in JobStatus._value2member_map_


class Tag(_Model):
    tag_id: str = Field(default="", alias="tagId")
    name: str = ""
    workspace_id: str = Field(default="", alias="workspaceId")
    color: str = ""


def _tag_names(value: Any) -> Any:
    """Airbyte's ``Tag`` objects (or plain names) → their names."""
    if not isinstance(value, list | tuple):
        return value
    names: list[Any] = []
    for tag in value:
        if isinstance(tag, Tag):
            names.append(tag.name)
        elif isinstance(tag, dict):
            names.append(tag.get("name", ""))
        else:
            names.append(tag)
    return tuple(names)


def _schedule_type(value: Any) -> Any:
    """``{"scheduleType": "cron", ...}`` → ``"cron"``."""
    if isinstance(value, dict):
        kind = value.get("scheduleType")
        return kind if isinstance(kind, str) else None
    return value


class Connection(_Model):
    """``ConnectionResponse``, the parts a runner needs."""

    connection_id: str = Field(alias="connectionId")
    name: str = ""
    workspace_id: str = Field(default="", alias="workspaceId")
    source_id: str = Field(default="", alias="sourceId")
    destination_id: str = Field(default="", alias="destinationId")
    status: str = "active"
    status_reason: str | None = Field(default=None, alias="statusReason")
    # Only the tag names and the schedule type are kept: a runner uses nothing else of them, and
    # 10,000 connections are held for a whole run.
    tags: Annotated[tuple[str, ...], BeforeValidator(_tag_names)] = ()
    schedule_type: Annotated[str | None, BeforeValidator(_schedule_type)] = Field(
        default=None, alias="schedule"
    )
    created_at: LenientInt = Field(default=None, alias="createdAt")

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


class Page(_Model, Generic[T]):
    """One page of a list response. ``next``/``previous`` are informational only: Airbyte builds
    them from its own configured host (possibly internal) and sets ``next`` even on the last page."""

    data: tuple[T, ...] = ()
    next: str | None = None
    previous: str | None = None
