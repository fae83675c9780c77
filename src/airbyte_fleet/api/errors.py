"""What can go wrong when talking to Airbyte, as a small hierarchy callers can act on.

Every message is one plain sentence that names the fix; none ever carries a secret (messages pass
through :func:`airbyte_fleet._redact.redact`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from airbyte_fleet._redact import redact
from airbyte_fleet.errors import FleetError

__all__ = [
    "AirbyteError",
    "AlreadyRunningError",
    "AuthError",
    "BadRequestError",
    "ConflictError",
    "InactiveConnectionError",
    "NotFoundError",
    "PagingError",
    "Problem",
    "RateLimitedError",
    "ServerError",
    "TransportError",
    "TriggerOutcomeUnknownError",
    "UnreachableError",
]


@dataclass(frozen=True)
class Problem:
    """The useful parts of an Airbyte error body.

    The public API answers with RFC 9457-style problems (``type``/``title``/``detail``/``data``)
    whose specific text sits in ``data.message``; other paths answer ``{"errorId": ...}``,
    ``{"message": ...}`` or Micronaut's KnownExceptionInfo. All of them land here.
    """

    status: int
    type: str | None = None
    title: str | None = None
    detail: str | None = None
    message: str | None = None
    error_id: str | None = None

    @classmethod
    def parse(cls, status: int, body: bytes | str | None) -> Problem:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else (body or "")
        try:
            doc: Any = json.loads(text) if text.strip() else {}
        except ValueError:
            # A proxy's HTML error page: keep a short, single-line excerpt as the message. Masked
            # before it is cut or folded, or a secret it echoes could be cut where no mask finds it.
            excerpt = " ".join(redact(text).split())[:200]
            return cls(status=status, message=excerpt or None)
        if not isinstance(doc, dict):
            return cls(status=status)
        data = doc.get("data")
        message = data.get("message") if isinstance(data, dict) else None
        message = message or doc.get("message")
        return cls(
            status=status,
            type=_str_or_none(doc.get("type")),
            title=_str_or_none(doc.get("title")),
            detail=_str_or_none(doc.get("detail")),
            message=_str_or_none(message),
            error_id=_str_or_none(doc.get("errorId")),
        )

    @property
    def text(self) -> str:
        """The most specific human text the body had."""
        return self.message or self.detail or self.title or ""

    def is_type(self, suffix: str) -> bool:
        return bool(
            (self.type and self.type.endswith(suffix)) or (self.title and self.title == suffix)
        )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class AirbyteError(FleetError):
    """Base of every error this package raises about Airbyte."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str | None = None,
        url: str | None = None,
        problem: Problem | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.url = redact(url) if url else None
        self.problem = problem

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class TransportError(AirbyteError):
    """No HTTP answer: refused, reset, timed out, DNS."""


class UnreachableError(TransportError):
    """Airbyte could not be reached at any URL we tried."""


class TriggerOutcomeUnknownError(TransportError):
    """``POST /jobs`` got no clear answer: the job may or may not exist.

    Never retry blindly on this one; list the connection's recent jobs first. ``answer`` is the
    5xx that Airbyte (or a proxy in front of it) answered with, if one came. An answer means the
    server is done with the request, so once the job list shows no job from it, that refusal is
    clear and the trigger may be tried again under the HTTP retry policy
    (:meth:`AirbyteClient.retrying`). Without one (a timeout, a reset, a garbled body) the job may
    still be in the making, and the caller waits longer before looking again.
    """

    def __init__(
        self,
        message: str,
        *,
        happened: str | None = None,
        answer: ServerError | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(message, **kw)
        # What happened, without the message's conclusion that the outcome is unknown: for the
        # caller to say once it has looked and knows better.
        self.happened = happened or message
        self.answer = answer


class AuthError(AirbyteError):
    """Credentials missing, wrong or not allowed (401/403, or a failed token request)."""


class NotFoundError(AirbyteError):
    """The connection, job or workspace does not exist (404)."""


class BadRequestError(AirbyteError):
    """Airbyte refused the request as invalid (400/422)."""


class ConflictError(AirbyteError):
    """409: the resource is not in a state that allows the request."""


class AlreadyRunningError(ConflictError):
    """409 try-again-later: the connection already has a sync running."""

    def __init__(self, message: str, *, connection_id: str | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.connection_id = connection_id


class InactiveConnectionError(ConflictError):
    """409 state-conflict on a trigger: the connection is inactive, locked or auto-disabled."""


class RateLimitedError(AirbyteError):
    """429; ``retry_after`` is the server's hint in seconds, if it sent one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class PagingError(AirbyteError):
    """A paged list could not be read to its end: pages kept bringing nothing new (the server
    ignores ``offset``, or the list changes faster than it can be read). What was read before
    has been given; the rest has not been seen."""


class ServerError(AirbyteError):
    """5xx from Airbyte or a proxy in front of it."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after
