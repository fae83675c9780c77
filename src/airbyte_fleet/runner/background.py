"""A run on a thread of its own, with its own event loop, waited for by its caller.

The Python API runs every run this way, awaited (:meth:`RunThread.wait_async`) or not
(:meth:`RunThread.wait`). The caller's thread and loop belong to the caller's program, and what
happens there must not tear the run down: an orchestrator's exception raised from a signal handler
(Dagster's ``DagsterExecutionInterruptedError``, Airflow's ``AirflowTaskTerminated``) lands wherever
that thread happens to be, inside a task of the run if the run shared the loop; anyio cancels
level-triggered (Prefect's timeouts), so every await of a stop in a cancelled scope would be
cancelled again; a sink or a host task may block the loop. Here all of that reaches only the code
that waits, which asks the run to stop by its ``on_interrupt`` policy (the run's task is cancelled:
see :func:`~airbyte_fleet.runner.cancellation.run_cancellable`), waits for the stop, and lets the
exception go on with the run's note on what became of its jobs. A second exception while waiting
stops waiting for cancels; a third stops waiting at all.

An exception can also pass the waiting code by: raised from a signal handler while the caller's
loop sits in its selector, it leaves the loop, and the await that would have caught it is never
resumed (Dagster's interrupt of an async step does exactly that). The run's thread is a daemon, so
it would die with the process, its jobs running. So the program's exit stops every run still in
flight first (``atexit``), by its policy, as an interrupt would.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

import anyio

from airbyte_fleet.runner.cancellation import SETTLE_SECONDS

__all__ = ["RunThread"]

T = TypeVar("T")

# How often the waiting thread wakes: an exception injected into it (PyThreadState_SetAsyncExc,
# which Prefect uses to time out a sync flow off the main thread) arrives only while Python runs.
WAKE_S = 0.2


# Runs in flight, for the program's exit to stop (see the module's docstring).
_live: set[RunThread[Any]] = set()
_live_lock = threading.Lock()


def _stop_live_runs() -> None:
    with _live_lock:
        runs = list(_live)
    for run in runs:
        run._cancel()
    for run in runs:
        run._done.wait(run._grace + SETTLE_SECONDS)


atexit.register(_stop_live_runs)


class RunThread(Generic[T]):
    """*coro* on a thread of its own with its own event loop."""

    def __init__(self, coro: Coroutine[Any, Any, T], *, grace: float) -> None:
        self._coro = coro
        self._grace = grace
        self._done = threading.Event()
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None
        self._on_done: list[Any] = []
        # The caller's context (log context variables, for one) goes with the run.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._main,), name="airbyte-fleet run", daemon=True
        )

    def _main(self) -> None:
        with _live_lock:
            _live.add(self)
        try:
            self._result = asyncio.run(self._enter())
        except BaseException as exc:  # handed to the waiting side, which raises it
            self._error = exc
        finally:
            with _live_lock:
                _live.discard(self)
            self._started.set()
            self._done.set()
            for callback in self._on_done:
                callback()

    async def _enter(self) -> T:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        return await self._coro

    # ----------------------------------------------------------------- waiting, blocked

    def wait(self) -> T:
        """Run and block until the run ends; see the module's docstring for interrupts."""
        self._thread.start()
        try:
            while not self._done.wait(WAKE_S):
                pass
        except BaseException as exc:
            self._cancel()
            self._settle()
            self._add_notes(exc)
            raise
        return self._outcome()

    def _settle(self) -> None:
        try:
            # The run bounds its own stop by its grace period.
            while not self._done.wait(WAKE_S):
                pass
        except BaseException:
            # Interrupted again: the run stops waiting for its cancels, and so do we, soon.
            self._cancel()
            self._done.wait(SETTLE_SECONDS)

    # ----------------------------------------------------------------- waiting, awaited

    async def wait_async(self) -> T:
        """Run and await the run's end; see the module's docstring for interrupts."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ended.done():
                ended.set_result(None)

        def on_done() -> None:
            # The caller's loop may be gone by then: nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake)

        self._on_done.append(on_done)
        self._thread.start()
        try:
            await asyncio.shield(ended)
        except GeneratorExit:
            self._cancel()
            raise
        except BaseException as exc:
            self._cancel()
            await self._settle_async(ended)
            self._add_notes(exc)
            raise
        return self._outcome()

    async def _settle_async(self, ended: asyncio.Future[None]) -> None:
        aborted = False
        # anyio's cancellation is level-triggered: shielded, this wait is not cancelled again at
        # every await by the scope that cancelled the caller. asyncio's own task.cancel() still
        # gets through, once per call: that is a second interrupt.
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._grace + SETTLE_SECONDS):
            while not ended.done():
                try:
                    await asyncio.shield(ended)
                except BaseException:
                    if aborted:
                        return
                    aborted = True
                    self._cancel()

    # ----------------------------------------------------------------- shared

    def _add_notes(self, exc: BaseException) -> None:
        """What the stop did (the run's note), said on the exception the caller sees."""
        if exc is self._error:
            return
        for note in getattr(self._error, "__notes__", ()):
            exc.add_note(note)

    def _outcome(self) -> T:
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    def _cancel(self) -> None:
        """Cancel the run's task: the first time it stops by its policy, the second it aborts."""
        self._started.wait()
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            # The loop may close in between: the run is over then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
