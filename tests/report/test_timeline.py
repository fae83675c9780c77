"""The timeline of real runs against the simulator: what each bar says is what happened."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from airbyte_fleet.engine.events import Event, EventBus, RunStarted, SyncsPlanned
from airbyte_fleet.engine.options import Group, RunOptions, Selection
from airbyte_fleet.engine.plan import build_plan
from airbyte_fleet.engine.run import Engine
from airbyte_fleet.report import Bar, TimelineBuilder, timeline
from airbyte_fleet.simulator import JobScript
from conftest import SimFactory, client_for

from .support import made_run, real_run

pytestmark = pytest.mark.anyio

SECONDS = 0.3


def _overlap(bars: list[Bar]) -> int:
    """The most syncs between first trigger and end at any one moment."""
    moments = sorted(
        [(b.triggering_s, 1) for b in bars if b.triggering_s is not None and b.end_s is not None]
        + [(b.end_s, -1) for b in bars if b.triggering_s is not None and b.end_s is not None],
        key=lambda m: (m[0], m[1]),  # an end before a start at the same moment: a slot reused
    )
    now = peak = 0
    for _, step in moments:
        now += step
        peak = max(peak, now)
    return peak


async def test_a_real_run_with_a_retry_a_failure_a_skip_and_a_limit(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=7, inactive_connections=1)
    active = [c["connectionId"] for c in sim.connections if c["status"] == "active"]
    (inactive,) = [c["connectionId"] for c in sim.connections if c["status"] != "active"]
    retried, failed, *rest = active
    sim.script(retried, JobScript(seconds=SECONDS, final="failed"))
    sim.script(retried, JobScript(seconds=SECONDS))
    for _ in range(2):
        sim.script(failed, JobScript(seconds=SECONDS, final="failed"))
    for cid in rest:
        sim.script(cid, JobScript(seconds=SECONDS))

    run = await real_run(root, tmp_path, max_concurrency=2, retries=1)

    # What the journal gives back is what was heard live, bar for bar.
    assert run.stored.bars == run.live.bars
    assert run.stored.finished
    bars = {b.connection_id: b for b in run.stored.bars}
    assert set(bars) == {c["connectionId"] for c in sim.connections}
    names = {c["connectionId"]: c["name"] for c in sim.connections}
    assert all(b.connection_name == names[cid] for cid, b in bars.items())
    outcomes = {s.connection_id: s.outcome for s in run.result.syncs}
    assert all(b.outcome == outcomes[cid] for cid, b in bars.items())

    skipped = bars[inactive]
    assert (skipped.outcome, skipped.triggering_s, skipped.started_s) == ("skipped", None, None)
    assert skipped.retries_s == []

    for cid, outcome in ((retried, "succeeded"), (failed, "failed")):
        bar = bars[cid]
        assert bar.outcome == outcome
        assert bar.triggering_s is not None
        assert bar.started_s is not None
        assert bar.end_s is not None
        (retry,) = bar.retries_s
        # The retry is decided once the first job failed, and the second job runs after it.
        assert bar.started_s + SECONDS * 0.9 <= retry <= bar.end_s - SECONDS * 0.9
    assert len(sim.jobs_for(retried)) == len(sim.jobs_for(failed)) == 2

    # The limit of two held the rest back: never more than two between trigger and end, and
    # each sync that waited was let go only once another had ended.
    started = [b for b in run.stored.bars if b.triggering_s is not None]
    assert _overlap(started) == 2
    waited = [b for b in started if (b.queued_s or 0) > SECONDS / 2]
    assert len(waited) == len(started) - 2
    for bar in waited:
        assert bar.triggering_s is not None
        assert any(o.end_s is not None and o.end_s <= bar.triggering_s for o in started)
        assert bar.ready_s == 0.0  # planned at the start: it waited for a slot, all of it
    # Sorted by first trigger; the skip (at the start, before any trigger) first of all.
    order = [b.order for b in run.stored.bars]
    assert order == sorted(order)
    assert run.stored.bars[0].connection_id == inactive
    span = run.stored.span_s
    assert run.result.duration_s is not None
    assert span == pytest.approx(run.result.duration_s, abs=0.002)


def test_syncs_planned_later_wait_from_when_they_were_planned() -> None:
    events = made_run(3)
    start = events[0]
    assert isinstance(start, RunStarted)
    first, later = start.planned[:2], start.planned[2:]
    late_plan = SyncsPlanned(
        run_id=start.run_id,
        at=start.at.replace(second=1),
        elapsed_s=1.0,
        planned=later,
        total=3,
        final=True,
    )
    reordered: list[Event] = [
        dataclasses.replace(start, planned=first, planning=True),
        late_plan,
        *events[1:],
    ]
    bars = {b.connection_id: b for b in timeline(reordered).bars}
    # The third sync is triggered at 2 s (made_run): it waited one second, not two.
    late = bars[later[0].connection_id]
    assert (late.ready_s, late.triggering_s, late.queued_s) == (1.0, 2.0, 1.0)
    assert bars[first[0].connection_id].ready_s == 0.0


def test_unknown_events_are_passed_over() -> None:
    class GroupStarted(Event):
        """A kind this version does not know (issue 15's stages)."""

    events = made_run(4)
    start = events[0]
    odd = GroupStarted(run_id=start.run_id, at=start.at, elapsed_s=0.0)
    assert timeline([events[0], odd, *events[1:]]) == timeline(events)


async def test_a_staged_runs_later_group_waits_for_its_upstream_not_for_a_slot(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=4)
    a, b, c, d = (x["connectionId"] for x in sim.connections)
    for cid in (a, b, c, d):
        sim.script(cid, JobScript(seconds=SECONDS))
    groups = {"raw": Group(connections=[a, b]), "marts": Group(connections=[c, d], after=["raw"])}
    builder = TimelineBuilder()
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(groups=["raw", "marts"]), groups=groups)
        options = RunOptions(poll_interval=0.02, retry_backoff=0.0, max_concurrency=10)
        await Engine(client, options, EventBus([builder])).run(plan)

    bars = {bar.connection_id: bar for bar in builder.timeline().bars}
    raw_ended = max(bars[a].end_s or 0.0, bars[b].end_s or 0.0)
    for cid in (c, d):
        bar = bars[cid]
        assert bar.outcome == "succeeded"
        # Ready when its group started, once raw had ended: the wait before was its upstream's,
        # and with slots to spare the limiter held it back for no time worth drawing.
        assert bar.ready_s >= raw_ended - 0.01
        assert bar.queued_s < SECONDS / 2
