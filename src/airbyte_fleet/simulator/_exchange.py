"""The record of one HTTP exchange, as tests and spec validators see it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAULT_KINDS", "Exchange"]

#: Every value ``Exchange.fault`` can take besides None.
FAULT_KINDS: tuple[str, ...] = (
    "429",
    "5xx",
    "reset",
    "down",
    "token_failure",
    "malformed",
    "slow_post",
    "odd_status",
)


@dataclass(frozen=True)
class Exchange:
    """One request and its answer. ``status`` is 0 when the connection was dropped on purpose.

    ``route`` is the spec path template without prefix (``/jobs/{jobId}``), or None for a path
    the API does not have; ``prefix`` is ``/api/public/v1``, ``/v1`` or ``""`` (root health).
    Header names are lower-cased; ``at`` is the simulator clock when the request arrived.

    ``fault`` names the deliberate fault behind the answer, or is None for an honest one:
    ``"429"``, ``"5xx"``, ``"token_failure"`` and ``"malformed"`` (injected before any handler
    ran, so nothing was created), ``"reset"`` and ``"down"`` (connection dropped, ``status``
    0), ``"odd_status"`` (a job in the body reports a status outside the spec's enum, from
    ``JobScript.odd_status``) and ``"slow_post"`` (a POST /jobs held back before its answer;
    unlike the others its response is valid and complete).
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
    fault: str | None = None
