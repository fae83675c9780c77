"""Every event worth a line as one structured log line: the machine-readable record of a run, on
stderr.

What a line costs is paid per sync, so the level follows how many syncs the run has: every sync
gets one line at its end (``info``, ``warning`` or ``error``); its status changes are ``debug``
(``--log-level debug``); its ``sync_triggered`` line is ``info`` in a run of up to
:data:`TRIGGERS_AT_INFO` syncs, where a person reads the log, and ``debug`` above it.
"""

from __future__ import annotations

import logging
from typing import Any

from airbyte_fleet._logging import get_logger
from airbyte_fleet.engine.events import (
    Event,
    RunStarted,
    SyncCancelled,
    SyncFailed,
    SyncRetrying,
    SyncSkipped,
    SyncsPlanned,
    SyncStatusChanged,
    SyncTimedOut,
    SyncTriggered,
    SyncTriggering,
)

__all__ = ["TRIGGERS_AT_INFO", "LogSink", "level_for"]

#: A run of more syncs than this logs each ``sync_triggered`` at debug: at 10,000 syncs those
#: lines are a tenth of a run's CPU, and each sync's end line says its job id anyway.
TRIGGERS_AT_INFO = 100


def level_for(event: Event, *, total: int | None = None) -> int:
    """The log level an event deserves: what needs a human's attention must stand out in a grep.
    *total*: the run's number of syncs, when known."""
    if isinstance(event, SyncFailed | SyncTimedOut):
        return logging.ERROR
    if isinstance(event, SyncSkipped):
        # A skip chosen by policy is routine; one we were forced into by an error is not.
        return logging.ERROR if event.outcome == "error" else logging.INFO
    if isinstance(event, SyncRetrying | SyncCancelled):
        # Not yet (or not necessarily) a failure of the run, but an attempt was lost.
        return logging.WARNING
    if isinstance(event, SyncTriggering | SyncStatusChanged):
        # The journal's write-ahead marker (sync_triggered follows a moment later), and the steps
        # of a job on its way to the end its final line reports.
        return logging.DEBUG
    if isinstance(event, SyncTriggered) and total is not None and total > TRIGGERS_AT_INFO:
        return logging.DEBUG
    if isinstance(event, SyncsPlanned):
        # One line a page of the connection list; the last part says the plan is complete,
        # or why it is not.
        if event.error is not None:
            return logging.ERROR
        return logging.INFO if event.final else logging.DEBUG
    return logging.INFO


class LogSink:
    """Subscribe to the bus to get one structlog line per event (at the level of
    :func:`level_for`, so some only with ``--log-level debug``).

    The line's ``event`` is the event kind and its other keys are exactly :meth:`Event.to_dict`,
    so a reader can rebuild the run from the log, but for the event's ``at``: it is the line's
    ``timestamp``, the one time key every log line has. Values go to structlog as data, never
    through a markup engine, so connection names and ids are written as they are.
    """

    def __init__(self, logger: Any | None = None) -> None:
        # structlog resolves this lazily: configuring logging after building the sink still applies.
        self._log: Any = logger if logger is not None else get_logger("airbyte_fleet.run")
        self._total: int | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted | SyncsPlanned):
            # A plan read while the run goes on: the total grows with each part.
            self._total = event.total
        level = level_for(event, total=self._total)
        if not self._enabled(level):
            # Before the line is made: most lines of a large run are below the level shown.
            return
        fields = event.to_dict()
        kind = fields.pop("event")
        fields.pop("at", None)
        # A datetime, which the logging set-up writes as UTC ISO text like any line's time.
        self._log.log(level, kind, timestamp=event.at, **fields)

    def _enabled(self, level: int) -> bool:
        # Looked up at each line, as the logger resolves its configuration at each line; a logger
        # that cannot say gets every line, and filters them itself.
        check = getattr(self._log, "is_enabled_for", None)
        return True if check is None else bool(check(level))

    def __repr__(self) -> str:
        return "LogSink()"
