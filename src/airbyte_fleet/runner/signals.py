"""SIGINT and SIGTERM, handled in one place for the CLI and the worker.

The first signal asks for an orderly stop; any later one says "stop waiting". Handlers run in the
event loop (``loop.add_signal_handler``), so they may touch the session or the worker directly.
Installed before the work starts and kept until it has stopped: a signal during start-up or during
the shutdown itself is never lost to Python's default handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

__all__ = ["on_signals"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def on_signals(first: Callable[[str], None], again: Callable[[str], None]) -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM calls *first* with the signal's name, every
    later one calls *again*."""
    loop = asyncio.get_running_loop()
    seen = 0

    def handle(signum: int) -> None:
        nonlocal seen
        seen += 1
        name = signal.Signals(signum).name
        (first if seen == 1 else again)(name)

    for sig in SIGNALS:
        loop.add_signal_handler(sig, handle, sig)
    try:
        yield
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
