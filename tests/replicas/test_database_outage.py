"""PostgreSQL cut off mid-run: ``airbyte-fleet run`` either carries on (the cut fell between
durable writes) or stops by its interrupt policy with one sentence and a code of its own; in
every case no job was triggered without its intent in the journal first, and ``--resume last``
finishes the run without a second job for any connection."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from .harness import Fleet, Proc, TcpProxy, fatal_lines, intents, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CONNECTIONS = 20
CONCURRENCY = 5
# Longer than the lease: a run that cannot renew it must stop triggering.
CUT_SECONDS = 4.0
LEASE = "2s"
OUTPUT = ["--output", "json", "--no-progress", "--log-format", "json"]
# Success, some sync failed, usage, Airbyte unreachable, interrupted: a database that went away
# mid-run must not be mistaken for any of them.
OTHER_CODES = {0, 1, 2, 3, 130}


def _stopped_with_one_sentence(proc: Proc, code: int) -> str:
    (fatal,) = fatal_lines(proc)
    assert fatal["exit_code"] == code
    sentence: str = fatal["error"]
    assert sentence.strip()
    assert "\n" not in sentence
    return sentence


def _triggered_after_intent(
    jobs: list[dict[str, Any]], journaled: dict[str, list[datetime]]
) -> list[dict[str, Any]]:
    """The jobs with no intent of their connection journaled before them (the simulator gives a
    job's start in whole seconds)."""
    bad = []
    for job in jobs:
        start = datetime.fromisoformat(job["startTime"].replace("Z", "+00:00")).timestamp()
        before = [
            at
            for at in journaled.get(job["connectionId"], [])
            if math.floor(at.timestamp()) <= start
        ]
        if not before:
            bad.append(job)
    return bad


async def test_a_database_cut_mid_run_never_lets_a_trigger_go_unjournaled(
    pg_url: str, tmp_path: Path
) -> None:
    async with Fleet(tmp_path) as fleet, TcpProxy(pg_url) as proxy:
        sim = await fleet.simulator(connections=CONNECTIONS, sync_seconds=(2, 4))
        ids = await sim.connection_ids()
        first = await fleet.cli(
            sim,
            [
                "run",
                "--all",
                "--max-concurrency",
                str(CONCURRENCY),
                "--poll-interval",
                "0.2",
                "--retry-backoff",
                "0",
                # Jobs left running when the run stops: the resume follows them to their end.
                "--on-interrupt",
                "detach",
                "--database-url",
                proxy.url,
                "--lease",
                LEASE,
                *OUTPUT,
            ],
            cwd=tmp_path / "work",
            name="first",
        )

        async def some_sent() -> bool:
            assert first.alive, first.stderr()
            return await sim.posts() >= CONCURRENCY

        await until(some_sent, 30, "the first triggers")
        proxy.cut()
        await asyncio.sleep(CUT_SECONDS)
        proxy.restore()
        touched = proxy.dropped + proxy.refused
        code = await first.wait(90)

        second: Proc | None = None
        if code == 0:
            result = json.loads(first.stdout())
        else:
            sentence = _stopped_with_one_sentence(first, code)
            print(f"the run stopped with exit {code}: {sentence}")
            second = await fleet.cli(
                sim,
                ["run", "--resume", "last", "--database-url", pg_url, *OUTPUT],
                cwd=tmp_path / "work",
                name="resume",
            )
            resumed = await second.wait(90)
            assert resumed == 0, second.stderr()[-4000:]
            result = json.loads(second.stdout())
        jobs = await sim.jobs()
        posts = await sim.posts()

    print(f"cut touched {touched} connections to PostgreSQL; run exit {code}")
    # The cut reached the run: connections it had open were dropped, or new ones refused.
    assert touched > 0
    first.assert_no_traceback()
    assert code == 0 or code not in OTHER_CODES, first.stderr()[-4000:]
    if second is not None:
        second.assert_no_traceback()
    # Whatever failed underneath (the pool's reconnects included) is said in the log's format.
    for proc in filter(None, (first, second)):
        assert proc.stray_lines() == [], proc.name
    assert result["outcome"] == "succeeded"
    assert sorted(s["connection_id"] for s in result["syncs"]) == sorted(ids)
    assert {s["outcome"] for s in result["syncs"]} == {"succeeded"}
    assert sorted(j["connectionId"] for j in jobs) == sorted(ids)
    assert posts == CONNECTIONS
    assert _triggered_after_intent(jobs, intents(pg_url)) == []
