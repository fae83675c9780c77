"""`airbyte-fleet schedules`: the next fire times, or one sentence about what is wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from airbyte_fleet.cli import main


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return str(path)


def test_next_fire_times_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(
        tmp_path,
        '[schedules.nightly]\ncron = "0 2 * * *"\ntimezone = "Europe/Berlin"\ntags = ["nightly"]\n',
    )
    code = main(["schedules", "--config", config, "--output", "json", "--count", "2"])
    out = capsys.readouterr().out
    assert code == 0
    (row,) = json.loads(out)
    assert row["name"] == "nightly"
    first, second = (datetime.fromisoformat(t) for t in row["next"])
    assert (second - first).total_seconds() in (23 * 3600, 24 * 3600, 25 * 3600)
    # 02:00 in Berlin, written with Berlin's offset on that day (+01:00 or +02:00), the next one.
    berlin = ZoneInfo("Europe/Berlin")
    for fire in (first, second):
        assert fire.utcoffset() == fire.astimezone(berlin).utcoffset()
        assert fire.astimezone(berlin).time() == time(2, 0)
    now = datetime.now(UTC)
    assert now < first <= now + timedelta(days=1)
    assert row["next_local"][0] == first.astimezone(berlin).strftime("%Y-%m-%d 02:00 %Z")
    assert row["next_utc"][0] == first.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[schedules.x]\ncron = "61 * * * *"\nall = true\n', "schedules.x"),
        (
            '[schedules.x]\ncron = "0 2 * * *"\ntimezone = "Mars/Olympus"\nall = true\n',
            "Mars/Olympus",
        ),
    ],
)
def test_a_bad_schedule_is_exit_2_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    code = main(["schedules", "--config", _write(tmp_path, text)])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert fragment in captured.err
    # One sentence; the log line naming the file read is not part of it.
    assert len([ln for ln in captured.err.splitlines() if "config_file" not in ln]) == 1
