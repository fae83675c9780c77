"""The journal's write path at 10,000 syncs: what each event and each sync costs to record, in
SQLite and, with ``--database-url``, in PostgreSQL side by side.

Writes one run the way the engine feeds its store: ``run_started``; then, wave by wave (``--wave``
syncs), the wave's intents together (``append``, as ``EventBus.emit_many`` hands them over), each
sync's ``sync_triggered``, three ``sync_status_changed`` each, and each final event one by one;
``run_finished`` last. Per sync: intent, triggered, 3 status, final (6 events). Prints a Markdown
table: microseconds per event and per sync, wall and CPU (this process's: a PostgreSQL server's
own CPU is not in it, its time is in the wall), and the transactions committed, best of
``--repeat`` rounds, each into an empty store with the default ``fsync="triggers"``.

``--database-url URL``: also write the run to PostgreSQL, in a fresh database
``fleet_bench_jw_<pid>`` made on that server (its user must be allowed to create databases) and
dropped at the end; its tables are emptied, untimed, before each round. The stores take turns
round by round, in a rotated order, so a busy moment of the (noisy) machine hits both, and the
table adds their ratio (PostgreSQL ÷ SQLite).

``--compare DIR``: also time the writer in ``DIR/writer.py`` (a copy of ``journal/`` from before a
change), swapped into the same stores, in the same run and on the same events, so before and after
meet the same machine load.

Not a test: numbers go into the report and BENCHMARKS.md.

    .venv/bin/python bench/journal_write.py --syncs 10000 --repeat 3
    .venv/bin/python bench/journal_write.py --database-url postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/journal_write.py --compare /tmp/journal_before
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit, urlunsplit

import psycopg
from _common import table
from psycopg import sql

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
from airbyte_fleet.journal import Journal, JournalError, PostgresStore, RunStore, redact_url
from airbyte_fleet.journal import postgres as journal_postgres
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


def write(store: RunStore, feed: Feed) -> None:
    for events, together in feed:
        if together:
            store.append(events)
        else:
            store(events[0])


@contextmanager
def writer_from(folder: Path | None) -> Iterator[None]:
    """Stores opened inside use the ``Writer`` of *folder*'s ``writer.py`` (None: today's)."""
    if folder is None:
        yield
        return
    spec = importlib.util.spec_from_file_location("_journal_writer_before", folder / "writer.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    with (
        mock.patch.object(journal_sqlite, "Writer", module.Writer),
        mock.patch.object(journal_postgres, "Writer", module.Writer),
    ):
        yield


class PgDatabase:
    """A fresh database on the server at *server*, dropped by :meth:`drop`."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.name = f"fleet_bench_jw_{os.getpid()}"
        self.url = urlunsplit(urlsplit(server)._replace(path=f"/{self.name}"))
        create = sql.SQL("CREATE DATABASE {} TEMPLATE template0")
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
            conn.execute(create.format(sql.Identifier(self.name)))

    def settings(self) -> str:
        with psycopg.connect(self.url, autocommit=True) as conn:
            shown = []
            for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method"):
                row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
                shown.append(f"{name}={'' if row is None else row[0]}")
        return ", ".join(shown)

    def empty(self) -> None:
        """No run in the store's tables (they exist once a store opened it), and the pages the
        last round wrote out of the way, so a round does not pay another's flushing."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            if conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone() == (True,):
                conn.execute("TRUNCATE runs, syncs, events")
            # A user who may not: the rounds then share the flushing, as in production.
            with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
                conn.execute("CHECKPOINT")

    def drop(self) -> None:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        with psycopg.connect(self.server, autocommit=True, connect_timeout=10) as conn:
            conn.execute(drop.format(sql.Identifier(self.name)))


@dataclass
class Row:
    """One store with one writer: how it opens, and its best round."""

    store: str
    writer: Path | None
    opens: Callable[[Path], Callable[..., RunStore]]
    wall: float = float("inf")
    cpu: float = float("inf")
    transactions: int = 0
    rounds: list[tuple[float, float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.store} (before)" if self.writer is not None else self.store


def one_round(row: Row, feed: Feed) -> None:
    """Write *feed* into an empty store and close it; keep the best wall and CPU of *row*."""
    with tempfile.TemporaryDirectory() as tmp, writer_from(row.writer):
        store_at = row.opens(Path(tmp))
        store = store_at(batch_interval=3600)
        transactions = 0
        # Every transaction the writer makes begins through its link: count them there.
        link = store._writer.link  # type: ignore[attr-defined]
        begin = link.begin

        def counted(*args: Any, **kwargs: Any) -> None:
            nonlocal transactions
            transactions += 1
            begin(*args, **kwargs)

        link.begin = counted
        began, cpu = time.perf_counter(), time.process_time()
        write(store, feed)
        store.close()
        took, cpu = time.perf_counter() - began, time.process_time() - cpu
        # Everything went in: the run is finished and every sync has its outcome.
        with store_at() as check:
            record = check.run("big")
            assert record is not None
            assert record.outcome == "succeeded", record
            assert all(s.outcome == "succeeded" for s in record.syncs.values())
    row.rounds.append((took, cpu))
    row.wall, row.cpu = min(row.wall, took), min(row.cpu, cpu)
    row.transactions = transactions


def report(rows: list[Row], events: int, syncs: int) -> str:
    def cells(wall: float, cpu: float) -> list[object]:
        return [wall * 1e6 / events, wall * 1e6 / syncs, cpu * 1e6 / events, cpu * 1e6 / syncs]

    lines: list[list[object]] = [
        [row.label, *cells(row.wall, row.cpu), row.transactions] for row in rows
    ]
    by_label = {row.label: row for row in rows}
    for row in rows:
        base = by_label.get(row.label.replace("postgresql", "sqlite"))
        if row.store == "postgresql" and base is not None:
            suffix = " (before)" if row.writer is not None else ""
            lines.append(
                [
                    f"PostgreSQL ÷ SQLite{suffix}",
                    *(f"{x:.2f}×" for x in (row.wall / base.wall,) * 2),
                    *(f"{x:.2f}×" for x in (row.cpu / base.cpu,) * 2),
                    f"{row.transactions / max(1, base.transactions):.2f}×",
                ]
            )
    headers = [
        "store",
        "µs/event",
        "µs/sync",
        "CPU µs/event",
        "CPU µs/sync",
        "transactions",
    ]
    return table(headers, lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syncs", type=int, default=10_000)
    parser.add_argument("--wave", type=int, default=200, help="intents written together")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best one counts")
    parser.add_argument("--compare", type=Path, help="a folder with the writer.py to compare")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server (postgresql://USER@HOST:PORT/DB) to also measure the "
        "PostgreSQL store on, in a database made for the run and dropped after",
    )
    args = parser.parse_args()
    feed, events = run_feed(args.syncs, args.wave)
    with ExitStack() as stack:
        database: PgDatabase | None = None
        if args.database_url:
            try:
                database = PgDatabase(args.database_url)
            except psycopg.Error as exc:
                line = journal_postgres.error_line(exc, args.database_url)
                sys.exit(f"cannot make a database on {redact_url(args.database_url)}: {line}")
            stack.callback(database.drop)
        stores: dict[str, Callable[[Path], Callable[..., RunStore]]] = {
            "sqlite": lambda tmp: lambda **options: Journal(tmp, **options),
        }
        if database is not None:
            url = database.url
            stores["postgresql"] = lambda _: lambda **options: PostgresStore(url, **options)
        writers = [None, args.compare] if args.compare else [None]
        rows = [Row(name, folder, opens) for folder in writers for name, opens in stores.items()]
        print(
            f"{events} events for {args.syncs} syncs (intents {args.wave} together), "
            f"best of {args.repeat} rounds; load average {os.getloadavg()[0]:.2f} at the start"
        )
        if database is not None:
            print(
                f"PostgreSQL: {database.name} on {redact_url(args.database_url)} "
                f"({database.settings()})"
            )
        try:
            # Rounds take turns between the stores (and writers), each round starting one later,
            # so a busy moment of the machine hits all of them.
            for n in range(args.repeat):
                for row in rows[n % len(rows) :] + rows[: n % len(rows)]:
                    if database is not None and row.store == "postgresql":
                        database.empty()
                    one_round(row, feed)
        except (psycopg.Error, JournalError) as exc:
            text = str(exc)
            if args.database_url:
                text = journal_postgres.error_line(exc, args.database_url)
            sys.exit(f"the benchmark stopped: {text}")
        print(f"load average {os.getloadavg()[0]:.2f} at the end\n")
        print(report(rows, events, args.syncs))


if __name__ == "__main__":
    main()
