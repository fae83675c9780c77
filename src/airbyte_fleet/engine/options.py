"""What to run and how: the same models serve CLI flags, the TOML file and (later) the HTTP API."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict, Unpack

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
)

from airbyte_fleet._messages import did_you_mean, spell_out_controls
from airbyte_fleet._validation import config_error, constructor, invalid
from airbyte_fleet.engine.stages import UpstreamPolicy

__all__ = [
    "ISO_DURATION_PATTERN",
    "Duration",
    "DurationArg",
    "Group",
    "GroupArgs",
    "IfRunning",
    "JobTypeName",
    "PollMode",
    "RunOptions",
    "RunOptionsArgs",
    "Selection",
    "SelectionArgs",
    "StopMode",
    "parse_duration",
]

JobTypeName = Literal["sync", "reset", "clear", "refresh"]
IfRunning = Literal["adopt", "skip", "fail"]
PollMode = Literal["auto", "batched", "per-job"]

StopMode = Literal["cancel", "detach"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# ISO-8601 as Airbyte writes durations (java.time.Duration: PT45M, P1DT2H, PT0.5S): days, hours,
# minutes, seconds; a fraction only on seconds. Written here rather than taken from pydantic's
# timedelta parser because the worker's OpenAPI document carries this very pattern, so the two
# cannot disagree; pydantic's also takes months and years (no fixed length) and "01:30:00".
_N = "[0-9]+"
_ISO_S = rf"{_N}(\.{_N})?[Ss]"
_ISO_T = rf"[Tt]({_N}[Hh]({_N}[Mm])?({_ISO_S})?|{_N}[Mm]({_ISO_S})?|{_ISO_S})"
ISO_DURATION_PATTERN = rf"^[Pp]({_N}[Dd]({_ISO_T})?|{_ISO_T})$"
_ISO = re.compile(ISO_DURATION_PATTERN)
_ISO_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_HOW = "write it like 45m, 1h30m, 90s, 2.5 (seconds) or PT45M (ISO 8601)"


def parse_duration(value: Any) -> float:
    """``45m``, ``1h30m``, ``90s``, ``1.5h``, ``250ms``, plain seconds, ISO 8601 (``PT45M``,
    Airbyte's own format) or a :class:`~datetime.timedelta` → seconds."""
    if isinstance(value, bool):
        raise ValueError(f"a duration is a number of seconds or a text; {_HOW}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if _ISO.fullmatch(text):
            # The pattern allows M only after T: here it is always minutes, never months.
            scale = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
            seconds = sum(float(n) * scale[u] for n, u in _ISO_PART.findall(text))
        else:
            try:
                seconds = float(text)
            except ValueError:
                parts_found = _PART.findall(text)
                if not parts_found or "".join(n + u for n, u in parts_found) != text:
                    raise ValueError(f"{_quoted(value)} is not a duration; {_HOW}") from None
                seconds = sum(float(n) * _UNITS[u] for n, u in parts_found)
    else:
        raise ValueError(f"a duration is a number of seconds or a text; {_HOW}")
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError(f"{_quoted(value)} is not a duration of zero or more seconds")
    return seconds


# What a caller may pass where a duration goes; the model keeps seconds (float).
DurationArg = float | int | str | timedelta
Duration = Annotated[float, BeforeValidator(parse_duration)]


def _quoted(value: Any) -> str:
    """*value* quoted for an error message: repr() escapes line breaks and other control
    characters, so a pasted value can never split the one-line message it appears in."""
    return repr(value) if isinstance(value, str) else f"'{value}'"


def _as_list(value: Any) -> Any:
    """Accept ``"a,b"`` and ``["a", "b,c"]`` alike: flags repeat and users paste comma lists."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    out: list[str] = []
    for item in items:
        if not isinstance(item, str):
            return value
        out.extend(part.strip() for part in item.split(",") if part.strip())
    return out


def _uuids(value: list[str]) -> list[str]:
    for item in value:
        try:
            uuid.UUID(item)
        except ValueError:
            raise ValueError(f"{_quoted(item)} is not a UUID") from None
    return value


def _defined_groups(value: list[str], info: ValidationInfo) -> list[str]:
    """With the config file's group names in the validation context (``{"groups": names}``),
    each group named must be one of them; without, the planner checks them when it runs."""
    context = info.context if isinstance(info.context, dict) else {}
    defined: Collection[str] | None = context.get("groups")
    if defined is None:
        return value
    for name in value:
        if name not in defined:
            shown = spell_out_controls(name)
            raise invalid(
                f"it names unknown group '{shown}'{did_you_mean(name, defined)}",
                fix=f"define [groups.{shown}] or remove it",
            )
    return value


StrList = Annotated[list[str], BeforeValidator(_as_list)]
# The checks ride on the types, not on the model, so that a table checked key by key against
# these fields (the config file's, see airbyte_fleet._validation) gets them too.
UuidList = Annotated[StrList, AfterValidator(_uuids)]
GroupNames = Annotated[StrList, AfterValidator(_defined_groups)]


if TYPE_CHECKING:
    from pydantic._internal._model_construction import ModelMetaclass as _ModelMeta
else:
    _ModelMeta = type(BaseModel)


class _ConfigErrors(_ModelMeta):
    """``Selection(tag=...)`` in Python code raises the library's :class:`ConfigError`, one
    sentence naming the argument, as a dict passed to :func:`airbyte_fleet.run_syncs` does.

    On the metaclass, not in ``__init__``: pydantic calls a model's own ``__init__`` from
    ``model_validate`` too, and the worker's request checks need pydantic's errors there.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise config_error(exc, constructor(cls), kwargs) from None  # type: ignore[arg-type]


class _Strict(BaseModel, metaclass=_ConfigErrors):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SelectionArgs(TypedDict, total=False):
    """:class:`Selection`'s fields as keyword arguments or a plain dict, typed for checkers."""

    connections: list[str] | str
    names: list[str] | str
    tags: list[str] | str
    workspaces: list[str] | str
    all: bool
    groups: list[str] | str
    with_upstream: bool


class Selection(_Strict):
    """Which connections: explicit ids, plus the connections that match every filter given.

    Each list also takes one comma-separated text. ``Selection(tags=["nightly"])`` or, wherever a
    selection is taken, the plain dict ``{"tags": ["nightly"]}``.
    """

    connections: UuidList = Field(default_factory=list, description="connection ids")
    names: StrList = Field(default_factory=list, description="connection name globs")
    tags: StrList = Field(default_factory=list, description="connection tag names")
    workspaces: UuidList = Field(default_factory=list, description="workspace ids")
    all: bool = Field(default=False, description="every connection the credentials can see")
    groups: GroupNames = Field(
        default_factory=list, description="named groups from the config file"
    )
    with_upstream: bool = Field(
        default=False,
        description="also run, transitively, the groups the named groups come after (their after)",
    )

    if TYPE_CHECKING:
        # The typed signature for checkers (pydantic validates and converts at run time): a list
        # may be given as one comma-separated text.
        def __init__(self, **fields: Unpack[SelectionArgs]) -> None: ...

    @property
    def filters_given(self) -> bool:
        return bool(self.names or self.tags or self.workspaces or self.all)

    @property
    def empty(self) -> bool:
        return not (self.connections or self.filters_given or self.groups)


class GroupArgs(SelectionArgs, total=False):
    """:class:`Group`'s fields as keyword arguments or a plain dict, typed for checkers."""

    after: list[str] | str
    on_upstream_failure: UpstreamPolicy


class Group(Selection):
    """A named group (``[groups.NAME]``): a selection, and in a staged run the groups it starts
    after. A group whose upstream had a sync that failed, was cancelled, timed out or could not
    run is skipped (``on_upstream_failure="skip"``, each sync with the cause
    ``upstream_failed``) or run anyway (``"run"``)."""

    after: GroupNames = Field(
        default_factory=list,
        description="groups whose syncs must all have ended before this group starts",
    )
    on_upstream_failure: UpstreamPolicy = Field(
        default="skip",
        description="skip: skip this group when a group it comes after did not succeed; run: "
        "run it anyway",
    )

    if TYPE_CHECKING:

        def __init__(self, **fields: Unpack[GroupArgs]) -> None: ...


class RunOptionsArgs(TypedDict, total=False):
    """:class:`RunOptions`' fields as keyword arguments or a plain dict, typed for checkers:
    durations also as text (``"45m"``, ``"PT45M"``), seconds or a :class:`~datetime.timedelta`."""

    job_type: JobTypeName
    max_concurrency: int
    poll_interval: DurationArg
    poll_mode: PollMode
    timeout: DurationArg
    deadline: DurationArg | None
    retries: int
    retry_backoff: DurationArg
    wait: bool
    if_running: IfRunning
    include_inactive: bool
    cancel_on_timeout: bool
    cancel_adopted: bool
    on_interrupt: StopMode
    grace: DurationArg


class RunOptions(_Strict):
    """How to run the selected syncs. Durations are kept in seconds and given as seconds, as text
    (``"45m"``, ``"1h30m"``, ``"PT45M"``) or as a :class:`~datetime.timedelta`.

    Every field left out comes from ``AIRBYTE_FLEET_<FIELD>``, then the config file's ``[run]``
    table, then the default below (:func:`airbyte_fleet.run_syncs` and ``airbyte-fleet run``
    alike).
    """

    # Each field is a `run` flag too (cli/parser.py): the description is its help text and the
    # default shown there is the one below.
    job_type: JobTypeName = Field(default="sync", description="the kind of Airbyte job to start")
    max_concurrency: int = Field(
        default=25, ge=1, le=100_000, description="syncs in flight at once"
    )
    poll_interval: Duration = Field(default=10.0, gt=0, description="between status polls")
    poll_mode: PollMode = Field(
        default="auto",
        description="batched: one list call per workspace per tick; auto: batched "
        "when more than a few syncs run",
    )
    timeout: Duration = Field(default=24 * 3600.0, gt=0, description="per sync, e.g. 45m")
    deadline: Duration | None = Field(default=None, gt=0, description="for the whole run")
    retries: int = Field(
        default=0, ge=0, le=100, description="re-trigger a failed sync up to this many times"
    )
    retry_backoff: Duration = Field(default=30.0, ge=0, description="first wait before a retry")
    wait: bool = Field(
        default=True,
        description="follow each job to its end; when off, only trigger (outcome 'triggered')",
    )
    if_running: IfRunning = Field(
        default="adopt",
        description="when a connection already has a job running: adopt that job, skip the "
        "sync, or fail it",
    )
    include_inactive: bool = Field(
        default=False, description="try inactive connections too instead of skipping them"
    )
    cancel_on_timeout: bool = Field(
        default=True, description="cancel a job that runs past its timeout; when off, leave it"
    )
    cancel_adopted: bool = Field(
        default=False,
        description="on timeout or interrupt, cancel a job that was already running when the "
        "run adopted it (started by Airbyte's scheduler, the UI or an earlier --no-wait); when "
        "off, it is reported but left running",
    )
    on_interrupt: StopMode = Field(
        default="cancel",
        description="when the run is interrupted (SIGINT/SIGTERM; in Python, task cancellation, "
        "KeyboardInterrupt or SystemExit): cancel its jobs in flight, or leave them running",
    )
    grace: Duration = Field(
        default=30.0, ge=0, description="time allowed for cancels after an interrupt, e.g. 45s"
    )

    if TYPE_CHECKING:

        def __init__(self, **fields: Unpack[RunOptionsArgs]) -> None: ...
