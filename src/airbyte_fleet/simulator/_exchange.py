"""The record of one HTTP exchange, as tests and spec validators see it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Exchange"]


@dataclass(frozen=True)
class Exchange:
    """One request and its answer. ``status`` is 0 when the connection was dropped on purpose.

    ``route`` is the spec path template without prefix (``/jobs/{jobId}``), or None for a path
    the API does not have; ``prefix`` is ``/api/public/v1``, ``/v1`` or ``""`` (root health).
    Header names are lower-cased; ``at`` is the simulator clock when the request arrived.
    """

    method: str
    path: str
    query: str
    route: str | None
    prefix: str
    request_headers: dict[str, str]
    request_body: bytes
    status: int
    response_headers: dict[str, str]
    response_body: bytes
    at: float
