"""Java-compatible rendering of times and durations."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airbyte_fleet.simulator._timefmt import (
    java_duration,
    java_offset_datetime,
    parse_datetime_param,
)

DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "PT0S"),
        (8, "PT8S"),
        (60, "PT1M"),
        (65, "PT1M5S"),
        (3600, "PT1H"),
        (29172, "PT8H6M12S"),
        (90061, "PT25H1M1S"),
    ],
)
def test_java_duration_examples(seconds: int, text: str) -> None:
    assert java_duration(seconds) == text


@given(st.integers(min_value=0, max_value=10**7))
def test_java_duration_round_trips(seconds: int) -> None:
    match = DURATION.match(java_duration(seconds))
    assert match is not None
    hours, minutes, secs = (int(part or 0) for part in match.groups())
    assert hours * 3600 + minutes * 60 + secs == seconds
    assert minutes < 60
    assert secs < 60


def test_offset_datetime_drops_zero_seconds_like_java() -> None:
    assert java_offset_datetime(1_679_707_850) == "2023-03-25T01:30:50Z"
    assert java_offset_datetime(1_679_707_800) == "2023-03-25T01:30Z"


@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_offset_datetime_round_trips(epoch: int) -> None:
    text = java_offset_datetime(epoch)
    assert datetime.fromisoformat(text).timestamp() == epoch
    assert (len(text) == len("2023-03-25T01:30Z")) is (epoch % 60 == 0)


def test_parse_datetime_param_accepts_iso_and_millis() -> None:
    assert parse_datetime_param("1687450500000") == 1_687_450_500.0
    assert parse_datetime_param("2023-06-22T16:15:00Z") == 1_687_450_500.0
    assert parse_datetime_param("2023-06-22T18:15:00+02:00") == 1_687_450_500.0
    assert parse_datetime_param("2023-06-22T16:15:00") == 1_687_450_500.0
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_datetime_param("last tuesday")
    assert datetime.fromtimestamp(parse_datetime_param("2023-06-22T16:15Z"), tz=UTC).minute == 15
