"""Where the package's log lines go: the standard ``logging`` module, or the CLI's lines on stderr.

Every module logs through :func:`get_logger`. Until :func:`configure_logging` runs (a program that
embeds the library), a line becomes a record of ``logging.getLogger(name)`` (see
``_stdlib_logging``), silent unless the host configures logging, never on stdout, and structlog's
global configuration, which belongs to the host, is neither read nor changed. Once the CLI or
``serve`` calls :func:`configure_logging`, lines go through structlog as JSON (or console) lines
on stderr. Either way secrets are masked on the way out.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import stamina.instrumentation
import structlog

from airbyte_fleet import _stdlib_logging
from airbyte_fleet._redact import redact

__all__ = [
    "FleetLogger",
    "LogFormat",
    "configure_logging",
    "configured_format",
    "get_logger",
    "reset_logging",
    "wants_color",
]

LogFormat = Literal["json", "console"]

# What the last configure_logging() chose: the CLI's last words follow the same format.
_configured: LogFormat | None = None
# Lines go through structlog (set by configure_logging), not to the standard logging module.
_via_structlog = False
# The level the CLI shows (configure_logging); NOTSET: every line (tests capturing structlog).
_cli_level = logging.NOTSET


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseException):
        return redact(str(value))
    # A list or dict of values would print a secret inside it as it is.
    if type(value) is list:
        return [_masked(item) for item in value]
    if type(value) is tuple:
        return tuple(_masked(item) for item in value)
    if type(value) is dict:
        return {key: _masked(item) for key, item in value.items()}
    return value


def _redact_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        event[key] = _masked(value)
    return event


def _timestamp(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # One time key per line. An event line brings its own moment (the event's ``at``, which the
    # journal keeps too), so the log and the journal agree; every other line gets "now".
    at = event.get("timestamp")
    if not isinstance(at, datetime):
        at = datetime.now(UTC)
    elif at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    event["timestamp"] = (
        at.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )
    return event


def wants_color(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour on a terminal, unless ``NO_COLOR`` says no (https://no-color.org) or ``FORCE_COLOR``
    says yes (https://force-color.org); either counts when set to anything but the empty text."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def configure_logging(
    fmt: LogFormat = "json", level: str = "info", stream: TextIO | None = None
) -> None:
    """Route every structlog logger to *stream* (stderr): stdout belongs to results."""
    global _configured, _via_structlog, _cli_level
    out = stream or sys.stderr
    _cli_level = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    # The client logs its own `airbyte_retry` lines with the request named; stamina's would repeat them.
    stamina.instrumentation.set_on_retry_hooks([])
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=wants_color(out))
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _timestamp,
            _redact_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_cli_level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _configured = fmt
    _via_structlog = True


def configured_format() -> LogFormat | None:
    """The format logging was last configured with, or None before the first time."""
    return _configured


def reset_logging(*, via_structlog: bool = False) -> None:
    """Forget :func:`configure_logging` (for tests): back to library mode, or, *via_structlog*,
    to lines handed to structlog as it is configured (where ``structlog.testing.capture_logs``
    sees them)."""
    global _configured, _via_structlog, _cli_level
    _configured = None
    _via_structlog = via_structlog
    _cli_level = logging.NOTSET


def get_logger(name: str) -> FleetLogger:
    """The library's logger *name* (under ``airbyte_fleet``)."""
    return FleetLogger(name)


# Library mode's processors after contextvars and exceptions: the CLI's, but for the renderer.
_LIBRARY_PROCESSORS: tuple[_stdlib_logging.Processor, ...] = (
    structlog.processors.add_log_level,
    _timestamp,
    _redact_values,
)
_stamina_checked = False


class FleetLogger:
    """A logger that follows the mode in force when it logs, not when it was made: modules get
    theirs at import, before the CLI configures anything."""

    __slots__ = ("_stdlib", "_structlog")

    def __init__(self, name: str) -> None:
        self._stdlib = logging.getLogger(name)
        # structlog's lazy proxy reads its configuration at each call, as before library mode.
        self._structlog: Any = structlog.get_logger(name)

    def is_enabled_for(self, level: int) -> bool:
        """Whether a line at *level* would be shown: callers that build costly lines ask first."""
        if _via_structlog:
            return level >= _cli_level
        return self._stdlib.isEnabledFor(level)

    def debug(self, event: str, **fields: Any) -> None:
        self._emit(logging.DEBUG, "debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(logging.INFO, "info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(logging.WARNING, "warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._emit(logging.ERROR, "error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        self._emit(logging.CRITICAL, "critical", event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        """An error line about the exception being handled."""
        fields.setdefault("exc_info", True)
        self._emit(logging.ERROR, "exception", event, fields)

    def log(self, level: int, event: str, **fields: Any) -> None:
        self._emit(level, "log", event, fields)

    def _emit(self, level: int, method: str, event: str, fields: dict[str, Any]) -> None:
        global _stamina_checked
        if _via_structlog:
            if method == "log":
                self._structlog.log(level, event, **fields)
            else:
                getattr(self._structlog, method)(event, **fields)
            return
        if not _stamina_checked:
            # Before the level check: a retry's airbyte_retry line comes here (shown or not)
            # before stamina's hooks see the retry, so the first retry finds them set.
            _stamina_checked = True
            _stdlib_logging.quiet_stamina_for_own_retries()
        # The level first, and cheap: the engine logs in hot paths, and a host shows little.
        if not self._stdlib.isEnabledFor(level):
            return
        if method == "log":
            method = logging.getLevelName(level).lower()
        # The record's caller: emit < _emit < the public method < the caller.
        _stdlib_logging.emit(
            self._stdlib, level, method, event, fields, _LIBRARY_PROCESSORS, stacklevel=4
        )
