"""The ``airbyte-fleet`` command: ``parser`` reads the flags, ``commands`` does the work through
the run's home (:mod:`airbyte_fleet.runner`), ``render`` prints, ``exit`` turns errors into exit
codes. No other part of the package imports this one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from airbyte_fleet._logging import configure_logging
from airbyte_fleet.cli.commands import COMMANDS
from airbyte_fleet.cli.exit import run_command
from airbyte_fleet.cli.parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] == "simulate":
        # The simulator has its own parser; only the name is registered here, for --help.
        from airbyte_fleet.simulator import main as simulate_main

        return simulate_main(args_list[1:])
    args = build_parser().parse_args(args_list)
    configure_logging(args.log_format, args.log_level)
    command = COMMANDS[args.command]
    return run_command(lambda: command(args))
