"""Who submitted a run (the runs list's "submitted by"): the schedule that fired it, remembered
after its queue entry is gone; a run submitted through the API has none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airbyte_fleet.coordination import QueuedRun

from .support import World

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _run(n: int, *, by: str | None = None) -> QueuedRun:
    return QueuedRun(f"run-{n:02d}", T0 + timedelta(seconds=n), "{}", submitted_by=by)


def test_a_runs_schedule_is_known_before_and_after_it_finishes(world: World) -> None:
    a, b = world.open(), world.open()
    a.fire_once("nightly", T0, _run(1, by="nightly"))
    a.submit(_run(2))
    a.submit(_run(3, by="hourly"))
    wanted = ["run-01", "run-02", "run-03", "run-99"]
    assert b.submitters(wanted) == {"run-01": "nightly", "run-03": "hourly"}
    for run_id in ("run-01", "run-02", "run-03"):
        a.finish(run_id)
    # The queue entries are gone; the fire of the schedule's tick is not.
    assert b.submitters(wanted) == {"run-01": "nightly"}
    assert b.submitters([]) == {}
