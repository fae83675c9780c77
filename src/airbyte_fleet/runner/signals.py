"""SIGINT and SIGTERM, handled in one place for the CLI and the worker.

The first signal asks for an orderly stop; a later one says "stop waiting". A signal that comes
within :data:`SAME_INTERRUPT_WITHIN` of the first is the same interrupt, not a second one: GNU
``timeout -s INT``, a terminal's Ctrl-C reaching a whole process group and many supervisors
deliver one stop twice, a few milliseconds apart, and taking that for "abort" would leave every
job the stop was about to cancel running. Handlers run in the event loop
(``loop.add_signal_handler``), so they may touch the session or the worker directly. Installed
before the work starts and kept until it has stopped: a signal during start-up or during the
shutdown itself is never lost to Python's default handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

from airbyte_fleet._logging import get_logger

__all__ = ["SAME_INTERRUPT_WITHIN", "on_signals"]

log = get_logger("airbyte_fleet.runner")

SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds after the first signal during which another one repeats it rather than aborting.
SAME_INTERRUPT_WITHIN = 1.0


@contextlib.contextmanager
def on_signals(
    first: Callable[[str], None],
    again: Callable[[str], None],
    *,
    same_within: float = SAME_INTERRUPT_WITHIN,
) -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM calls *first* with the signal's name; one
    that follows it within *same_within* seconds is logged and otherwise ignored; every later
    one calls *again*."""
    loop = asyncio.get_running_loop()
    first_at: float | None = None

    def handle(signum: int) -> None:
        nonlocal first_at
        name = signal.Signals(signum).name
        if first_at is None:
            first_at = loop.time()
            first(name)
        elif loop.time() - first_at < same_within:
            log.info(
                "signal_repeated",
                signal=name,
                note=f"within {same_within:g} s of the first: the same interrupt",
            )
        else:
            again(name)

    for sig in SIGNALS:
        loop.add_signal_handler(sig, handle, sig)
    try:
        yield
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
