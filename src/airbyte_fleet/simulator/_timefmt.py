"""Date and duration text exactly as Airbyte's Java/Kotlin server renders it."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

__all__ = ["java_duration", "java_offset_datetime", "parse_datetime_param"]

_DIGITS = re.compile(r"^-?\d+$")


# Jobs listed together mostly changed in the same few seconds: a page of 100 needs a handful
# of distinct texts, and formatting was a third of the cost of a job's view.
@lru_cache(maxsize=4096)
def java_offset_datetime(epoch_seconds: int) -> str:
    """Render like ``OffsetDateTime.toString()`` in UTC.

    Java omits the seconds field when it is zero (``2023-03-25T01:30Z``); clients that parse
    with a strict ``%H:%M:%S`` pattern break once a minute, which is worth reproducing.
    """
    dt = datetime.fromtimestamp(epoch_seconds, tz=UTC)
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}"
    if dt.second:
        text += f":{dt.second:02d}"
    return text + "Z"


@lru_cache(maxsize=4096)
def java_duration(seconds: int) -> str:
    """Render like ``java.time.Duration.ofSeconds(n).toString()`` (``PT0S``, ``PT1M5S``, ``PT25H``)."""
    if seconds < 0:
        raise ValueError("negative durations are not produced by the server")
    if seconds == 0:
        return "PT0S"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "PT"
    if hours:
        text += f"{hours}H"
    if minutes:
        text += f"{minutes}M"
    if secs:
        text += f"{secs}S"
    return text


def parse_datetime_param(value: str) -> float:
    """Parse a ``createdAtStart``-style query value to epoch seconds.

    The server type is ``OffsetDateTime`` (ISO-8601), but the spec's examples show epoch
    milliseconds, so both are accepted. A zone-less ISO value is taken as UTC.
    """
    text = value.strip()
    if _DIGITS.match(text):
        return int(text) / 1000.0
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 date-time or epoch millis: {value!r}") from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()
