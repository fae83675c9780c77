"""The journal's write path at 10,000 syncs: what each event and each sync costs to record.

Writes one run the way the engine feeds its store: ``run_started``; then, wave by wave (``--wave``
syncs), the wave's intents together (``append``, as ``EventBus.emit_many`` hands them over), each
sync's ``sync_triggered``, three ``sync_status_changed`` each, and each final event one by one;
``run_finished`` last. Per sync: intent, triggered, 3 status, final (6 events). Prints
microseconds per event and per sync (wall, and CPU per event) and the transactions committed
(counted with a sqlite3 trace callback, in a separate untimed pass), best of ``--repeat`` rounds,
each on a fresh file with the default ``fsync="triggers"``.

``--compare DIR``: also time the writer in ``DIR/writer.py`` (a copy of ``journal/`` from before a
change), swapped into the same :class:`~airbyte_fleet.journal.Journal`, in the same run and on the
same events, so before and after meet the same machine load.

Not a test: numbers go into the report and BENCHMARKS.md.

    .venv/bin/python bench/journal_write.py --syncs 10000 --repeat 3
    .venv/bin/python bench/journal_write.py --compare /tmp/journal_before
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.journal import Journal
from airbyte_fleet.journal import sqlite as journal_sqlite

# (events written together through append, or None for one event through __call__)
Feed = list[tuple[list[Event], bool]]


def run_feed(syncs: int, wave: int) -> tuple[Feed, int]:
    """The run's events in the order and grouping the engine hands them to its store."""
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    clock = iter(range(10**9))

    def at() -> dict[str, Any]:
        n = next(clock)
        return {"run_id": "big", "at": t0 + timedelta(milliseconds=n), "elapsed_s": n / 1000}

    ids = [f"conn-{i:06d}" for i in range(syncs)]
    names = {c: f"orders → {c}" for c in ids}
    planned = tuple(PlannedSync(c, names[c], f"ws-{i % 5}") for i, c in enumerate(ids))
    feed: Feed = [
        (
            [
                RunStarted(
                    **at(),
                    total=syncs,
                    job_type="sync",
                    max_concurrency=syncs,
                    planned=planned,
                    options={"job_type": "sync", "max_concurrency": syncs, "wait": True},
                    selection={"all": True},
                )
            ],
            False,
        )
    ]
    count = 1

    def sync(i: int, cid: str) -> dict[str, Any]:
        return {
            **at(),
            "connection_id": cid,
            "connection_name": names[cid],
            "workspace_id": f"ws-{i % 5}",
        }

    for start in range(0, syncs, wave):
        chunk = list(enumerate(ids))[start : start + wave]
        feed.append(([SyncTriggering(**sync(i, c)) for i, c in chunk], True))
        count += len(chunk)
        singles: list[Event] = [
            SyncTriggered(**sync(i, c), job_id=10_000 + i, status="pending") for i, c in chunk
        ]
        for old, new in (("pending", "running"), ("running", "running"), ("running", "running")):
            singles += [
                SyncStatusChanged(**sync(i, c), job_id=10_000 + i, status=new, old_status=old)
                for i, c in chunk
            ]
        singles += [
            SyncSucceeded(
                **sync(i, c), job_id=10_000 + i, status="succeeded", rows_synced=i, bytes_synced=i
            )
            for i, c in chunk
        ]
        feed += [([e], False) for e in singles]
        count += len(singles)
    feed.append(([RunFinished(**at(), outcome="succeeded", counts={"succeeded": syncs})], False))
    return feed, count + 1


def write(journal: Journal, feed: Feed) -> None:
    for events, together in feed:
        if together:
            journal.append(events)
        else:
            journal(events[0])


@contextmanager
def writer_from(folder: Path | None) -> Iterator[None]:
    """Journals opened inside use the ``Writer`` of *folder*'s ``writer.py`` (None: today's)."""
    if folder is None:
        yield
        return
    spec = importlib.util.spec_from_file_location("_journal_writer_before", folder / "writer.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    with mock.patch.object(journal_sqlite, "Writer", module.Writer):
        yield


def one_round(feed: Feed, *, count_commits: bool) -> tuple[float, float, int]:
    """Wall and CPU seconds to write *feed* to a fresh journal and close it, and its commits."""
    with tempfile.TemporaryDirectory() as tmp:
        commits = 0

        def trace(sql: str) -> None:
            nonlocal commits
            commits += sql == "COMMIT"

        journal = Journal(Path(tmp), batch_interval=3600)
        if count_commits:
            journal._writer.conn.set_trace_callback(trace)
        began, cpu = time.perf_counter(), time.process_time()
        write(journal, feed)
        journal.close()
        took, cpu = time.perf_counter() - began, time.process_time() - cpu
        # Everything went in: the run is finished and every sync has its outcome.
        with Journal(Path(tmp)) as check:
            record = check.run("big")
            assert record is not None
            assert record.outcome == "succeeded", record
            assert all(s.outcome == "succeeded" for s in record.syncs.values())
        return took, cpu, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syncs", type=int, default=10_000)
    parser.add_argument("--wave", type=int, default=200, help="intents written together")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best one counts")
    parser.add_argument("--compare", type=Path, help="a folder with the writer.py to compare")
    args = parser.parse_args()
    feed, events = run_feed(args.syncs, args.wave)
    print(
        f"{events} events for {args.syncs} syncs (intents {args.wave} together), "
        f"best of {args.repeat} rounds"
    )
    print(f"{'writer':<8} {'µs/event':>9} {'µs/sync':>9} {'CPU µs/event':>13} {'commits':>8}")
    rows: dict[str, Path | None] = {"before": args.compare} if args.compare else {}
    rows["now"] = None
    best: dict[str, tuple[float, float, int]] = {}
    # Rounds alternate between the writers, so a busy moment of the machine hits both.
    for name, folder in rows.items():
        with writer_from(folder):
            best[name] = (float("inf"), float("inf"), one_round(feed, count_commits=True)[2])
    for _ in range(args.repeat):
        for name, folder in rows.items():
            with writer_from(folder):
                took, cpu, _ = one_round(feed, count_commits=False)
            wall, least, commits = best[name]
            best[name] = (min(wall, took), min(least, cpu), commits)
    for name, (took, cpu, commits) in best.items():
        print(
            f"{name:<8} {took * 1e6 / events:>9.1f} {took * 1e6 / args.syncs:>9.1f} "
            f"{cpu * 1e6 / events:>13.1f} {commits:>8}"
        )


if __name__ == "__main__":
    main()
