"""The engine steered through its trigger hook: adopt, skip, refuse, wait, and never cancel what the
hook keeps. The simulator is real (loopback HTTP); the hook is a plain object, no HTTP fake."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from airbyte_fleet.engine._core import INTERRUPTED_BEFORE_TRIGGER
from airbyte_fleet.engine.events import Event, EventBus
from airbyte_fleet.engine.hooks import Adopt, Claim, ClaimError, Skip, Trigger
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.plan import build_plan
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.engine.run import Engine
from airbyte_fleet.simulator import FakeClock, JobScript, Simulator
from conftest import SimFactory, client_for

pytestmark = pytest.mark.anyio

FAST: dict[str, Any] = {"poll_interval": 0.02, "retry_backoff": 0.0}


class ScriptedHook:
    """Answers each connection's claim from a table; records every call the engine makes."""

    def __init__(self, answers: dict[str, Claim | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[Any, ...]] = []
        self.keep: set[int] = set()
        self.block = anyio.Event()
        self.blocked: set[str] = set()

    async def claim(self, run_id: str, connection_id: str, *, seen: frozenset[int]) -> Claim:
        self.calls.append(("claim", connection_id, seen))
        if connection_id in self.blocked:
            await self.block.wait()
        answer = self.answers.get(connection_id, Trigger())
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def following(self, run_id: str, connection_id: str, job_id: int) -> None:
        self.calls.append(("following", connection_id, job_id))

    async def released(self, run_id: str, connection_id: str) -> None:
        self.calls.append(("released", connection_id))

    async def may_cancel(self, run_id: str, connection_id: str, job_id: int) -> str | None:
        self.calls.append(("may_cancel", connection_id, job_id))
        return "another run follows it" if job_id in self.keep else None

    async def run_ended(self, run_id: str) -> None:
        self.calls.append(("run_ended",))


class Triggered:
    """A sink that remembers every event kind and wakes the test once *count* syncs have a job."""

    def __init__(self, count: int) -> None:
        self.kinds: list[str] = []
        self.count = count
        self.reached = anyio.Event()

    def __call__(self, event: Event) -> None:
        self.kinds.append(event.kind)
        if self.kinds.count("sync_triggered") >= self.count:
            self.reached.set()


def _ids(sim: Simulator) -> list[str]:
    return [c["connectionId"] for c in sim.connections]


def _by_id(result: RunResult) -> dict[str, Any]:
    return {s.connection_id: s for s in result.syncs}


async def _run(root: str, hook: ScriptedHook, ids: list[str], **options: Any) -> RunResult:
    builder = ResultBuilder()
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(connections=ids))
        engine = Engine(client, RunOptions(**{**FAST, **options}), EventBus([builder]), hook=hook)
        await engine.run(plan)
    return builder.result


async def test_the_hook_adopts_skips_refuses_and_grants(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, failure_rate=0, incomplete_rate=0)
    adopt, skip, grant = _ids(sim)
    for cid in (adopt, grant):
        sim.script(cid, JobScript(seconds=0.2))
    # A job another run of the hook's owner is following.
    elsewhere = int(sim.start_job(adopt)["jobId"])
    hook = ScriptedHook(
        {
            adopt: Adopt(elsewhere, "run R1"),
            skip: Skip("run R2 owns it"),
        }
    )
    result = await _run(root, hook, [adopt, skip, grant])
    by_id = _by_id(result)

    assert by_id[adopt].outcome == "succeeded"
    assert by_id[adopt].job_id == elsewhere
    assert by_id[adopt].history[0].adopted
    assert by_id[skip].outcome == "skipped"
    assert by_id[skip].error == "run R2 owns it"
    assert by_id[grant].outcome == "succeeded"
    # Only the granted connection reached Airbyte's trigger: adopt and skip sent nothing.
    assert len(sim.posts_for(grant)) == 1
    for cid in (adopt, skip):
        assert sim.posts_for(cid) == []
    assert len(sim.jobs_for(adopt)) == 1
    # The hook heard which jobs the run followed, and that it let every connection go.
    following = {(c[1], c[2]) for c in hook.calls if c[0] == "following"}
    assert following == {(adopt, elsewhere), (grant, by_id[grant].job_id)}
    released = {c[1] for c in hook.calls if c[0] == "released"}
    assert released == {adopt, skip, grant}
    assert hook.calls[-1] == ("run_ended",)


async def test_a_claim_the_hook_cannot_make_stops_the_run_as_a_store_failure_would(
    make_sim: SimFactory,
) -> None:
    """The hook's store is the run's (a database shared by workers): a claim it cannot record
    stops the run by its interrupt policy, nothing more is triggered, and the syncs left are
    skipped as interrupted, so that a resume triggers them."""
    sim, root = await make_sim(connections=3, failure_rate=0, incomplete_rate=0)
    running, refuse, after = _ids(sim)
    sim.script(running, JobScript(seconds=30))
    hook = ScriptedHook({refuse: ClaimError("the claim store cannot be reached; try again")})
    result = await _run(root, hook, [running, refuse, after], max_concurrency=2)
    by_id = _by_id(result)

    assert result.outcome == "failed"
    assert "claim on connection" in (result.error or "")
    assert "claim store cannot be reached" in (result.error or "")
    for cid in (refuse, after):
        assert by_id[cid].outcome == "skipped"
        assert by_id[cid].error == INTERRUPTED_BEFORE_TRIGGER
        assert sim.posts_for(cid) == []
    # Whether the first one went out before the refusal or not, no job is left running.
    assert by_id[running].outcome in ("cancelled", "skipped")
    assert all(j["status"] == "cancelled" for j in sim.jobs_for(running))


@pytest.mark.parametrize(("policy", "outcome"), [("skip", "skipped"), ("fail", "error")])
async def test_an_adopt_answer_follows_the_if_running_policy(
    make_sim: SimFactory, policy: str, outcome: str
) -> None:
    sim, root = await make_sim(connections=1, failure_rate=0, incomplete_rate=0)
    (cid,) = _ids(sim)
    sim.script(cid, JobScript(seconds=0.2))
    job = int(sim.start_job(cid)["jobId"])
    result = await _run(root, ScriptedHook({cid: Adopt(job, "run R1")}), [cid], if_running=policy)
    sync = _by_id(result)[cid]
    assert sync.outcome == outcome
    assert "already running" in (sync.error or "")
    assert "run R1" in (sync.error or "")
    assert sim.posts_for(cid) == []


async def test_a_stop_cuts_a_waiting_claim_short_and_triggers_nothing(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=2, failure_rate=0, incomplete_rate=0)
    waiting, free = _ids(sim)
    sim.script(free, JobScript(seconds=30))
    hook = ScriptedHook({})
    hook.blocked.add(waiting)  # another run is triggering it: the claim waits
    builder, triggered = ResultBuilder(), Triggered(1)
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(connections=[waiting, free]))
        bus = EventBus([builder, triggered])
        engine = Engine(client, RunOptions(**FAST), bus, hook=hook, grace=5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, plan)
            await triggered.reached.wait()
            engine.stop("cancel")
    by_id = _by_id(builder.result)
    assert builder.result.outcome == "interrupted"
    assert by_id[waiting].outcome == "skipped"
    assert sim.posts_for(waiting) == []
    assert by_id[free].outcome == "cancelled"
    assert [j["status"] for j in sim.jobs_for(free)] == ["cancelled"]


async def test_a_job_the_hook_keeps_is_not_cancelled(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=1, failure_rate=0, incomplete_rate=0)
    (cid,) = _ids(sim)
    sim.script(cid, JobScript(seconds=30))
    hook = ScriptedHook({})
    builder, triggered = ResultBuilder(), Triggered(1)
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(connections=[cid]))
        bus = EventBus([builder, triggered])
        engine = Engine(client, RunOptions(**FAST), bus, hook=hook, grace=5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, plan)
            await triggered.reached.wait()
            hook.keep.add(int(sim.jobs_for(cid)[0]["jobId"]))
            engine.stop("cancel")
    sync = _by_id(builder.result)[cid]
    assert "left running" in (sync.error or "")
    assert "another run follows it" in (sync.error or "")
    assert sim.count("DELETE", "/jobs/{jobId}") == 0
    assert sim.jobs_for(cid)[0]["status"] in ("pending", "running")


async def test_let_go_drops_the_run_without_a_word_more(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, failure_rate=0, incomplete_rate=0)
    ids = _ids(sim)
    for cid in ids:
        sim.script(cid, JobScript(seconds=30))
    triggered = Triggered(2)
    seen = triggered.kinds
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(connections=ids))
        options = RunOptions(**{**FAST, "max_concurrency": 2})
        engine = Engine(client, options, EventBus([triggered]))
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, plan)
            await triggered.reached.wait()
            engine.let_go()
            count = len(seen)
    # Nothing more was said (no cancel, no run_finished), the third sync was never triggered, and
    # the two jobs keep running in Airbyte for a later process to follow.
    assert len(seen) == count
    assert "run_finished" not in seen
    assert sum(1 for cid in ids if sim.jobs_for(cid)) == 2
    statuses = [sim.jobs_for(c)[0]["status"] for c in ids if sim.jobs_for(c)]
    assert len(statuses) == 2
    assert set(statuses) <= {"pending", "running"}, statuses
    assert sim.count("DELETE", "/jobs/{jobId}") == 0


@pytest.mark.parametrize(("final", "outcome"), [("succeeded", "succeeded"), ("failed", "failed")])
async def test_a_job_that_ended_before_the_stop_reached_it_is_reported_as_it_ended(
    make_sim: SimFactory, final: str, outcome: str
) -> None:
    clock = FakeClock()
    sim, root = await make_sim(clock=clock, connections=1, failure_rate=0, incomplete_rate=0)
    (cid,) = _ids(sim)
    sim.script(cid, JobScript(seconds=5, final=final))
    builder, triggered = ResultBuilder(), Triggered(1)
    async with client_for(root) as client:
        plan = await build_plan(client, Selection(connections=[cid]))
        # Polls far apart: the job ends in Airbyte long before the engine would look again.
        options = RunOptions(**{**FAST, "poll_interval": 3600})
        engine = Engine(client, options, EventBus([builder, triggered]), grace=5)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run, plan)
            await triggered.reached.wait()
            clock.advance(60)
            engine.stop("cancel")
    sync = _by_id(builder.result)[cid]
    # The cancel found the job already ended: that is what it did, not an error of this run.
    assert sync.outcome == outcome
    assert sim.jobs_for(cid)[0]["status"] == final
    assert sim.count("DELETE", "/jobs/{jobId}") == 1
