"""The ``airbyte-fleet`` command: ``parser`` reads the flags, ``commands`` does the work through
the run's home (:mod:`airbyte_fleet.runner`), ``render`` prints, ``exit`` turns errors into exit
codes, ``completion`` prints shell completion. No other part of the package imports this one.

Each command's modules are imported when it runs, not here: ``--help`` and ``--version`` load
neither the client, the engine nor the worker.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from airbyte_fleet.cli.exit import EXIT_USAGE, fail, run_command
from airbyte_fleet.cli.parser import build_parser, parse, resolve_logging
from airbyte_fleet.errors import ConfigError

__all__ = ["build_parser", "entry", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parse(args_list)
    if args.command == "simulate":
        from airbyte_fleet.simulator import main as simulate_main

        return simulate_main(args_list[args_list.index("simulate") + 1 :])
    if args.command == "completion":
        from airbyte_fleet.cli.completion import print_completion

        return print_completion(args.shell)
    try:
        resolve_logging(args, os.environ)
    except ConfigError as exc:
        # The log format is what could not be read: say it as text.
        return fail(EXIT_USAGE, exc.message, plain=True)
    from airbyte_fleet._logging import configure_logging
    from airbyte_fleet.cli.commands import COMMANDS

    configure_logging(args.log_format, args.log_level)
    command = COMMANDS[args.command]
    return run_command(lambda: command(args))


def entry() -> int:
    """The process's entry point (the console script, ``python -m airbyte_fleet``): :func:`main`,
    then deaf to SIGINT and SIGTERM while the interpreter shuts down. A supervisor's second
    signal can land after the work is done and said; it must not turn the exit into a traceback
    or change the exit code. (Not in :func:`main`, which tests call in-process.)"""
    try:
        code = main()
    except KeyboardInterrupt:
        code = fail(130, "interrupted.", plain=True)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    return code
