"""Time sources. Job state is derived from the clock on every read, so tests drive it here."""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "RealClock"]


@runtime_checkable
class Clock(Protocol):
    """Anything with ``now()`` returning epoch-like seconds."""

    def now(self) -> float: ...


class RealClock:
    """Wall-clock time (``time.time``), so ``startTime`` values look like real ones."""

    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that only moves when told to; lets tests walk jobs through states without sleeping."""

    def __init__(self, start: float = 1_760_000_000.0) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("a FakeClock cannot go backwards")
        self._now += seconds
        return self._now

    def set(self, when: float) -> None:
        """Jump to an absolute time (not earlier than now)."""
        if when < self._now:
            raise ValueError("a FakeClock cannot go backwards")
        self._now = float(when)

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"
