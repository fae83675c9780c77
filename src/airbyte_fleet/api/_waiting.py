"""Saying what a request waits for once the wait gets long: a hung Airbyte must not be silence.

A request that gets no answer can take its whole connect and read timeouts (10 s and 120 s by
default) before it fails. One info line, logged once a wait passes a short threshold, names the
request, how long it may still take and which settings shorten that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from airbyte_fleet._logging import get_logger

__all__ = ["PROBE_HINT", "REQUEST_HINT", "say_waiting", "when_slow"]

log = get_logger("airbyte_fleet.api")

REQUEST_HINT = "AIRBYTE_CONNECT_TIMEOUT and AIRBYTE_READ_TIMEOUT (seconds) set how long to wait"
PROBE_HINT = (
    "AIRBYTE_CONNECT_TIMEOUT (seconds) sets how long each probe waits; a full AIRBYTE_BASE_URL "
    "(ending in /api/public/v1 or /v1) needs no probe"
)


@contextmanager
def when_slow(seconds: float, say: Callable[[], None]) -> Iterator[None]:
    """Call *say* if the block is still running *seconds* from now (a timer, not a task: cheap
    enough for every request of a 10,000-sync run)."""
    handle = asyncio.get_running_loop().call_later(seconds, say)
    try:
        yield
    finally:
        handle.cancel()


def say_waiting(request: str, url: str, *, waited_s: float, hint: str, **timeouts: float) -> None:
    """The one line: what is waited for, since when, and the timeouts (``*_s`` fields) in force."""
    log.info("airbyte_waiting", request=request, url=url, waited_s=waited_s, **timeouts, hint=hint)
