"""Exit codes, and the one place where an exception becomes one of them.

0 success; 1 some sync (or the command's work) failed; 2 usage or configuration error, nothing
sent; 3 Airbyte unreachable or authentication failed, nothing triggered; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

from airbyte_fleet._messages import spell_out_controls
from airbyte_fleet._redact import redact
from airbyte_fleet.api import AuthError, TransportError
from airbyte_fleet.errors import ConfigError, FleetError

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
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
EXIT_INTERRUPTED = 130


def fail(code: int, message: str) -> int:
    """Say *message* as the one line on stderr that a failed command prints; return *code*."""
    print(f"airbyte-fleet: {spell_out_controls(redact(message))}", file=sys.stderr, flush=True)
    return code


def exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, ConfigError):
        return EXIT_USAGE
    if isinstance(exc, TransportError | AuthError):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def run_command(command: Callable[[], Awaitable[int]]) -> int:
    """Run one command to its exit code: a :class:`FleetError` is its one-sentence message and
    code, Ctrl-C before any handler is installed is 130; anything else is a bug and shows."""
    try:
        return asyncio.run(_guarded(command))
    except KeyboardInterrupt:
        return fail(EXIT_INTERRUPTED, "interrupted.")


async def _guarded(command: Callable[[], Awaitable[int]]) -> int:
    try:
        return await command()
    except FleetError as exc:
        return fail(exit_code_for(exc), exc.message)
