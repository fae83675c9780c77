"""structlog set-up: JSON lines (or console lines) on stderr, with secrets masked on the way out."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import stamina.instrumentation
import structlog

from airbyte_fleet._redact import redact

__all__ = ["LogFormat", "configure_logging", "configured_format", "get_logger", "wants_color"]

LogFormat = Literal["json", "console"]

# What the last configure_logging() chose: the CLI's last words follow the same format.
_configured: LogFormat | None = None


def _redact_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
        elif isinstance(value, BaseException):
            event[key] = redact(str(value))
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
    global _configured
    out = stream or sys.stderr
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
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    _configured = fmt


def configured_format() -> LogFormat | None:
    """The format logging was last configured with, or None before the first time."""
    return _configured


def get_logger(name: str) -> Any:
    """The library's logger *name* (under ``airbyte_fleet``)."""
    return structlog.get_logger(name)
