"""A run whose caller is cancelled stops the way a signalled CLI run does.

An orchestrator stops a step by cancelling its task (``asyncio.wait_for``, a task group, Prefect's
or Dagster's async runners), by raising ``KeyboardInterrupt`` or ``SystemExit`` in it, or by an
exception of its own from a signal handler. If that tore the engine's tasks down, every Airbyte job
of the run would keep running with no one following it (dagster-airbyte cancels on termination by
default for the same reason). So the session runs in a task of its own, shielded; whatever stops
the caller's await interrupts the session by its ``on_interrupt`` policy (cancel the jobs in
flight, in parallel, within ``grace``; or leave them running), waits for that stop to finish, and
then lets the exception go on, with a note saying what became of the jobs. A second cancellation
while waiting stops waiting for cancels (as a second signal does in the CLI); a third stops
waiting at all.
"""

from __future__ import annotations

import asyncio

from airbyte_fleet._logging import get_logger
from airbyte_fleet.engine.result import RunResult
from airbyte_fleet.runner.session import RunSession

__all__ = ["SETTLE_SECONDS", "run_cancellable"]

log = get_logger("airbyte_fleet.runner")

# Past the grace period the engine reports what it could not cancel by itself; this is only the
# margin for that report, after which an abort (and then giving up) takes over.
SETTLE_SECONDS = 10.0


async def run_cancellable(session: RunSession) -> RunResult:
    """``await session.run()``, except that cancelling (or interrupting) the caller first stops
    the run by its policy, then re-raises."""
    task = asyncio.ensure_future(session.run())
    try:
        return await asyncio.shield(task)
    except GeneratorExit:
        # The coroutine is being closed, not cancelled: it may not await anything any more.
        session.let_go()
        raise
    except BaseException as exc:
        if task.done():
            raise  # the run itself ended with this (a bug, or a store failure's own error)
        await _stop(session, task, exc)
        _note(exc, session, task)
        raise


async def _stop(session: RunSession, task: asyncio.Future[RunResult], why: BaseException) -> None:
    options = session.options
    log.warning(
        "interrupted",
        run_id=session.run_id,
        by=type(why).__name__,
        action=options.on_interrupt,
        grace_s=options.grace,
    )
    session.interrupt()
    aborted = False
    loop = asyncio.get_running_loop()
    deadline = loop.time() + options.grace + SETTLE_SECONDS
    while not task.done():
        try:
            await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        except BaseException:
            if aborted:
                log.warning("interrupted_again", run_id=session.run_id, action="give_up")
                raise
            log.warning("interrupted_again", run_id=session.run_id, action="abort")
        else:
            if task.done() or aborted:
                return
            log.warning("interrupted_again", run_id=session.run_id, action="abort")
        aborted = True
        session.abort()
        deadline = loop.time() + SETTLE_SECONDS


def _note(exc: BaseException, session: RunSession, task: asyncio.Future[RunResult]) -> None:
    """Say on the exception itself (PEP 678: shown with its traceback) what the stop did."""
    if not task.done() or task.cancelled() or task.exception() is not None:
        exc.add_note(
            f"airbyte-fleet: run {session.run_id} was interrupted and did not finish stopping; "
            "its jobs may still be running in Airbyte."
        )
        return
    result = task.result()
    left = [s for s in result.syncs if s.job_id is not None and s.outcome == "error"]
    cancelled = result.counts.get("cancelled", 0)
    said = f"airbyte-fleet: run {session.run_id} was interrupted; {cancelled} job(s) cancelled"
    if left:
        jobs = ", ".join(str(s.job_id) for s in left)
        said += f", {len(left)} left running in Airbyte (job {jobs})"
    exc.add_note(said + ".")
