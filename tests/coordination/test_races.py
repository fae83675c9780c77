"""Two real processes racing on one database: each run is taken once, each tick fires once, each
connection is triggered once."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from airbyte_fleet.coordination import QueuedRun

from .support import World

RACER = Path(__file__).with_name("racer.py")


@contextmanager
def _racers(world: World, *argvs: Sequence[str]) -> Iterator[list[subprocess.Popen[str]]]:
    database = world.url or str(world.state_dir)
    procs = [
        subprocess.Popen(
            [sys.executable, str(RACER), argv[0], database, *argv[1:]],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def _answer(proc: subprocess.Popen[str]) -> object:
    assert proc.stdout is not None
    return json.loads(proc.stdout.readline())


def test_two_processes_take_fifty_queued_runs_each_exactly_once(real_world: World) -> None:
    here = real_world.open()
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    ids = [f"run-{n:02d}" for n in range(50)]
    for n, run_id in enumerate(ids):
        here.submit(QueuedRun(run_id, t0 + timedelta(seconds=n), "{}"))
    with _racers(real_world, ["take", "a"], ["take", "b"]) as procs:
        taken = [_answer(proc) for proc in procs]
    assert isinstance(taken[0], list)
    assert isinstance(taken[1], list)
    assert sorted(taken[0] + taken[1]) == ids
    assert taken[0] == sorted(taken[0])  # each process took them oldest first
    assert taken[0]
    assert taken[1]
    holders = Counter(run.holder.owner for run in here.queued() if run.holder is not None)
    assert holders == {"a": len(taken[0]), "b": len(taken[1])}


def test_two_processes_firing_the_same_twenty_ticks_fire_each_once(real_world: World) -> None:
    here = real_world.open()
    with _racers(real_world, ["fire", "a", "20"], ["fire", "b", "20"]) as procs:
        fired = [_answer(proc) for proc in procs]
    assert fired[0] == fired[1]  # both learn the same winner for every tick
    assert isinstance(fired[0], list)
    assert [int(run_id.split("-")[1]) for run_id in fired[0]] == list(range(20))
    assert sorted(r.run_id for r in here.queued()) == sorted(fired[0])
    rows = real_world.sql("SELECT count(*) FROM schedule_fires")
    assert rows == [(20,)]


def test_two_processes_claiming_the_same_connections_trigger_each_once(
    real_world: World,
) -> None:
    real_world.open()
    count = 10
    with _racers(real_world, ["claim", "run-a", str(count)], ["claim", "run-b", str(count)]) as (
        procs
    ):
        answers = [_answer(proc) for proc in procs]
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("end\n")
            proc.stdin.flush()
        assert [proc.wait(10) for proc in procs] == [0, 0]
    assert isinstance(answers[0], dict)
    assert isinstance(answers[1], dict)
    for i in range(count):
        pair = sorted([answers[0][f"c{i}"], answers[1][f"c{i}"]], key=str)
        assert pair == [1000 + i, "trigger"]
    assert real_world.sql("SELECT * FROM connection_claims") == []
