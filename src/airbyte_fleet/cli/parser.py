"""The command line: argparse, with the ``run`` flags generated from :class:`RunOptions`.

A run option is declared once, as a field of the model: its flag, choices, help text and the
default the help shows all come from there, so a new option (or a changed default) cannot leave
the CLI behind. The ``serve`` flags' help takes its text, variable and default from
:class:`ServeOptions` the same way. Flags that are not options (selection, output, state) are
written out here.

A command's flags are built only when that command is the one asked for (:func:`parse`): the
models they come from cost more to load than the rest of ``--help`` and ``--version`` together,
so this module imports them inside the builders, never at its top.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args, get_origin

from airbyte_fleet._messages import spell_out_controls
from airbyte_fleet._redact import redact
from airbyte_fleet._version import __version__
from airbyte_fleet.cli.exit import EXIT_USAGE
from airbyte_fleet.errors import ConfigError

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo

__all__ = [
    "COMMAND_HELP",
    "DATABASE_URL_ENV",
    "DEFAULT_LEASE",
    "LEASE_ENV",
    "LOG_ENV",
    "build_parser",
    "parse",
    "resolve_logging",
    "run_option_flags",
]

PROG = "airbyte-fleet"

# Every command and its line in `airbyte-fleet --help`, in the order shown.
COMMAND_HELP: dict[str, str] = {
    "connections": "list connections (all pages)",
    "run": "trigger syncs, follow each to its end, report once",
    "serve": "the long-running worker: HTTP API, schedules, metrics",
    "schedules": "the config file's schedules and next fire times",
    "runs": "past runs from the journal, or one run's result",
    "migrate": "bring the run store's tables up to date (SQLite or PostgreSQL)",
    "simulate": "run a local, spec-faithful Airbyte (see 'airbyte-fleet simulate --help')",
    "completion": "print a shell completion script for bash, zsh or fish",
}

# The logging flags' variables; a flag (before or after the command) wins over its variable.
LOG_ENV = {"log_format": "AIRBYTE_FLEET_LOG_FORMAT", "log_level": "AIRBYTE_FLEET_LOG_LEVEL"}
_LOG_CHOICES = {
    "log_format": ("json", "console"),
    "log_level": ("debug", "info", "warning", "error"),
}
_LOG_DEFAULTS = {"log_format": "json", "log_level": "info"}


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # No prefix matching: `--retry 3` must not quietly mean `--retry-backoff 3`, and a flag
        # added later must not change what an abbreviation in someone's script means.
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # One sentence and the way out, instead of argparse's usage dump.
        self.exit(
            EXIT_USAGE,
            f"{self.prog}: {spell_out_controls(redact(message))}; see '{self.prog} --help'.\n",
        )


def _duration(text: str) -> float:
    """A duration flag read as the options read durations (``5m``, ``1h30m``, ``90s``, ``2.5``)."""
    from airbyte_fleet.engine.options import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    from pydantic import BeforeValidator

    from airbyte_fleet.engine.options import parse_duration

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
    from airbyte_fleet.engine.options import RunOptions

    given = {name: getattr(args, name, None) for name in RunOptions.model_fields}
    return {name: value for name, value in given.items() if value is not None}


# ----------------------------------------------------------------------------- shared flags


def _add_logging(parser: argparse.ArgumentParser) -> None:
    # On the top level and on every command, so either place works; SUPPRESS so that a flag left
    # out sets nothing and hides neither the other place nor the variable (resolve_logging).
    parser.add_argument(
        "--log-format",
        choices=_LOG_CHOICES["log_format"],
        default=argparse.SUPPRESS,
        help=f"log lines on stderr: JSON or console ({LOG_ENV['log_format']}, default: json)",
    )
    parser.add_argument(
        "--log-level",
        choices=_LOG_CHOICES["log_level"],
        default=argparse.SUPPRESS,
        help=f"the least severe log line shown ({LOG_ENV['log_level']}, default: info)",
    )


def resolve_logging(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """Set ``args.log_format`` and ``args.log_level``: the flag, else its variable, else the
    default. A variable that names no choice is a :class:`ConfigError`."""
    for dest, variable in LOG_ENV.items():
        if getattr(args, dest, None) is not None:
            continue
        raw = environ.get(variable, "")
        value = raw.strip().lower() or _LOG_DEFAULTS[dest]
        choices = _LOG_CHOICES[dest]
        if value not in choices:
            raise ConfigError(
                f"{variable}={raw!r} is not one of {', '.join(choices)}; set one of them or "
                "unset it."
            )
        setattr(args, dest, value)


def _output(parser: argparse.ArgumentParser | argparse._ArgumentGroup, **kw: Any) -> None:
    kw.setdefault("help", "stdout: a table for people (default) or JSON and nothing else")
    kw.setdefault("default", "table")
    parser.add_argument("--output", choices=("table", "json"), **kw)


def _config(parser: argparse.ArgumentParser | argparse._ArgumentGroup, **kw: Any) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML file (AIRBYTE_FLEET_CONFIG, default: config/airbyte-fleet.toml)",
        **kw,
    )


def _state_dir_help() -> str:
    from airbyte_fleet._defaults import DEFAULT_STATE_DIR

    return f"where the run journal lives (AIRBYTE_FLEET_STATE_DIR, default: {DEFAULT_STATE_DIR})"


# Spelt out, not imported from airbyte_fleet.config: `runs --help` must not load pydantic to
# print them (tests/test_cli_parser.py holds them equal).
DATABASE_URL_ENV = "AIRBYTE_FLEET_DATABASE_URL"
LEASE_ENV = "AIRBYTE_FLEET_LEASE"
DEFAULT_LEASE = 30.0


def _database_url(parser: argparse.ArgumentParser | argparse._ArgumentGroup, **kw: Any) -> None:
    # No default is ever shown: a URL may carry a password.
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="PostgreSQL that several workers share, postgresql://USER:PASSWORD@HOST/DB "
        f"({DATABASE_URL_ENV} or database_url in the config file; default: the SQLite journal "
        "in the state directory)",
        **kw,
    )


def _lease(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--lease",
        type=_duration,
        metavar="DURATION",
        help="how long a run stays held by a process that stopped renewing it (crashed or cut "
        f"off) before another may carry it on ({LEASE_ENV} or lease in the config file; "
        f"default: {_duration_text(DEFAULT_LEASE)})",
    )


# ----------------------------------------------------------------------------- commands

_Commands = Any  # argparse's _SubParsersAction, which typeshed makes generic


def _add_connections(commands: _Commands) -> None:
    conns = commands.add_parser(
        "connections",
        help=COMMAND_HELP["connections"],
        description="List every connection Airbyte shows these credentials, all pages, sorted "
        "by name.",
    )
    conns.add_argument(
        "--workspace", action="append", default=[], metavar="ID", help="only these workspaces"
    )
    conns.add_argument(
        "--tag", action="append", default=[], metavar="NAME", help="only connections with tag"
    )
    _config(conns)
    _output(conns)
    _add_logging(conns)


def _add_run(commands: _Commands) -> None:
    from airbyte_fleet.engine.options import RunOptions

    run = commands.add_parser(
        "run",
        help=COMMAND_HELP["run"],
        description="Trigger syncs for the selected connections, follow every job to its end and "
        "print one result. Exit 0: all succeeded; 1: some failed, were cancelled, timed out or "
        "errored; 2: usage or configuration error (nothing triggered); 3: Airbyte unreachable or "
        "credentials refused (nothing triggered); 4: the run journal failed mid-run (the run "
        "stopped; --resume carries it on); 130: interrupted.",
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
    pick.add_argument(
        "--with-upstream",
        action="store_true",
        default=None,
        help="also run, transitively, the groups the named groups come after (their after)",
    )
    how = run.add_argument_group("how to run (flags > AIRBYTE_FLEET_* env > config file)")
    _config(how)
    for name, field in RunOptions.model_fields.items():
        _add_run_option(how, name, field)
    how.add_argument("--dry-run", action="store_true", help="print the plan and exit 0")
    how.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="carry on an interrupted run ('last' for the newest) without triggering twice",
    )
    how.add_argument("--state-dir", metavar="DIR", help=_state_dir_help())
    _database_url(how)
    _lease(how)
    out = run.add_argument_group("output")
    _output(out)
    out.add_argument("--result-file", metavar="PATH", help="also write the JSON result here")
    out.add_argument(
        "--report-html",
        metavar="PATH",
        help="also write the run's HTML report here (timeline and table, one file), however "
        "the run ends",
    )
    out.add_argument("--no-progress", action="store_true", help="no live display on a terminal")
    _add_logging(run)


def _add_serve(commands: _Commands) -> None:
    from airbyte_fleet.service.options import ENV_VARS, ServeOptions, ShutdownMode

    def text(name: str) -> str:
        field = ServeOptions.model_fields[name]
        return f"{field.description} ({ENV_VARS[name]}, default: {_shown_default(field)})"

    srv = commands.add_parser(
        "serve",
        help=COMMAND_HELP["serve"],
        description="Run the worker: runs submitted over HTTP (POST /runs) and the config file's "
        "schedules, with /healthz, /readyz, /metrics and /openapi.json. Every route but /healthz "
        "and /metrics needs 'Authorization: Bearer $AIRBYTE_FLEET_API_TOKEN'; a non-loopback "
        "--host needs that token set. SIGTERM stops it by --on-shutdown.",
    )
    # default=None everywhere: a flag left out must not hide the AIRBYTE_FLEET_* variable.
    srv.add_argument("--host", default=None, help=text("host"))
    srv.add_argument("--port", type=int, default=None, help=text("port"))
    _config(srv)
    srv.add_argument("--state-dir", default=None, metavar="DIR", help=text("state_dir"))
    srv.add_argument("--max-runs", type=_positive, default=None, metavar="N", help=text("max_runs"))
    srv.add_argument(
        "--on-shutdown", choices=get_args(ShutdownMode), default=None, help=text("on_shutdown")
    )
    srv.add_argument(
        "--grace", type=_duration, default=None, metavar="DURATION", help=text("grace")
    )
    _database_url(srv)
    _lease(srv)
    _add_logging(srv)


def _add_schedules(commands: _Commands) -> None:
    sched = commands.add_parser(
        "schedules",
        help=COMMAND_HELP["schedules"],
        description="Check the config file's [schedules] and show when each fires next.",
    )
    _config(sched)
    sched.add_argument(
        "--count",
        type=_positive,
        default=3,
        metavar="N",
        help="fire times shown for each schedule (default: %(default)s)",
    )
    _output(sched)
    _add_logging(sched)


def _add_runs(commands: _Commands) -> None:
    state_dir = _state_dir_help()
    runs = commands.add_parser(
        "runs",
        # Written out: argparse would show the optional subcommand as if it were required.
        usage=f"{PROG} runs [options] [show RUN_ID]",
        help=COMMAND_HELP["runs"],
        description="List past runs from the journal, newest first; 'runs show RUN_ID' prints "
        "one run's result.",
    )
    runs.add_argument("--state-dir", metavar="DIR", help=state_dir)
    _database_url(runs)
    _config(runs)
    runs.add_argument(
        "--limit",
        type=_positive,
        default=20,
        metavar="N",
        help="runs listed (default: %(default)s)",
    )
    _output(runs)
    _add_logging(runs)
    # The one subcommand is described on the action and given no help of its own: argparse would
    # otherwise list it twice (as the positional and as its choice).
    runs_sub = runs.add_subparsers(
        dest="runs_command",
        metavar="show RUN_ID",
        help="print one run's result ('last' for the newest)",
        parser_class=_Parser,
    )
    show = runs_sub.add_parser(
        "show",
        description="Print one run's result from the journal; --html also writes its report.",
    )
    show.add_argument("run_id", metavar="RUN_ID", help="a run id, or 'last' for the newest")
    show.add_argument(
        "--html",
        metavar="PATH",
        help="also write the run's HTML report here (timeline and table, one self-contained file)",
    )
    show.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS, help=state_dir)
    _database_url(show, default=argparse.SUPPRESS)
    _config(show, default=argparse.SUPPRESS)
    _output(show, default=argparse.SUPPRESS)
    _add_logging(show)


def _add_migrate(commands: _Commands) -> None:
    mig = commands.add_parser(
        "migrate",
        help=COMMAND_HELP["migrate"],
        description="Create the run store's tables, or bring them to this version's schema, and "
        "say at which version they are. Every command that writes runs does this as it opens the "
        "store; run it on its own before starting several workers of a new version at once. "
        "Exit 0: done; 2: the store cannot be opened or is newer than this version.",
    )
    _database_url(mig)
    mig.add_argument("--state-dir", metavar="DIR", help=_state_dir_help())
    _config(mig)
    _output(mig, help="stdout: a line for people (default) or JSON and nothing else")
    _add_logging(mig)


def _add_completion(commands: _Commands) -> None:
    comp = commands.add_parser(
        "completion",
        help=COMMAND_HELP["completion"],
        description="Print a completion script for SHELL on stdout. bash: "
        "'source <(airbyte-fleet completion bash)' in ~/.bashrc; zsh: write it to a file named "
        "_airbyte-fleet in a folder on $fpath; fish: "
        "'airbyte-fleet completion fish > ~/.config/fish/completions/airbyte-fleet.fish'.",
    )
    comp.add_argument(
        "shell", metavar="SHELL", choices=("bash", "zsh", "fish"), help="bash, zsh or fish"
    )


def _add_simulate(commands: _Commands, *, flags: bool) -> None:
    if not flags:
        # The simulator reads its own flags (cli.main hands them over); loading its parser here
        # would load its HTTP server.
        commands.add_parser("simulate", help=COMMAND_HELP["simulate"], add_help=False)
        return
    from airbyte_fleet.simulator._cli import _parser as simulator_parser

    commands.add_parser(
        "simulate",
        help=COMMAND_HELP["simulate"],
        parents=[simulator_parser(f"{PROG} simulate")],
        add_help=False,  # the simulator's parser brings its own --help
    )


_BUILDERS: dict[str, Callable[[_Commands], None]] = {
    "connections": _add_connections,
    "run": _add_run,
    "serve": _add_serve,
    "schedules": _add_schedules,
    "runs": _add_runs,
    "migrate": _add_migrate,
    "completion": _add_completion,
}


def build_parser(
    commands: Collection[str] = tuple(COMMAND_HELP), *, simulate_flags: bool = False
) -> argparse.ArgumentParser:
    """The command line with the flags of *commands* (all by default); every other command is
    there by name and help line only, which is all ``--help`` shows of it. *simulate_flags* adds
    the simulator's flags too (for completion), at the cost of loading the simulator."""
    parser = _Parser(
        prog=PROG,
        description="Trigger many Airbyte syncs at once, follow each to its end, report once.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _add_logging(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, text in COMMAND_HELP.items():
        if name == "simulate":
            _add_simulate(sub, flags=simulate_flags and name in commands)
        elif name in commands:
            _BUILDERS[name](sub)
        else:
            # No flags and no --help of its own, so parsing through it keeps every later word.
            sub.add_parser(name, help=text, add_help=False)
    return parser


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """Read *argv*. A first pass over the command names alone finds the command (and answers
    ``--help``, ``--version`` and an unknown command by itself); only that command's flags are
    then built. ``simulate`` comes back unparsed: the simulator reads its own flags."""
    found, _ = build_parser(commands=()).parse_known_args(argv)
    if found.command == "simulate":
        return found
    return build_parser(commands=(found.command,)).parse_args(argv)
