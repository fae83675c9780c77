"""What to run and how: the same models serve CLI flags, the TOML file and (later) the HTTP API."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
)

from airbyte_fleet._messages import did_you_mean, spell_out_controls
from airbyte_fleet._validation import invalid

__all__ = [
    "Duration",
    "IfRunning",
    "JobTypeName",
    "PollMode",
    "RunOptions",
    "Selection",
    "parse_duration",
]

JobTypeName = Literal["sync", "reset", "clear", "refresh"]
IfRunning = Literal["adopt", "skip", "fail"]
PollMode = Literal["auto", "batched", "per-job"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> float:
    """``45m``, ``1h30m``, ``90s``, ``1.5h``, ``250ms`` or plain seconds → seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a text like 45m, 1h30m, 90s")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = _PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(
                    f"{_quoted(value)} is not a duration; write it like 45m, 1h30m, 90s or 2.5"
                ) from None
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    else:
        raise ValueError("a duration is a number of seconds or a text like 45m, 1h30m, 90s")
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError(f"{_quoted(value)} is not a duration of zero or more seconds")
    return seconds


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Selection(_Strict):
    """Which connections: explicit ids, plus the connections that match every filter given."""

    connections: UuidList = Field(default_factory=list, description="connection ids")
    names: StrList = Field(default_factory=list, description="connection name globs")
    tags: StrList = Field(default_factory=list, description="connection tag names")
    workspaces: UuidList = Field(default_factory=list, description="workspace ids")
    all: bool = Field(default=False, description="every connection the credentials can see")
    groups: GroupNames = Field(
        default_factory=list, description="named groups from the config file"
    )

    @property
    def filters_given(self) -> bool:
        return bool(self.names or self.tags or self.workspaces or self.all)

    @property
    def empty(self) -> bool:
        return not (self.connections or self.filters_given or self.groups)


class RunOptions(_Strict):
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
