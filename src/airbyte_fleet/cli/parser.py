"""The command line: argparse, with the ``run`` flags generated from :class:`RunOptions`.

A run option is declared once, as a field of the model: its flag, choices, help text and the
default the help shows all come from there, so a new option (or a changed default) cannot leave
the CLI behind. The ``serve`` flags' help takes its text, variable and default from
:class:`ServeOptions` the same way. Flags that are not options (selection, output, state) are
written out here.
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Literal, NoReturn, get_args, get_origin

from pydantic import BeforeValidator
from pydantic.fields import FieldInfo

from airbyte_fleet._messages import spell_out_controls
from airbyte_fleet._redact import redact
from airbyte_fleet._version import __version__
from airbyte_fleet.cli.exit import EXIT_USAGE
from airbyte_fleet.engine.options import RunOptions, parse_duration
from airbyte_fleet.journal import DEFAULT_STATE_DIR
from airbyte_fleet.service.options import ENV_VARS, ServeOptions, ShutdownMode

__all__ = ["build_parser", "run_option_flags"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One sentence and the way out, instead of argparse's usage dump.
        self.exit(
            EXIT_USAGE,
            f"{self.prog}: {spell_out_controls(redact(message))}; see '{self.prog} --help'.\n",
        )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected zero or more seconds, got {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


# ----------------------------------------------------------------------------- run options


def _is_duration(field: FieldInfo) -> bool:
    # pydantic unwraps ``Duration`` into the field's metadata, but not inside ``Duration | None``.
    found = [*field.metadata]
    for arg in get_args(field.annotation):
        found.extend(getattr(arg, "__metadata__", ()))
    return any(isinstance(m, BeforeValidator) and m.func is parse_duration for m in found)


def _duration_text(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _shown_default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if _is_duration(field):
        return _duration_text(float(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _add_run_option(group: argparse._ArgumentGroup, name: str, field: FieldInfo) -> None:
    flag = "--" + name.replace("_", "-")
    # argparse formats help with %: a literal one must be doubled.
    text = f"{field.description or name} (default: {_shown_default(field)})".replace("%", "%%")
    # default=None everywhere: "not given" must never hide the env or the file's [run] value.
    if field.annotation is bool:
        if field.default:
            # On by default, so the flag turns it off: --no-wait, --no-cancel-on-timeout.
            flag = "--no-" + name.replace("_", "-")
            text = f"turn off: {text}"
            group.add_argument(flag, dest=name, action="store_false", default=None, help=text)
        else:
            group.add_argument(flag, dest=name, action="store_true", default=None, help=text)
    elif get_origin(field.annotation) is Literal:
        group.add_argument(flag, dest=name, choices=get_args(field.annotation), help=text)
    elif field.annotation is int:
        group.add_argument(flag, dest=name, type=int, metavar="N", help=text)
    elif _is_duration(field):
        # Passed on as typed (45m, 1h30m, 90s): the model reads durations, and says what is wrong.
        group.add_argument(flag, dest=name, metavar="DURATION", help=text)
    else:
        raise TypeError(f"RunOptions.{name}: no command-line flag for {field.annotation!r}")


def run_option_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The run options given as flags, by field name; flags left out are absent."""
    given = {name: getattr(args, name, None) for name in RunOptions.model_fields}
    return {name: value for name, value in given.items() if value is not None}


# ----------------------------------------------------------------------------- commands


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default="json",
        help="log lines on stderr: JSON (default) or console",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )


def _output(parser: argparse.ArgumentParser | argparse._ArgumentGroup, **kw: Any) -> None:
    parser.add_argument("--output", choices=("table", "json"), default="table", **kw)


def _add_run(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="trigger syncs, follow each to its end, report once",
        description="Trigger syncs for the selected connections, follow every job to its end and "
        "print one result. Exit 0: all succeeded; 1: some failed, were cancelled, timed out or "
        "errored; 2: usage or configuration error (nothing triggered); 3: Airbyte unreachable or "
        "credentials refused (nothing triggered); 130: interrupted.",
    )
    pick = run.add_argument_group("selection (combinable)")
    for flag, metavar, text in (
        ("--connection", "ID", "a connection id; repeat or give a comma list"),
        ("--name", "GLOB", "connection names matching this glob (case-insensitive)"),
        ("--tag", "NAME", "connections with this tag"),
        ("--workspace", "ID", "connections in this workspace"),
    ):
        pick.add_argument(flag, action="append", default=[], metavar=metavar, help=text)
    pick.add_argument("--all", action="store_true", default=None, help="every connection")
    pick.add_argument(
        "--group",
        action="append",
        default=[],
        metavar="NAME",
        help="a named group from the config file",
    )
    how = run.add_argument_group("how to run (flags > AIRBYTE_FLEET_* env > config file)")
    how.add_argument(
        "--config", metavar="PATH", help="TOML file (default config/airbyte-fleet.toml)"
    )
    for name, field in RunOptions.model_fields.items():
        _add_run_option(how, name, field)
    how.add_argument(
        "--on-interrupt",
        choices=("cancel", "detach"),
        default="cancel",
        help="on SIGINT/SIGTERM: cancel in-flight jobs (default) or leave them",
    )
    how.add_argument(
        "--grace",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="time allowed for cancels after an interrupt (default: %(default)g)",
    )
    how.add_argument("--dry-run", action="store_true", help="print the plan and exit 0")
    how.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="carry on an interrupted run ('last' for the newest) without triggering twice",
    )
    how.add_argument(
        "--state-dir",
        metavar="DIR",
        help=f"where the run journal lives (AIRBYTE_FLEET_STATE_DIR, default: {DEFAULT_STATE_DIR})",
    )
    out = run.add_argument_group("output")
    _output(out, help="stdout: a table (default) or only the JSON result")
    out.add_argument("--result-file", metavar="PATH", help="also write the JSON result here")
    out.add_argument("--no-progress", action="store_true", help="no live display on a terminal")
    _add_common(run)


def _serve_help(name: str) -> str:
    field = ServeOptions.model_fields[name]
    return f"{field.description} ({ENV_VARS[name]}, default: {_shown_default(field)})"


def _add_serve(commands: Any) -> None:
    srv = commands.add_parser(
        "serve",
        help="the long-running worker: HTTP API, schedules, metrics",
        description="Run the worker: runs submitted over HTTP (POST /runs) and the config file's "
        "schedules, with /healthz, /readyz, /metrics and /openapi.json. Every route but /healthz "
        "and /metrics needs 'Authorization: Bearer $AIRBYTE_FLEET_API_TOKEN'; a non-loopback "
        "--host needs that token set. SIGTERM stops it by --on-shutdown.",
    )
    # default=None everywhere: a flag left out must not hide the AIRBYTE_FLEET_* variable.
    srv.add_argument("--host", default=None, help=_serve_help("host"))
    srv.add_argument("--port", type=int, default=None, help=_serve_help("port"))
    srv.add_argument("--config", default=None, metavar="PATH", help="TOML config file")
    srv.add_argument("--state-dir", default=None, metavar="DIR", help=_serve_help("state_dir"))
    srv.add_argument(
        "--max-runs", type=_positive, default=None, metavar="N", help=_serve_help("max_runs")
    )
    srv.add_argument(
        "--on-shutdown",
        choices=get_args(ShutdownMode),
        default=None,
        help=_serve_help("on_shutdown"),
    )
    srv.add_argument(
        "--grace", type=_seconds, default=None, metavar="SECONDS", help=_serve_help("grace")
    )
    _add_common(srv)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="airbyte-fleet",
        description="Trigger many Airbyte syncs at once, follow each to its end, report once.",
    )
    parser.add_argument("--version", action="version", version=f"airbyte-fleet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    conns = commands.add_parser("connections", help="list connections (all pages)")
    conns.add_argument(
        "--workspace", action="append", default=[], metavar="ID", help="only these workspaces"
    )
    conns.add_argument("--tag", action="append", default=[], metavar="NAME", help="only with tag")
    _output(conns)
    _add_common(conns)

    _add_run(commands)
    _add_serve(commands)

    sched = commands.add_parser("schedules", help="the config file's schedules and next fire times")
    sched.add_argument(
        "--config", metavar="PATH", help="TOML file (default config/airbyte-fleet.toml)"
    )
    sched.add_argument("--count", type=_positive, default=3, metavar="N", help="fire times each")
    _output(sched)
    _add_common(sched)

    runs = commands.add_parser("runs", help="past runs from the journal")
    runs.add_argument("--state-dir", metavar="DIR", help="where the run journal lives")
    runs.add_argument("--limit", type=_positive, default=20, metavar="N")
    _output(runs)
    _add_common(runs)
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="show", parser_class=_Parser)
    show = runs_sub.add_parser("show", help="one run's result")
    show.add_argument("run_id", metavar="RUN_ID", help="a run id, or 'last'")
    show.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS)
    show.add_argument("--output", choices=("table", "json"), default=argparse.SUPPRESS)

    commands.add_parser(
        "simulate",
        help="run a local, spec-faithful Airbyte (see 'airbyte-fleet simulate --help')",
        add_help=False,
    )
    return parser
