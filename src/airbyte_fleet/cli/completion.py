"""``airbyte-fleet completion bash|zsh|fish``: a completion script made by shtab from the parser
itself, so every command and flag (the ``run`` flags generated from the options, the simulator's
own) completes as it is today, with no list kept by hand."""

from __future__ import annotations

import argparse
import sys

import shtab

from airbyte_fleet.cli.exit import EXIT_OK
from airbyte_fleet.cli.parser import COMMAND_HELP, build_parser

__all__ = ["completion_script", "print_completion"]

# A flag whose value is a path completes file or folder names; by the metavar the parser gives it.
_PATHS = {"PATH": shtab.FILE, "DIR": shtab.DIRECTORY}


def _prepare(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                # Shells show a command's description beside its name: the one-line help fits.
                sub.description = COMMAND_HELP.get(name, sub.description)
                _prepare(sub)
        elif isinstance(action.metavar, str) and action.metavar in _PATHS:
            action.complete = _PATHS[action.metavar]  # type: ignore[attr-defined]


def completion_script(shell: str) -> str:
    parser = build_parser(simulate_flags=True)
    _prepare(parser)
    return shtab.complete(parser, shell=shell)


def print_completion(shell: str) -> int:
    sys.stdout.write(completion_script(shell))
    sys.stdout.flush()
    return EXIT_OK
