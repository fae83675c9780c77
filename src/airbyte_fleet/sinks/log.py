"""Every event as one structured log line: the machine-readable record of a run, on stderr."""

from __future__ import annotations

import logging
from typing import Any

from airbyte_fleet._logging import get_logger
from airbyte_fleet.engine.events import (
    Event,
    SyncCancelled,
    SyncFailed,
    SyncRetrying,
    SyncSkipped,
    SyncTimedOut,
    SyncTriggering,
)

__all__ = ["LogSink", "level_for"]


def level_for(event: Event) -> int:
    """The log level an event deserves: what needs a human's attention must stand out in a grep."""
    if isinstance(event, SyncFailed | SyncTimedOut):
        return logging.ERROR
    if isinstance(event, SyncSkipped):
        # A skip chosen by policy is routine; one we were forced into by an error is not.
        return logging.ERROR if event.outcome == "error" else logging.INFO
    if isinstance(event, SyncRetrying | SyncCancelled):
        # Not yet (or not necessarily) a failure of the run, but an attempt was lost.
        return logging.WARNING
    if isinstance(event, SyncTriggering):
        # The journal's write-ahead marker; sync_triggered follows a moment later.
        return logging.DEBUG
    return logging.INFO


class LogSink:
    """Subscribe to the bus to get one structlog line per event.

    The line's ``event`` is the event kind and its other keys are exactly :meth:`Event.to_dict`,
    so a reader can rebuild the run from the log, but for the event's ``at``: it is the line's
    ``timestamp``, the one time key every log line has. Values go to structlog as data, never
    through a markup engine, so connection names and ids are written as they are.
    """

    def __init__(self, logger: Any | None = None) -> None:
        # structlog resolves this lazily: configuring logging after building the sink still applies.
        self._log: Any = logger if logger is not None else get_logger("airbyte_fleet.run")

    def __call__(self, event: Event) -> None:
        fields = event.to_dict()
        kind = fields.pop("event")
        fields.pop("at", None)
        # A datetime, which the logging set-up writes as UTC ISO text like any line's time.
        self._log.log(level_for(event), kind, timestamp=event.at, **fields)

    def __repr__(self) -> str:
        return "LogSink()"
