"""Replaying a stored run into a result: the one place a journal becomes a :class:`RunResult`.

``runs show``, the worker's view of a finished run and resume all read a run back through here,
so they can never disagree with the result the run itself built live.
"""

from __future__ import annotations

from airbyte_fleet._logging import get_logger
from airbyte_fleet.engine.events import Event, EventSink, RunFinished, RunStarted
from airbyte_fleet.engine.outcome import OUTCOMES
from airbyte_fleet.engine.result import ResultBuilder, RunResult, Totals
from airbyte_fleet.journal import RunStore

__all__ = ["replay_into", "replay_result"]

log = get_logger("airbyte_fleet.runner")

# Events read per query: bounds memory on a run of many thousand syncs.
PAGE = 5000


def replay_into(
    builder: EventSink, store: RunStore, run_id: str
) -> RunStarted | RunFinished | None:
    """Feed *builder* (a :class:`ResultBuilder`, or any event sink) the run's stored events, from its first ``run_started`` on (kinds this
    version does not know, and rows it cannot read, are skipped by the store).

    When the first start itself cannot be read, the run's record stands in for it (its plan,
    options and start time), so that what follows is not dropped with it.

    Returns the last ``run_started`` or ``run_finished`` fed, so the caller knows whether the run
    ever started and whether its last start finished; None when it never started.
    """
    last: RunStarted | RunFinished | None = None
    after = 0
    while True:
        page = store.events(run_id, after=after, limit=PAGE)
        for _, event in page:
            if isinstance(event, RunStarted):
                last = event
            elif last is None:
                last = _start_from_record(store, run_id)
                if last is None:
                    continue  # before the run's first start: a builder has nothing to add it to
                builder(last)
            if isinstance(event, RunFinished):
                last = event
            builder(event)
        if len(page) < PAGE:
            return last
        after = page[-1][0]


def _start_from_record(store: RunStore, run_id: str) -> RunStarted | None:
    """The run's first start as its record keeps it; None for a run the store knows no plan of
    (events written without their start, as a late subscriber writes them)."""
    record = store.run(run_id)
    if record is None or not record.planned:
        return None
    log.warning("journal_run_start_rebuilt", run_id=run_id, note="its run_started is unreadable")
    return RunStarted(
        run_id=run_id,
        at=record.started_at,
        elapsed_s=0.0,
        total=record.total,
        job_type=record.job_type,
        max_concurrency=record.max_concurrency or len(record.planned),
        wait=record.wait,
        planned=tuple(record.planned),
        options=record.options,
        selection=record.selection,
    )


def replay_result(
    store: RunStore, run_id: str, *, also: EventSink | None = None
) -> RunResult | None:
    """The run's result as a :class:`ResultBuilder` fed its stored events would give it; None when
    the store has no start of the run. *also* hears the same events, in the same read (a run's
    report draws its timeline from them).

    For a run that never finished (crashed, or still going), ``outcome`` is ``"running"`` and
    each sync shows what was known; open syncs are counted as ``pending``.
    """
    builder = ResultBuilder()
    last = replay_into(builder if also is None else _both(builder, also), store, run_id)
    if last is None:
        return None
    if isinstance(last, RunFinished):
        return builder.result
    return _unfinished(builder)


def _both(first: EventSink, second: EventSink) -> EventSink:
    def both(event: Event) -> None:
        first(event)
        second(event)

    return both


def _unfinished(builder: ResultBuilder) -> RunResult:
    # ResultBuilder only lists its syncs at run_finished; an unfinished run still deserves them.
    syncs = builder.snapshot().syncs
    counts: dict[str, int] = dict.fromkeys(OUTCOMES, 0)
    for s in syncs:
        key = s.outcome or "pending"
        counts[key] = counts.get(key, 0) + 1
    return builder.result.model_copy(
        update={
            # An earlier process may have finished the run before this one resumed it.
            "outcome": "running",
            "finished_at": None,
            "duration_s": None,
            "syncs": syncs,
            "counts": counts,
            "totals": Totals(
                rows_synced=sum(s.rows_synced or 0 for s in syncs),
                bytes_synced=sum(s.bytes_synced or 0 for s in syncs),
            ),
        }
    )
