"""Staged runs against the simulator over loopback: groups that wait for other groups.

Trigger times are the simulator's own record (``Exchange.at``, its clock when a ``POST /jobs``
arrived), and each scripted job ends ``seconds`` after it was created: so "no sync of a group is
triggered before every upstream sync reached a final state" is checked on Airbyte's side, not on
what the engine says about itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from airbyte_fleet import AirbyteSettings, run_syncs
from airbyte_fleet.api import AirbyteClient
from airbyte_fleet.engine.events import (
    Event,
    EventBus,
    GroupFinished,
    GroupStarted,
    SyncSkipped,
    SyncTriggered,
)
from airbyte_fleet.engine.options import Group, RunOptions, Selection
from airbyte_fleet.engine.plan import Plan, PlanError, build_plan, is_staged
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.engine.run import Engine
from airbyte_fleet.engine.stages import Stage, StageBook, stage_cycle, stage_order
from airbyte_fleet.simulator import JobScript, Simulator
from conftest import SimFactory, client_for

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"poll_interval": 0.02, "retry_backoff": 0.0}


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


async def _run(client: AirbyteClient, plan: Plan, **options: Any) -> tuple[RunResult, Recorder]:
    recorder = Recorder()
    builder = ResultBuilder()
    engine = Engine(client, RunOptions(**{**FAST, **options}), EventBus([builder, recorder]))
    await engine.run(plan)
    return builder.result, recorder


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


def _posts(sim: Simulator) -> dict[str, list[float]]:
    """Each connection's ``POST /jobs`` arrival times (simulator clock), answered or not."""
    found: dict[str, list[float]] = {}
    for exchange in sim.exchanges:
        if exchange.method == "POST" and exchange.route == "/jobs":
            cid = json.loads(exchange.request_body)["connectionId"]
            found.setdefault(cid, []).append(exchange.at)
    return found


async def _plan(
    client: AirbyteClient, groups: Mapping[str, Group], *names: str, **selection: Any
) -> Plan:
    return await build_plan(client, Selection(groups=list(names), **selection), groups=groups)


async def test_a_group_starts_only_once_every_upstream_sync_is_final(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=6)
    a, b, c, d, e, f = _ids(sim)
    seconds = {a: 0.4, b: 0.8, c: 0.1, d: 0.1, e: 1.0, f: 0.1}
    for cid, s in seconds.items():
        sim.script(cid, JobScript(seconds=s))
    groups = {
        "raw": Group(connections=[a, b]),
        "marts": Group(connections=[c, d], after=["raw"]),
        # Waits for nothing: runs beside raw, not after it.
        "side": Group(connections=[e]),
        "last": Group(connections=[f], after=["marts", "side"]),
    }
    async with client_for(root) as client:
        plan = await _plan(client, groups, "raw", "marts", "side", "last")
        assert [s.group for s in plan.stages] == ["raw", "side", "marts", "last"]
        result, events = await _run(client, plan, max_concurrency=10)

    assert result.outcome == "succeeded", result.summary
    posts = _posts(sim)
    assert all(len(times) == 1 for times in posts.values())
    at = {cid: times[0] for cid, times in posts.items()}
    # A job ends `seconds` after it was created, which is after its POST arrived.
    ended = {cid: at[cid] + seconds[cid] for cid in at}
    for down in (c, d):
        assert at[down] >= max(ended[a], ended[b])
    assert at[f] >= max(ended[c], ended[d], ended[e])
    # The independent group started with the run, before raw had ended.
    assert at[e] < min(ended[a], ended[b])

    started = [(g.group, g.syncs) for g in events.of(GroupStarted)]
    assert sorted(started) == [("last", 1), ("marts", 2), ("raw", 2), ("side", 1)]
    finished = {g.group: g for g in events.of(GroupFinished)}
    assert finished["raw"].counts == {"succeeded": 2}
    assert {g.outcome for g in finished.values()} == {"succeeded"}
    # A group's end comes before the start of any group after it.
    order = [(type(ev).__name__, ev.group) for ev in events.events if hasattr(ev, "group")]
    assert order.index(("GroupFinished", "raw")) < order.index(("GroupStarted", "marts"))

    by_name = {g.group: g for g in result.groups}
    assert [g.group for g in result.groups] == ["raw", "side", "marts", "last"]
    assert by_name["last"].after == ["marts", "side"]
    assert by_name["marts"].counts == {"succeeded": 2}
    for group in result.groups:
        assert group.started_at is not None
        assert group.finished_at is not None
    assert by_name["raw"].finished_at <= by_name["marts"].started_at  # type: ignore[operator]


async def test_the_concurrency_limit_holds_across_groups(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=8)
    ids = _ids(sim)
    for cid in ids:
        sim.script(cid, JobScript(seconds=0.3))
    groups = {
        "one": Group(connections=ids[:4]),
        "two": Group(connections=ids[4:7]),
        "after": Group(connections=ids[7:], after=["one"]),
    }
    async with client_for(root) as client:
        plan = await _plan(client, groups, "one", "two", "after")
        result, _ = await _run(client, plan, max_concurrency=2)
    assert result.outcome == "succeeded", result.summary
    at = {cid: times[0] for cid, times in _posts(sim).items()}
    # At each trigger, how many jobs were created and not yet ended (this one included).
    spans = [(start, start + 0.3) for start in at.values()]
    for start, _ in spans:
        assert sum(1 for s, end in spans if s <= start < end) <= 2
    # The limit was used, not merely respected: two jobs were in flight at once.
    assert any(sum(1 for s, end in spans if s <= start < end) == 2 for start, _ in spans)


@pytest.mark.parametrize("policy", ["skip", "run"])
async def test_an_upstream_failure_skips_or_runs_the_group(
    make_sim: SimFactory, policy: str
) -> None:
    sim, root = await make_sim(connections=4)
    a, b, c, d = _ids(sim)
    sim.script(a, JobScript(seconds=0.1, final="failed"))
    for cid in (b, c, d):
        sim.script(cid, JobScript(seconds=0.1))
    groups = {
        "raw": Group(connections=[a, b]),
        "marts": Group(connections=[c], after=["raw"], on_upstream_failure=policy),  # type: ignore[typeddict-item]
        "exports": Group(connections=[d], after=["marts"]),
    }
    async with client_for(root) as client:
        plan = await _plan(client, groups, "raw", "marts", "exports")
        result, events = await _run(client, plan)

    assert result.outcome == "failed"
    by_id = {s.connection_id: s for s in result.syncs}
    by_group = {g.group: g for g in result.groups}
    assert by_group["raw"].outcome == "failed"
    assert by_group["raw"].counts == {"succeeded": 1, "failed": 1}
    posts = _posts(sim)
    if policy == "skip":
        assert set(posts) == {a, b}
        skipped = {e.connection_id: e for e in events.of(SyncSkipped)}
        assert skipped[c].cause == "upstream_failed"
        assert "upstream group raw" in skipped[c].reason
        assert by_id[c].outcome == "skipped"
        assert "upstream group raw did not succeed (1 failed)" in (by_id[c].error or "")
        # Skipped in turn: the group after it is skipped too, naming it.
        assert skipped[d].cause == "upstream_failed"
        assert "upstream group marts was skipped" in skipped[d].reason
        assert by_group["marts"].outcome == "skipped"
        assert by_group["exports"].outcome == "skipped"
        assert by_group["marts"].skip_reason == "upstream group raw did not succeed (1 failed)"
    else:
        assert set(posts) == {a, b, c, d}
        assert by_group["marts"].outcome == "succeeded"
        assert by_group["exports"].outcome == "succeeded"
        assert by_id[c].outcome == by_id[d].outcome == "succeeded"


async def test_a_connection_in_two_groups_runs_once_and_the_later_group_waits_for_it(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=3)
    a, shared, c = _ids(sim)
    sim.script(a, JobScript(seconds=0.1))
    sim.script(shared, JobScript(seconds=0.6))
    sim.script(c, JobScript(seconds=0.1))
    groups = {
        # Independent groups both selecting one connection: it runs in the first, and the
        # second group ends only once it has.
        "raw": Group(connections=[a, shared]),
        "extra": Group(connections=[shared]),
        "marts": Group(connections=[shared, c], after=["raw"]),
    }
    async with client_for(root) as client:
        plan = await _plan(client, groups, "raw", "extra", "marts")
        (raw, extra, marts) = plan.stages
        assert raw.syncs == (a, shared)
        assert marts.syncs == (c,)
        assert marts.waits_for == (shared,)
        assert extra.syncs == ()
        assert extra.waits_for == (shared,)
        result, events = await _run(client, plan)
    assert result.outcome == "succeeded", result.summary
    posts = _posts(sim)
    assert len(posts[shared]) == 1
    assert posts[c][0] >= posts[shared][0] + 0.6
    by_group = {g.group: g for g in result.groups}
    assert by_group["marts"].counts == {"succeeded": 2}
    assert by_group["extra"].counts == {"succeeded": 1}
    shared_end = next(s.finished_at for s in result.syncs if s.connection_id == shared)
    assert shared_end is not None
    for name in ("raw", "extra", "marts"):
        assert by_group[name].finished_at >= shared_end  # type: ignore[operator]
    assert len(events.of(GroupFinished)) == 3


async def test_with_upstream_adds_the_groups_a_group_comes_after(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3)
    a, b, c = _ids(sim)
    groups = {
        "raw": Group(connections=[a]),
        "staging": Group(connections=[b], after=["raw"]),
        "marts": Group(connections=[c], after=["staging"]),
    }
    async with client_for(root) as client:
        alone = await _plan(client, groups, "marts")
        assert [p.connection_id for p in alone.items] == [c]
        # No group of the run comes after another: an ordinary run, streamed as ever.
        assert alone.stages == ()
        assert not is_staged(Selection(groups=["marts"]), groups)
        plan = await _plan(client, groups, "marts", with_upstream=True)
        assert is_staged(Selection(groups=["marts"], with_upstream=True), groups)
        assert [s.group for s in plan.stages] == ["raw", "staging", "marts"]
        assert {p.connection_id for p in plan.items} == {a, b, c}
        result, _ = await _run(client, plan)
    assert result.outcome == "succeeded"
    at = {cid: times[0] for cid, times in _posts(sim).items()}
    assert at[a] < at[b] < at[c]


async def test_syncs_selected_otherwise_start_at_once(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3)
    a, b, c = _ids(sim)
    sim.script(a, JobScript(seconds=0.5))
    groups = {"raw": Group(connections=[a]), "marts": Group(connections=[b], after=["raw"])}
    async with client_for(root) as client:
        plan = await _plan(client, groups, "raw", "marts", connections=[c])
        assert all(c not in s.syncs for s in plan.stages)
        await _run(client, plan)
    at = {cid: times[0] for cid, times in _posts(sim).items()}
    assert at[c] < at[a] + 0.5 <= at[b]


@pytest.mark.parametrize(
    ("groups", "names", "message"),
    [
        (
            {
                "raw": Group(all=True, after=["marts"]),
                "marts": Group(all=True, after=["raw"]),
            },
            ["raw"],
            "Groups wait for each other in a cycle (raw -> marts -> raw), so none could ever "
            "start; remove 'raw' from after in [groups.marts].",
        ),
        (
            {"raw": Group(all=True), "marts": Group(all=True, after=["rwa"])},
            ["marts"],
            "Group marts comes after unknown group 'rwa'; define [groups.rwa] or remove it "
            "from the after of group marts.",
        ),
        (
            {"raw": Group(names=["nothing-like-this*"]), "marts": Group(all=True, after=["raw"])},
            ["raw", "marts"],
            "Group raw selects no connection of the 4 these credentials can see, so a staged "
            "run cannot wait for it; fix its connections, names, tags or workspaces in the "
            "config file, or leave it out of the run.",
        ),
    ],
)
async def test_bad_graphs_are_refused_before_anything_is_triggered(
    make_sim: SimFactory, groups: dict[str, Group], names: list[str], message: str
) -> None:
    sim, root = await make_sim(connections=4)
    async with client_for(root) as client:
        with pytest.raises(PlanError) as caught:
            await _plan(client, groups, *names)
    assert str(caught.value) == message
    assert sim.count("POST", "/jobs") == 0


async def test_run_syncs_runs_a_staged_selection(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No config file, no AIRBYTE_FLEET_* from the environment: the groups are Python's.
    for key in list(os.environ):
        if key.startswith(("AIRBYTE_", "USE_SERVER")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    sim, root = await make_sim(connections=3, client_secret="staged-secret")
    a, b, c = _ids(sim)
    sim.script(a, JobScript(seconds=0.3))
    result = await run_syncs(
        {"groups": ["marts"], "with_upstream": True},
        {"poll_interval": "20ms"},
        settings=AirbyteSettings(
            base_url=root, client_id="sim-client", client_secret="staged-secret"
        ),
        groups={
            "raw": Selection(connections=[a]),
            "marts": {"connections": [b, c], "after": ["raw"], "on_upstream_failure": "run"},
        },
    )
    assert result.ok, result.summary
    assert [(g.group, g.outcome, g.after) for g in result.groups] == [
        ("raw", "succeeded", []),
        ("marts", "succeeded", ["raw"]),
    ]
    assert result.groups[1].on_upstream_failure == "run"
    at = {cid: times[0] for cid, times in _posts(sim).items()}
    assert min(at[b], at[c]) >= at[a] + 0.3


async def test_a_stop_reports_waiting_groups_interrupted_and_their_syncs_for_a_resume(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=2)
    a, b = _ids(sim)
    sim.script(a, JobScript(seconds=600))
    groups = {
        "raw": Group(connections=[a]),
        # with_upstream on the group itself: naming it brings raw along.
        "marts": Group(connections=[b], after=["raw"], with_upstream=True),
    }
    recorder = Recorder()
    builder = ResultBuilder()
    triggered = anyio.Event()

    def on_trigger(event: Event) -> None:
        if isinstance(event, SyncTriggered):
            triggered.set()

    async with client_for(root) as client:
        plan = await _plan(client, groups, "marts")
        assert [s.group for s in plan.stages] == ["raw", "marts"]
        engine = Engine(client, RunOptions(**FAST), EventBus([builder, recorder, on_trigger]))
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, plan)
            with anyio.fail_after(20):
                await triggered.wait()
            engine.stop()
    result = builder.result
    assert result.outcome == "interrupted"
    by_group = {g.group: g for g in result.groups}
    assert by_group["raw"].outcome == by_group["marts"].outcome == "interrupted"
    assert by_group["marts"].started_at is None
    (skipped,) = recorder.of(SyncSkipped)
    assert skipped.connection_id == b
    assert skipped.cause == "interrupted"
    assert [j["status"] for j in sim.jobs] == ["cancelled"]
    assert set(_posts(sim)) == {a}


def test_stage_order_puts_each_group_one_stage_after_the_latest_it_waits_for() -> None:
    # q waits for p, x for both: p is reached twice on the way, which is no cycle.
    assert stage_order(["x", "p", "q"], {"x": ["p", "q"], "q": ["p"]}) == ["p", "q", "x"]
    edges = {"marts": ["raw"], "last": ["marts", "side"]}
    assert stage_order(["raw", "marts", "side", "last"], edges) == ["raw", "side", "marts", "last"]
    # Deeper than Python's recursion limit.
    chain = [f"g{i}" for i in range(5000)]
    assert stage_order(chain[::-1], {g: [chain[i - 1]] for i, g in enumerate(chain) if i}) == chain
    with pytest.raises(ValueError, match="cycle"):
        stage_order(["a", "b"], {"a": ["b"], "b": ["a"]})
    assert stage_cycle({"raw": ["marts"], "marts": ["raw"]}) == ["raw", "marts", "raw"]


def test_a_resumed_book_finishes_carried_groups_silently_and_starts_the_rest() -> None:
    book = StageBook(
        [
            Stage("raw", syncs=("a", "b")),
            Stage("marts", after=("raw",), syncs=("c", "d")),
        ]
    )
    # As a resume admits them: raw's syncs ended in the earlier process, marts' c too.
    for cid in ("a", "b", "c"):
        book.settled(cid, "succeeded", earlier=True)
    assert book.holds("d")
    (raw,) = book.startable()
    assert (raw.group, raw.syncs, raw.carried) == ("raw", (), True)
    ((stage, outcome, counts, reason, carried),) = book.finishable()
    assert (stage.group, outcome, counts, reason, carried) == (
        "raw",
        "succeeded",
        {"succeeded": 2},
        None,
        True,
    )
    (marts,) = book.startable()
    assert (marts.group, marts.syncs, marts.carried, marts.skip_reason) == (
        "marts",
        ("d",),
        False,
        None,
    )
    assert not book.finishable()
    book.settled("d", "failed")
    ((stage, outcome, counts, _, carried),) = book.finishable()
    assert (stage.group, outcome, counts, carried) == (
        "marts",
        "failed",
        {"succeeded": 1, "failed": 1},
        False,
    )
