"""``GET /readyz``'s answer: the latest check of Airbyte, made again when it gets old.

A probe has about a second and carries no secrets, while a check of Airbyte (its health, then an
authenticated read) can take the whole ready timeout when Airbyte stalls. So a probe never waits
long: it gets the latest finished check. A check older than ``max_age`` starts a new one (one at
a time, in the background); the probe waits for it only until ``wait`` seconds after it started,
which is enough when Airbyte answers and short when it does not. Checks run only while someone
asks, so an idle worker sends Airbyte nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteError
from airbyte_fleet.errors import FleetError

__all__ = ["NOT_CHECKED_YET", "Readiness"]

log = get_logger("airbyte_fleet.service")

NOT_CHECKED_YET = "The worker has not heard back from Airbyte yet; ask again in a few seconds."


class Readiness:
    """Why the worker cannot take runs, from the latest check of *check* (which raises
    :class:`AirbyteError` when Airbyte refuses or cannot be reached, and another
    :class:`FleetError` when the store does not answer)."""

    def __init__(
        self,
        check: Callable[[], Awaitable[None]],
        *,
        timeout: float,
        max_age: float = 5.0,
        wait: float = 0.8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self._timeout = timeout
        self._max_age = max_age
        self._wait = wait
        self._clock = clock
        self._reason: str | None = NOT_CHECKED_YET
        self._checked_at: float | None = None
        self._started_at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def reason(self) -> str | None:
        """One sentence saying why not, or None when Airbyte took the latest check."""
        now = self._clock()
        running = self._task is not None and not self._task.done()
        if not running and (self._checked_at is None or now - self._checked_at >= self._max_age):
            self._task = asyncio.create_task(self._run(), name="readiness-check")
            self._started_at = now
        task = self._task
        left = self._started_at + self._wait - now
        if task is not None and not task.done() and left > 0:
            # asyncio.wait never cancels the check: a probe that gives up leaves it running.
            await asyncio.wait({task}, timeout=left)
        return self._reason

    async def close(self) -> None:
        """Stop a check in flight (the client it uses is about to close)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._check()
            reason = None
        except TimeoutError:
            reason = (
                f"Airbyte did not answer within {self._timeout:g} s; check that it is up and "
                "AIRBYTE_BASE_URL points at it."
            )
        except AirbyteError as exc:
            reason = exc.message
        except FleetError as exc:
            # The store the replicas share does not answer: this one cannot take runs either.
            reason = exc.message
        except Exception as exc:
            # A probe must get an answer whatever the check ran into.
            log.error("readiness_check_failed", error=repr(exc))
            reason = "The worker could not check Airbyte; its log has the details."
        self._reason = reason
        self._checked_at = self._clock()
