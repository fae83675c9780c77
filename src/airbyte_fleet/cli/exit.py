"""Exit codes, and the one place where an exception becomes one of them.

0 success; 1 some sync (or the command's work) failed; 2 usage or configuration error, nothing
sent; 3 Airbyte unreachable or authentication failed, nothing triggered; 4 the run journal failed
mid-run (the run stopped); 130 interrupted.

The parser imports the codes, so this module loads no client, no event loop and no logging
library until a command runs: ``--help`` and ``--version`` stay fast.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

from airbyte_fleet._messages import spell_out_controls
from airbyte_fleet._redact import redact
from airbyte_fleet.errors import ConfigError, FleetError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_JOURNAL",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "exit_code_for",
    "fail",
    "run_command",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_JOURNAL = 4
EXIT_INTERRUPTED = 130


def fail(code: int, message: str, *, plain: bool = False) -> int:
    """Say *message* as the one line on stderr that a failed command prints; return *code*.

    When the log lines are JSON, so is this one (``"event": "fatal"``, the sentence as ``error``,
    the ``exit_code``): a reader of stderr parses every line the same way. *plain* says it as
    text whatever the format, for a failure before logging is set up.
    """
    text = spell_out_controls(redact(message))
    # Imported here, and only once logging is set up: the parser imports this module.
    from airbyte_fleet._logging import configured_format, get_logger

    if not plain and configured_format() == "json":
        get_logger("airbyte_fleet.cli").error("fatal", error=text, exit_code=code)
    else:
        print(f"airbyte-fleet: {text}", file=sys.stderr, flush=True)
    return code


def exit_code_for(exc: BaseException) -> int:
    from airbyte_fleet.api import AuthError, TransportError

    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, TransportError | AuthError):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def run_command(command: Callable[[], Awaitable[int]]) -> int:
    """Run one command to its exit code: a :class:`FleetError` is its one-sentence message and
    code, Ctrl-C before any handler is installed is 130; anything else is a bug and shows."""
    import asyncio

    try:
        return asyncio.run(_guarded(command))
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "interrupted.")


async def _guarded(command: Callable[[], Awaitable[int]]) -> int:
    try:
        return await command()
    except FleetError as exc:
        return fail(exit_code_for(exc), exc.message)
