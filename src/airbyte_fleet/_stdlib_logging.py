"""Library mode: the package's log lines as records of the standard :mod:`logging` module.

A program that embeds airbyte-fleet (a Dagster asset, an Airflow task, a Prefect flow) sees every
line as a record of ``logging.getLogger("airbyte_fleet.<part>")``: silent until it configures
logging (a ``NullHandler`` sits on ``airbyte_fleet``), then shown by its own handlers. A record's
message reads as one logfmt line, ``sync_succeeded run_id=... job_id=...``, which is what a task
log shows; its ``airbyte_fleet`` attribute holds the fields as a dict (the keys the CLI's JSON
line has) for structured handlers. Secrets are masked as on the CLI's lines.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from contextlib import AbstractContextManager
from typing import Any

import stamina.instrumentation
import structlog
from stamina.instrumentation import (
    LoggingOnRetryHook,
    PrometheusOnRetryHook,
    RetryDetails,
    RetryHook,
    RetryHookFactory,
    StructlogOnRetryHook,
)

from airbyte_fleet._redact import redact
from airbyte_fleet.errors import FleetError

__all__ = ["FIELDS_ATTRIBUTE", "ROOT", "emit", "quiet_stamina_for_own_retries"]

ROOT = "airbyte_fleet"
#: The record attribute holding a line's fields. One name of our own: ``extra=`` keys that are
#: LogRecord attributes (``message``, ``name``, ``args``...) make logging raise.
FIELDS_ATTRIBUTE = "airbyte_fleet"
# Left out of the message: the record carries its own level and time.
_NOT_IN_MESSAGE = frozenset({"event", "level", "timestamp"})
_NEEDS_QUOTES = re.compile(r'[ ="\\]')

Processor = Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]

# A library is silent until its host configures logging; without a handler of ours, Python's
# "last resort" would print our warnings on stderr.
logging.getLogger(ROOT).addHandler(logging.NullHandler())


def _exception_as_text(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # No traceback ever reaches a user (and a traceback's text would bypass redaction): an
    # exception travels as one line, masked like every other value.
    exc_info = event.pop("exc_info", None)
    if exc_info:
        if isinstance(exc_info, BaseException):
            exc: BaseException | None = exc_info
        elif isinstance(exc_info, tuple):
            exc = exc_info[1]
        else:
            exc = sys.exc_info()[1]
        if exc is not None:
            event.setdefault("exception", repr(exc))
    return event


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    # Strings come masked; what another type prints may spell a secret.
    text = value if isinstance(value, str) else redact(str(value))
    if text and text.isprintable() and not _NEEDS_QUOTES.search(text):
        return text
    # Quoted, with every control or separator character escaped: a value from Airbyte (a
    # connection's name) must not start a forged line or move the cursor in a task log.
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return '"' + "".join(out) + '"'


def message(event: Mapping[str, Any]) -> str:
    """``<event> key=value ...``: logfmt after the event's name."""
    parts = [str(event.get("event", ""))]
    parts += [f"{key}={_value(v)}" for key, v in event.items() if key not in _NOT_IN_MESSAGE]
    return " ".join(parts)


def emit(
    logger: logging.Logger,
    level: int,
    method: str,
    event: str,
    fields: dict[str, Any],
    processors: tuple[Processor, ...],
    stacklevel: int,
) -> None:
    """Run *processors* over the line and hand *logger* one record (the level is checked already).

    *stacklevel* counts from this function to the frame the record names as its caller.
    """
    fields["event"] = event
    event_dict: MutableMapping[str, Any] = fields
    for processor in (structlog.contextvars.merge_contextvars, _exception_as_text, *processors):
        event_dict = processor(logger, method, event_dict)
    logger.log(
        level,
        message(event_dict),
        extra={FIELDS_ATTRIBUTE: dict(event_dict)},
        stacklevel=stacklevel,
    )


# ---------------------------------------------------------------------------------- stamina

_LOGGING_HOOKS = (StructlogOnRetryHook, LoggingOnRetryHook)
_STAMINA_HOOKS = (*_LOGGING_HOOKS, PrometheusOnRetryHook)
# What stamina names a retry_context() loop, which is how the client retries.
_CONTEXT_BLOCK = "<context block>"


def _made_by(hook: Any, factory: RetryHookFactory) -> bool:
    made = factory.hook_factory
    return bool(
        getattr(hook, "__module__", None) == made.__module__
        and getattr(hook, "__qualname__", "").startswith(f"{made.__qualname__}.<locals>.")
    )


def _skipping_own(hook: RetryHook) -> RetryHook:
    def skip_own_retries(details: RetryDetails) -> AbstractContextManager[None] | None:
        if details.name == _CONTEXT_BLOCK and isinstance(details.caused_by, FleetError):
            return None
        return hook(details)

    return skip_own_retries


def quiet_stamina_for_own_retries() -> None:
    """Keep stamina's default hooks from logging the client's own retries.

    stamina's hooks are global. By default (structlog installed) they log every retry through
    structlog, which unconfigured prints on stdout: our client's retries would reach the host's
    stdout although the client already logs each one (``airbyte_retry``, through this module).
    So when the hooks are still stamina's own, its logging hooks are wrapped to pass over a retry
    of the client (a ``retry_context`` loop failing with one of our errors) and to log every
    other retry in the process as before; Prometheus keeps counting ours. Hooks the host chose
    (anything else, or none) are left exactly as they are.
    """
    hooks = stamina.instrumentation.get_on_retry_hooks()
    if not hooks or not all(any(_made_by(h, f) for f in _STAMINA_HOOKS) for h in hooks):
        return
    stamina.instrumentation.set_on_retry_hooks(
        [_skipping_own(h) if any(_made_by(h, f) for f in _LOGGING_HOOKS) else h for h in hooks]
    )
