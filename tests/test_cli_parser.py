"""The `run` flags generated from RunOptions: every field has one, spelled as before, and the
help shows the model's own default; the `serve` flags' help shows ServeOptions' defaults."""

from __future__ import annotations

import subprocess
import sys
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


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_help_shows_the_model_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help("run", capsys)
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


def test_serve_help_shows_the_worker_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    text = _help("serve", capsys)
    for expected in (
        "address to listen on (AIRBYTE_FLEET_HOST, default: 127.0.0.1)",
        "port to listen on (AIRBYTE_FLEET_PORT, default: 8080)",
        "(AIRBYTE_FLEET_STATE_DIR, default: .airbyte-fleet)",
        "runs at once; more are queued (AIRBYTE_FLEET_MAX_RUNS, default: 4)",
        "(AIRBYTE_FLEET_ON_SHUTDOWN, default: detach)",
        "(AIRBYTE_FLEET_GRACE, default: 30)",
    ):
        assert expected in text


def test_the_cli_does_not_load_the_worker_until_serve() -> None:
    # The serve flags' defaults come from the worker's options; reading them must not start up
    # the HTTP server's modules for every other command.
    code = (
        "import sys, airbyte_fleet.cli\n"
        "airbyte_fleet.cli.build_parser()\n"
        "print(sorted(m for m in sys.modules if m == 'aiohttp.web' or m.endswith('service.app')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
