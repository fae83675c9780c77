"""structlog set-up: JSON lines (or console lines) on stderr, with secrets masked on the way out."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import stamina.instrumentation
import structlog

from airbyte_fleet._redact import redact

__all__ = ["LogFormat", "configure_logging"]

LogFormat = Literal["json", "console"]


def _redact_values(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = redact(value)
        elif isinstance(value, BaseException):
            event[key] = redact(str(value))
    return event


def configure_logging(
    fmt: LogFormat = "json", level: str = "info", stream: TextIO | None = None
) -> None:
    """Route every structlog logger to *stream* (stderr): stdout belongs to results."""
    out = stream or sys.stderr
    # The client logs its own `airbyte_retry` lines with the request named; stamina's would repeat them.
    stamina.instrumentation.set_on_retry_hooks([])
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
