"""The `run` flags generated from RunOptions: every field has one, spelled as before, and the
help shows the model's own default."""

from __future__ import annotations

from typing import Any

import pytest

from airbyte_fleet.cli import build_parser, main
from airbyte_fleet.cli.parser import run_option_flags
from airbyte_fleet.engine.options import RunOptions
from airbyte_fleet.resolve import merge_run_options

# One flag per field, each set to a value other than the default, with what the model makes of it.
FLAGS: list[tuple[list[str], str, Any]] = [
    (["--job-type", "refresh"], "job_type", "refresh"),
    (["--max-concurrency", "+3"], "max_concurrency", 3),
    (["--poll-interval", "250ms"], "poll_interval", 0.25),
    (["--poll-mode", "per-job"], "poll_mode", "per-job"),
    (["--timeout", "1h30m"], "timeout", 5400.0),
    (["--deadline", "4h"], "deadline", 14400.0),
    (["--retries", " 2 "], "retries", 2),
    (["--retry-backoff", "0"], "retry_backoff", 0.0),
    (["--no-wait"], "wait", False),
    (["--if-running", "skip"], "if_running", "skip"),
    (["--include-inactive"], "include_inactive", True),
    (["--no-cancel-on-timeout"], "cancel_on_timeout", False),
]


def _options(*argv: str) -> RunOptions:
    args = build_parser().parse_args(["run", "--all", *argv])
    return merge_run_options({}, run_option_flags(args))


def test_every_run_option_has_its_flag() -> None:
    # A new RunOptions field gets a flag by itself; this list must then name it too.
    assert sorted(field for _, field, _ in FLAGS) == sorted(RunOptions.model_fields)


@pytest.mark.parametrize(("argv", "field", "value"), FLAGS, ids=[f for _, f, _ in FLAGS])
def test_a_flag_sets_its_field(argv: list[str], field: str, value: Any) -> None:
    assert getattr(RunOptions(), field) != value
    assert getattr(_options(*argv), field) == value


def test_flags_left_out_hide_nothing() -> None:
    # Not given must not mean "the default": the env and the file's [run] would be overruled.
    assert run_option_flags(build_parser().parse_args(["run", "--all"])) == {}
    assert merge_run_options({"timeout": "2h", "wait": False}, {}) == RunOptions(
        timeout=7200, wait=False
    )


def test_help_shows_the_model_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in (
        "syncs in flight at once (default: 25)",
        "per sync, e.g. 45m (default: 24h)",
        "between status polls (default: 10s)",
        "for the whole run (default: none)",
        "--no-wait turn off:",
        "(default: on)",
        "(default: adopt)",
        "(default: off)",
    ):
        assert expected in text
