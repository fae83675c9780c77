"""The `run` flags generated from RunOptions: every field has one, spelled as before, and the
help shows the model's own default; the `serve` flags' help shows ServeOptions' defaults. No flag
is matched by a prefix, every flag says what it does, and the logging flags go anywhere."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from airbyte_fleet._logging import configure_logging
from airbyte_fleet.cli import build_parser, main
from airbyte_fleet.cli.parser import parse, resolve_logging, run_option_flags
from airbyte_fleet.engine.options import RunOptions
from airbyte_fleet.errors import ConfigError
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
    (["--cancel-adopted"], "cancel_adopted", True),
    (["--on-interrupt", "detach"], "on_interrupt", "detach"),
    (["--grace", "PT2M"], "grace", 120.0),
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
        "time allowed for cancels on shutdown (AIRBYTE_FLEET_GRACE, default: 30s)",
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


# ----------------------------------------------------------------------------- no prefixes

# For every command, a prefix of one of its flags: argparse would take each as that flag.
PREFIXES = [
    ["run", "--all", "--retry", "3"],  # the reported one: it meant --retry-backoff 3
    ["run", "--all", "--dry"],
    ["connections", "--work", "W"],
    ["serve", "--max-run", "2"],
    ["schedules", "--cou", "2"],
    ["runs", "--lim=2"],
    ["runs", "show", "last", "--state", "dir"],
    ["--log-lev=debug", "runs"],
    ["connections", "--log-form", "console"],
]


@pytest.mark.parametrize("argv", PREFIXES, ids=[" ".join(a) for a in PREFIXES])
def test_no_flag_is_matched_by_a_prefix(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err
    assert len(err.strip().splitlines()) == 1


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_parser_refuses_abbreviations() -> None:
    # The simulator's flags included: `airbyte-fleet simulate` hands over to its own parser.
    parsers = list(_parsers(build_parser(simulate_flags=True)))
    assert len(parsers) == 10  # the top level, eight commands, `runs show`
    assert all(p.allow_abbrev is False for p in parsers)


# ----------------------------------------------------------------------------- help text


def test_the_store_flags_name_the_variables_the_settings_read() -> None:
    # Spelt out in the parser so that `runs --help` loads no pydantic: held equal here.
    from airbyte_fleet.cli import parser
    from airbyte_fleet.config import DATABASE_URL_ENV, LEASE_ENV, StoreSettings

    assert parser.DATABASE_URL_ENV == DATABASE_URL_ENV
    assert parser.LEASE_ENV == LEASE_ENV
    assert StoreSettings.model_fields["lease"].default == parser.DEFAULT_LEASE


def test_every_command_and_flag_has_help() -> None:
    for parser in _parsers(build_parser(simulate_flags=True)):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                # Each command's line in the listing; `runs show` is described on the action.
                listed = {a.dest for a in action._choices_actions}
                assert listed == set(action.choices) or action.help, parser.prog
                assert all(a.help for a in action._choices_actions), parser.prog
                continue
            assert action.help, f"{parser.prog} {action.option_strings or action.dest}"
            text = action.help % {"default": action.default}
            # A flag with a value of its own shows its default (a repeatable one has none).
            has_default = action.default not in (None, [], argparse.SUPPRESS)
            if action.option_strings and action.nargs != 0 and has_default:
                assert "default" in text, f"{parser.prog} {action.option_strings}"


def test_runs_help_lists_show_once(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["runs", "--help"])
    out = capsys.readouterr().out
    positionals = out.split("positional arguments:")[1].split("options:")[0]
    shows = [line for line in positionals.splitlines() if line.strip().startswith("show")]
    assert shows == ["  show RUN_ID           print one run's result ('last' for the newest)"]
    assert out.startswith("usage: airbyte-fleet runs [options] [show RUN_ID]\n")


# ----------------------------------------------------------------------------- logging flags


@pytest.mark.parametrize(
    ("argv", "environ", "expected"),
    [
        (["runs"], {}, ("json", "info")),
        (["--log-level", "debug", "runs"], {}, ("json", "debug")),
        (["runs", "--log-level", "debug"], {}, ("json", "debug")),
        (["--log-format", "console", "runs", "show", "last"], {}, ("console", "info")),
        (["runs", "show", "last", "--log-format", "console"], {}, ("console", "info")),
        (["--log-level", "error", "run", "--all", "--log-level", "debug"], {}, ("json", "debug")),
        (
            ["serve"],
            {"AIRBYTE_FLEET_LOG_LEVEL": " Warning ", "AIRBYTE_FLEET_LOG_FORMAT": "CONSOLE"},
            ("console", "warning"),
        ),
        (
            ["--log-format", "json", "serve", "--log-level", "error"],
            {"AIRBYTE_FLEET_LOG_LEVEL": "debug", "AIRBYTE_FLEET_LOG_FORMAT": "console"},
            ("json", "error"),
        ),
        (["connections"], {"AIRBYTE_FLEET_LOG_LEVEL": ""}, ("json", "info")),
    ],
)
def test_logging_flags_before_or_after_the_command_then_the_variables(
    argv: list[str], environ: dict[str, str], expected: tuple[str, str]
) -> None:
    args = parse(argv)
    resolve_logging(args, environ)
    assert (args.log_format, args.log_level) == expected


@pytest.mark.parametrize(
    ("variable", "value"),
    [("AIRBYTE_FLEET_LOG_LEVEL", "loud"), ("AIRBYTE_FLEET_LOG_FORMAT", "yaml")],
)
def test_a_bad_logging_variable_is_a_usage_error(variable: str, value: str) -> None:
    args = parse(["runs"])
    with pytest.raises(ConfigError) as refused:
        resolve_logging(args, {variable: value})
    assert refused.value.message.startswith(f"{variable}='{value}' is not one of ")
    assert refused.value.message.endswith("; set one of them or unset it.")


# ----------------------------------------------------------------------------- --grace


@pytest.mark.parametrize(
    ("argv", "seconds"),
    [
        (["--grace", "2m"], 120.0),
        (["--grace", "45"], 45.0),
        ([], 30.0),
    ],
)
def test_grace_takes_a_duration_like_every_other(argv: list[str], seconds: float) -> None:
    # For `run` it is a run option like the others (AIRBYTE_FLEET_GRACE, [run] grace).
    assert _options(*argv).grace == seconds


@pytest.mark.parametrize(
    ("argv", "seconds"), [(["--grace", "1h30m"], 5400.0), (["--grace", "250ms"], 0.25)]
)
def test_the_workers_grace_takes_a_duration(argv: list[str], seconds: float) -> None:
    assert parse(["serve", *argv]).grace == seconds


def test_the_workers_grace_variable_takes_a_duration_too() -> None:
    from airbyte_fleet.service.options import ServeOptions

    assert ServeOptions.resolve(environ={"AIRBYTE_FLEET_GRACE": "2m"}).grace == 120.0


def test_a_bad_grace_says_how_to_write_one(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parse(["serve", "--grace", "soon"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        "airbyte-fleet serve: argument --grace: 'soon' is not a duration; write it like "
        "45m, 1h30m, 90s, 2.5 (seconds) or PT45M (ISO 8601); see 'airbyte-fleet serve --help'.\n"
    )
    with pytest.raises(ConfigError) as refused:
        _options("--grace", "soon")
    assert str(refused.value) == (
        "Run option grace='soon' is invalid ('soon' is not a duration; write it like 45m, "
        "1h30m, 90s, 2.5 (seconds) or PT45M (ISO 8601)); fix --grace or AIRBYTE_FLEET_GRACE."
    )


def test_a_bad_logging_variable_is_said_as_text_even_after_json_logging(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # In one process (the Python API, the tests) JSON logging may be set up already; the format
    # that could not be read must not be guessed from it.
    configure_logging("json", stream=sys.stderr)
    monkeypatch.setenv("AIRBYTE_FLEET_LOG_FORMAT", "yaml")
    try:
        assert main(["runs"]) == 2
    finally:
        structlog.reset_defaults()
    assert capsys.readouterr().err == (
        "airbyte-fleet: AIRBYTE_FLEET_LOG_FORMAT='yaml' is not one of json, console; set one of "
        "them or unset it.\n"
    )
