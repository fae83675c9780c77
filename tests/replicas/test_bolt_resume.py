"""A run's home is the database, not the machine it started on: ``airbyte-fleet run`` killed with
SIGKILL in one working directory (a container that is gone) is carried on by ``run --resume last``
from another, which has none of the first one's files, without a second job for anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .harness import Fleet, journal_runs, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CONNECTIONS = 20
FIRST_WAVE = 10
OUTPUT = ["--output", "json", "--no-progress", "--log-format", "json"]


async def test_a_killed_run_is_resumed_from_another_container_without_a_second_job(
    pg_url: str, tmp_path: Path
) -> None:
    async with Fleet(tmp_path) as fleet:
        sim = await fleet.simulator(connections=CONNECTIONS, sync_seconds=(3, 6))
        ids = await sim.connection_ids()
        first = await fleet.cli(
            sim,
            [
                "run",
                "--all",
                "--max-concurrency",
                str(FIRST_WAVE),
                "--poll-interval",
                "0.2",
                "--retry-backoff",
                "0",
                "--database-url",
                pg_url,
                "--lease",
                "2s",
                *OUTPUT,
            ],
            cwd=tmp_path / "container-a",
            name="first",
        )

        async def first_wave_sent() -> bool:
            assert first.alive, first.stderr()
            return await sim.posts() >= FIRST_WAVE

        # Half the connections have a job, half are not triggered yet: the container dies there.
        await until(first_wave_sent, 30, "the first wave of triggers")
        await first.kill()
        (run_id, (finished_at, _)), *others = journal_runs(pg_url).items()
        assert others == []
        assert finished_at is None

        second = await fleet.cli(
            sim,
            ["run", "--resume", "last", "--database-url", pg_url, *OUTPUT],
            cwd=tmp_path / "container-b",
            name="second",
        )
        code = await second.wait(90)
        assert code == 0, second.stderr()[-4000:]
        result = json.loads(second.stdout())
        jobs = await sim.jobs()
        posts = await sim.posts()

    first.assert_no_traceback()
    second.assert_no_traceback()
    # Nothing of the run was kept in the first container's working directory.
    assert not list((tmp_path / "container-a").rglob("journal.sqlite3"))
    assert result["run_id"] == run_id
    assert result["outcome"] == "succeeded"
    syncs = result["syncs"]
    assert sorted(s["connection_id"] for s in syncs) == sorted(ids)
    assert {s["outcome"] for s in syncs} == {"succeeded"}
    # One job per connection: the killed process's jobs were found and followed, not sent again.
    per_connection = {cid: [j for j in jobs if j["connectionId"] == cid] for cid in ids}
    assert {cid: len(js) for cid, js in per_connection.items()} == dict.fromkeys(ids, 1)
    assert posts == CONNECTIONS
    assert {s["connection_id"]: s["job_id"] for s in syncs} == {
        cid: js[0]["jobId"] for cid, js in per_connection.items()
    }
    assert journal_runs(pg_url)[run_id][0] is not None
