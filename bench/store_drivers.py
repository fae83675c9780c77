"""PostgreSQL drivers for the run store: psycopg 3 (sync, sync in pipeline mode, async) and asyncpg.

Models the store's write and read paths on the journal's tables (``runs``, ``syncs``, ``events``,
with PostgreSQL's types) in a fresh database ``fleet_bench_<pid>``, dropped at the end:

* **durable**: 2,000 transactions, each one intent (``sync_triggering``) as the store writes it
  durably: INSERT its event row and UPDATE its sync's row, then COMMIT (latency p50/p95, throughput);
* **group**: 10,000 intents in batches of 500, one transaction a batch: ``executemany`` of the
  sync-row UPDATE and of the event INSERT (events per second); the ``unnest`` rows write the same
  batch with one statement each, its rows as arrays (a statement shape, open to either driver);
* **reads**: one run of 10,000 syncs loaded whole (``SELECT * FROM syncs WHERE run_id = ...``),
  and its 30,000 events paged 1,000 at a time.

Drivers: ``psycopg`` (sync, one connection, autocommit with a transaction block per write: the
baseline), ``psycopg pipeline`` (the same in pipeline mode, binary results for the reads),
``psycopg async`` (``AsyncConnection``) and ``asyncpg``. A durable write is 4 round trips
(BEGIN, INSERT, UPDATE, COMMIT) but 1 in pipeline mode: over loopback that hardly counts, to a
server elsewhere it does. Every write case starts from the same
tables (truncated, the run's 10,000 sync rows loaded, analyzed), untimed. The drivers alternate
case by case, in a rotated order each repetition, so a busy moment of the (noisy) machine hits
all of them; the tables show the median of the repetitions, wall and client CPU seconds
(``time.process_time``: on 2 shared cores, the CPU a driver takes is taken from the engine), and
each as a ratio to ``psycopg`` (below 1: less time than psycopg).

asyncpg is not a dependency of airbyte-fleet (``pip install asyncpg`` into the same environment
to measure it); without it, its rows are skipped with a line saying so.

Not a test: numbers go into BENCHMARKS.md. Writes ``bench/out/store_drivers.json`` and ``.md``.

    .venv/bin/python bench/store_drivers.py                      # local server, 3 repetitions (~1 min)
    .venv/bin/python bench/store_drivers.py --database-url postgresql://me@db.example:5432/postgres
    .venv/bin/python bench/store_drivers.py --synchronous-commit off   # the drivers without fsync
    .venv/bin/python bench/store_drivers.py --quick              # a tenth of the sizes, to check it

The server is ``--database-url`` (or ``AIRBYTE_FLEET_BENCH_DATABASE_URL``), by default the local
one as postgres; its user must be allowed to create databases.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from _common import OUT, machine, step, table, write_json
from psycopg import sql

from airbyte_fleet.engine.events import Event, SyncStatusChanged, SyncSucceeded, SyncTriggering

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
CASES = ("durable", "group", "reads")

# The journal's tables (journal/schema.py) with PostgreSQL's types.
SCHEMA = """
CREATE TABLE runs (
    run_id          TEXT PRIMARY KEY,
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    outcome         TEXT,
    job_type        TEXT NOT NULL DEFAULT 'sync',
    wait            BOOLEAN NOT NULL DEFAULT TRUE,
    max_concurrency INTEGER,
    total           INTEGER NOT NULL DEFAULT 0,
    interrupted     BOOLEAN NOT NULL DEFAULT FALSE,
    starts          INTEGER NOT NULL DEFAULT 0,
    resumed_at      TIMESTAMPTZ,
    options         TEXT,
    selection       TEXT,
    reported_counts TEXT
);
CREATE INDEX runs_by_start ON runs (started_at);
CREATE TABLE syncs (
    run_id          TEXT NOT NULL,
    connection_id   TEXT NOT NULL,
    position        INTEGER,
    connection_name TEXT NOT NULL DEFAULT '',
    workspace_id    TEXT NOT NULL DEFAULT '',
    attempt         INTEGER NOT NULL DEFAULT 0,
    job_id          BIGINT,
    status          TEXT,
    outcome         TEXT,
    error           TEXT,
    intent_at       TIMESTAMPTZ,
    triggered_at    TIMESTAMPTZ,
    finished_at     TIMESTAMPTZ,
    rows_synced     BIGINT,
    bytes_synced    BIGINT,
    cause           TEXT,
    PRIMARY KEY (run_id, connection_id)
);
CREATE INDEX syncs_by_job ON syncs (job_id);
CREATE TABLE events (
    run_id        TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    kind          TEXT NOT NULL,
    connection_id TEXT,
    data          TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""

# The statements, written once with PostgreSQL's $n markers and each parameter used once, in
# order, so psycopg's %s form is the same text with the markers swapped.
INSERT_EVENT = (
    "INSERT INTO events (run_id, seq, kind, connection_id, data) VALUES ($1, $2, $3, $4, $5)"
)
# The writer's "triggering" update (journal/writer.py _SYNC_SET), the new values as a row.
UPDATE_INTENT = """
UPDATE syncs SET
    connection_name = CASE WHEN new.connection_name <> '' THEN new.connection_name
                           ELSE syncs.connection_name END,
    workspace_id = CASE WHEN new.workspace_id <> '' THEN new.workspace_id
                        ELSE syncs.workspace_id END,
    attempt = new.attempt,
    intent_at = CASE WHEN syncs.intent_at IS NULL OR syncs.job_id IS NOT NULL
                          OR syncs.outcome IS NOT NULL OR syncs.attempt <> new.attempt
                     THEN new.intent_at ELSE syncs.intent_at END,
    job_id = NULL, status = NULL, outcome = NULL, error = NULL, cause = NULL, finished_at = NULL
FROM (SELECT $1::text AS run_id, $2::text AS connection_id, $3::text AS connection_name,
             $4::text AS workspace_id, $5::integer AS attempt, $6::timestamptz AS intent_at) AS new
WHERE syncs.run_id = new.run_id AND syncs.connection_id = new.connection_id
"""
# The same two writes for a whole batch in one statement each, the rows as arrays (one round trip
# and one parse a batch, whatever the driver): what a store can do instead of executemany.
UPDATE_INTENTS = (
    UPDATE_INTENT.split("FROM (")[0]
    + """FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[],
            $6::timestamptz[]) AS new(run_id, connection_id, connection_name, workspace_id,
                                      attempt, intent_at)
WHERE syncs.run_id = new.run_id AND syncs.connection_id = new.connection_id
"""
)
INSERT_EVENTS = (
    "INSERT INTO events (run_id, seq, kind, connection_id, data) "
    "SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[])"
)
SELECT_SYNCS = "SELECT * FROM syncs WHERE run_id = $1"
PAGE_EVENTS = (
    "SELECT seq, kind, data FROM events WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
)
SYNC_COLUMNS = (
    "run_id",
    "connection_id",
    "position",
    "connection_name",
    "workspace_id",
    "attempt",
    "job_id",
    "status",
    "outcome",
    "intent_at",
    "triggered_at",
    "finished_at",
    "rows_synced",
    "bytes_synced",
)


def percent_s(query: str) -> str:
    """*query* with psycopg's markers."""
    for n in range(9, 0, -1):
        query = query.replace(f"${n}", "%s")
    return query


# -- the data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    durable: int = 2_000
    group: int = 10_000
    batch: int = 500
    read_syncs: int = 10_000
    read_events: int = 30_000
    page: int = 1_000

    def tenth(self) -> Sizes:
        return Sizes(
            self.durable // 10,
            self.group // 10,
            self.batch // 10,
            self.read_syncs // 10,
            self.read_events // 10,
            self.page // 10,
        )


T0 = datetime(2026, 3, 1, tzinfo=UTC)

# (event row, sync-row update) for one intent: the parameters of INSERT_EVENT and UPDATE_INTENT.
Intent = tuple[tuple[Any, ...], tuple[Any, ...]]


def encoded(event: Event) -> str:
    """*event* as JSON of the size the journal's codec writes (the codec itself is not needed:
    encoding is the store's work whatever the driver, so it happens here, untimed)."""
    return json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":"))


def connection_id(i: int) -> str:
    return f"c0ffee00-0000-4000-8000-{i:012d}"


def intents(run_id: str, count: int) -> list[Intent]:
    """The run's intents, one per sync, each with its event's JSON."""
    out: list[Intent] = []
    for i in range(count):
        cid, at = connection_id(i), T0 + timedelta(milliseconds=i)
        event = SyncTriggering(
            run_id=run_id,
            at=at,
            elapsed_s=i / 1000,
            connection_id=cid,
            connection_name=f"orders → warehouse {i}",
            workspace_id=f"ws-{i % 5}",
        )
        out.append(
            (
                (run_id, i + 2, event.kind, cid, encoded(event)),
                (run_id, cid, event.connection_name, event.workspace_id, 1, at),
            )
        )
    return out


def sync_rows(run_id: str, count: int, *, finished: bool) -> list[tuple[Any, ...]]:
    """The run's sync rows as the run's start leaves them, or (*finished*) at its end."""
    rows: list[tuple[Any, ...]] = []
    for i in range(count):
        at = T0 + timedelta(milliseconds=i)
        done = (10_000 + i, "succeeded", "succeeded", at, at, at + timedelta(minutes=1), i, i * 100)
        rows.append(
            (
                run_id,
                connection_id(i),
                i,
                f"orders → warehouse {i}",
                f"ws-{i % 5}",
                1 if finished else 0,
                *(done if finished else (None,) * len(done)),
            )
        )
    return rows


def event_rows(run_id: str, count: int, syncs: int) -> list[tuple[Any, ...]]:
    """*count* events of a finished run: status changes, then each sync's success."""
    rows: list[tuple[Any, ...]] = []
    for seq in range(1, count + 1):
        i = seq % syncs
        common: dict[str, Any] = {
            "run_id": run_id,
            "at": T0 + timedelta(milliseconds=seq),
            "elapsed_s": seq / 1000,
            "connection_id": connection_id(i),
            "connection_name": f"orders → warehouse {i}",
            "workspace_id": f"ws-{i % 5}",
            "job_id": 10_000 + i,
        }
        event = (
            SyncSucceeded(**common, status="succeeded", rows_synced=i, bytes_synced=i * 100)
            if seq > count - syncs
            else SyncStatusChanged(**common, status="running", old_status="pending")
        )
        rows.append((run_id, seq, event.kind, common["connection_id"], encoded(event)))
    return rows


# -- the database -----------------------------------------------------------------------------


def shown(url: str) -> str:
    """*url* without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}:***@" if parts.username else "***@"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}{port}"))


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


class Database:
    """A fresh database on the server, its tables, the untimed resets between cases."""

    def __init__(self, server: str, *, synchronous_commit: str) -> None:
        self.server = server
        self.name = f"fleet_bench_{os.getpid()}"
        self.url = with_database(server, self.name)
        with psycopg.connect(server, autocommit=True, connect_timeout=10) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(self.name))
            )
        try:
            # Set on the database, so every driver's new connection gets it.
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("ALTER DATABASE {} SET synchronous_commit = {}").format(
                        sql.Identifier(self.name), sql.Literal(synchronous_commit)
                    )
                )
            self.conn = psycopg.connect(self.url, autocommit=True)
            self.conn.execute(SCHEMA)
        except BaseException:
            self._drop()
            raise
        self.loaded: str | None = None

    def settings(self) -> dict[str, str]:
        names = (
            "server_version",
            "fsync",
            "synchronous_commit",
            "wal_sync_method",
            "shared_buffers",
        )
        out: dict[str, str] = {}
        for name in names:
            row = self.conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            out[name] = "" if row is None else str(row[0])
        return out

    def reset(self, run_id: str, syncs: Sequence[tuple[Any, ...]]) -> None:
        """Empty tables but for one started run and its sync rows."""
        self.loaded = None
        self.conn.execute("TRUNCATE runs, syncs, events")
        self.conn.execute(
            "INSERT INTO runs (run_id, started_at, total, starts) VALUES (%s, %s, %s, 1)",
            (run_id, T0, len(syncs)),
        )
        with self.conn.cursor().copy(f"COPY syncs ({', '.join(SYNC_COLUMNS)}) FROM STDIN") as copy:
            for row in syncs:
                copy.write_row(row)
        self.conn.execute("ANALYZE runs, syncs, events")
        # Written pages out of the way, so one driver's case does not pay another's flushing.
        self.conn.execute("CHECKPOINT")

    def load_finished(
        self, run_id: str, syncs: Sequence[tuple[Any, ...]], events: Sequence[tuple[Any, ...]]
    ) -> None:
        """The finished run the reads read (once: reads change nothing)."""
        if self.loaded == run_id:
            return
        self.reset(run_id, syncs)
        with self.conn.cursor().copy(
            "COPY events (run_id, seq, kind, connection_id, data) FROM STDIN"
        ) as copy:
            for row in events:
                copy.write_row(row)
        self.conn.execute("VACUUM ANALYZE events")
        self.loaded = run_id

    def count(self, query: str, *args: Any) -> int:
        row = self.conn.execute(query, args).fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self.conn.close()
        self._drop()

    def _drop(self) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.name))
            )


# -- the drivers ------------------------------------------------------------------------------


@dataclass
class Timing:
    """One case by one driver: wall seconds, client CPU seconds, and each step's seconds."""

    wall: float = 0.0
    cpu: float = 0.0
    steps: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)


class Clock:
    def __init__(self) -> None:
        self.timing = Timing()
        self._wall = time.perf_counter()
        self._cpu = time.process_time()

    def stop(self) -> Timing:
        self.timing.wall = time.perf_counter() - self._wall
        self.timing.cpu = time.process_time() - self._cpu
        return self.timing

    def stop_reads(self, began: float, loaded: float, syncs: int, events: int) -> Timing:
        """Stop, with the reads' two parts: the syncs until *loaded*, the events after it."""
        timing = self.stop()
        ended = self._wall + timing.wall
        timing.extra = {
            "syncs_s": loaded - began,
            "events_s": ended - loaded,
            "syncs": syncs,
            "events": events,
        }
        return timing


class Driver:
    """How one driver writes and reads; each method connects untimed, then times its work."""

    name = ""
    cases: tuple[str, ...] = CASES
    missing: str | None = None

    def durable(self, url: str, work: Sequence[Intent]) -> Timing:
        raise NotImplementedError

    def group(self, url: str, work: Sequence[Intent], batch: int) -> Timing:
        raise NotImplementedError

    def reads(self, url: str, run_id: str, page: int) -> Timing:
        raise NotImplementedError


class PsycopgSync(Driver):
    name = "psycopg"
    pipeline = False

    def durable(self, url: str, work: Sequence[Intent]) -> Timing:
        insert, update = percent_s(INSERT_EVENT), percent_s(UPDATE_INTENT)
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.cursor()
            clock = Clock()
            steps = clock.timing.steps
            for event, sync in work:
                began = time.perf_counter()
                if self.pipeline:
                    with conn.pipeline(), conn.transaction():
                        cur.execute(insert, event)
                        cur.execute(update, sync)
                else:
                    with conn.transaction():
                        cur.execute(insert, event)
                        cur.execute(update, sync)
                steps.append(time.perf_counter() - began)
            return clock.stop()

    def group(self, url: str, work: Sequence[Intent], batch: int) -> Timing:
        insert, update = percent_s(INSERT_EVENT), percent_s(UPDATE_INTENT)
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.cursor()
            clock = Clock()
            for start in range(0, len(work), batch):
                chunk = work[start : start + batch]
                began = time.perf_counter()
                if self.pipeline:
                    with conn.pipeline(), conn.transaction():
                        cur.executemany(update, [s for _, s in chunk])
                        cur.executemany(insert, [e for e, _ in chunk])
                else:
                    with conn.transaction():
                        cur.executemany(update, [s for _, s in chunk])
                        cur.executemany(insert, [e for e, _ in chunk])
                clock.timing.steps.append(time.perf_counter() - began)
            return clock.stop()

    def reads(self, url: str, run_id: str, page: int) -> Timing:
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.cursor(binary=self.pipeline)
            clock = Clock()
            began = time.perf_counter()
            syncs = cur.execute(percent_s(SELECT_SYNCS), (run_id,)).fetchall()
            loaded = time.perf_counter()
            seen, after = 0, 0
            while True:
                rows = cur.execute(percent_s(PAGE_EVENTS), (run_id, after, page)).fetchall()
                seen += len(rows)
                if len(rows) < page:
                    break
                after = rows[-1][0]
            return clock.stop_reads(began, loaded, len(syncs), seen)


class PsycopgPipeline(PsycopgSync):
    name = "psycopg pipeline"
    pipeline = True


class PsycopgUnnest(PsycopgSync):
    name = "psycopg unnest"
    cases = ("group",)

    def group(self, url: str, work: Sequence[Intent], batch: int) -> Timing:
        # %b: arrays go over in binary, which spares the server parsing 500 values' text.
        insert = percent_s(INSERT_EVENTS).replace("%s", "%b")
        update = percent_s(UPDATE_INTENTS).replace("%s", "%b")
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.cursor()
            clock = Clock()
            for start in range(0, len(work), batch):
                chunk = work[start : start + batch]
                began = time.perf_counter()
                with conn.transaction():
                    cur.execute(update, columns([s for _, s in chunk]))
                    cur.execute(insert, columns([e for e, _ in chunk]))
                clock.timing.steps.append(time.perf_counter() - began)
            return clock.stop()


def columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """*rows* as one list a column: the parameters of an ``unnest`` statement."""
    return [list(column) for column in zip(*rows, strict=True)]


class AsyncDriver(Driver):
    """Runs each case in a loop of its own; connecting is untimed."""

    def durable(self, url: str, work: Sequence[Intent]) -> Timing:
        return asyncio.run(self._with(url, lambda conn: self._durable(conn, work)))

    def group(self, url: str, work: Sequence[Intent], batch: int) -> Timing:
        return asyncio.run(self._with(url, lambda conn: self._group(conn, work, batch)))

    def reads(self, url: str, run_id: str, page: int) -> Timing:
        return asyncio.run(self._with(url, lambda conn: self._reads(conn, run_id, page)))

    async def _with(self, url: str, case: Callable[[Any], Awaitable[Timing]]) -> Timing:
        raise NotImplementedError

    async def _durable(self, conn: Any, work: Sequence[Intent]) -> Timing:
        raise NotImplementedError

    async def _group(self, conn: Any, work: Sequence[Intent], batch: int) -> Timing:
        raise NotImplementedError

    async def _reads(self, conn: Any, run_id: str, page: int) -> Timing:
        raise NotImplementedError


class PsycopgAsync(AsyncDriver):
    name = "psycopg async"

    async def _with(self, url: str, case: Callable[[Any], Awaitable[Timing]]) -> Timing:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            return await case(conn)

    async def _durable(self, conn: psycopg.AsyncConnection[Any], work: Sequence[Intent]) -> Timing:
        insert, update = percent_s(INSERT_EVENT), percent_s(UPDATE_INTENT)
        cur = conn.cursor()
        clock = Clock()
        for event, sync in work:
            began = time.perf_counter()
            async with conn.transaction():
                await cur.execute(insert, event)
                await cur.execute(update, sync)
            clock.timing.steps.append(time.perf_counter() - began)
        return clock.stop()

    async def _group(
        self, conn: psycopg.AsyncConnection[Any], work: Sequence[Intent], batch: int
    ) -> Timing:
        insert, update = percent_s(INSERT_EVENT), percent_s(UPDATE_INTENT)
        cur = conn.cursor()
        clock = Clock()
        for start in range(0, len(work), batch):
            chunk = work[start : start + batch]
            began = time.perf_counter()
            async with conn.transaction():
                await cur.executemany(update, [s for _, s in chunk])
                await cur.executemany(insert, [e for e, _ in chunk])
            clock.timing.steps.append(time.perf_counter() - began)
        return clock.stop()

    async def _reads(self, conn: psycopg.AsyncConnection[Any], run_id: str, page: int) -> Timing:
        cur = conn.cursor()
        clock = Clock()
        began = time.perf_counter()
        await cur.execute(percent_s(SELECT_SYNCS), (run_id,))
        syncs = await cur.fetchall()
        loaded = time.perf_counter()
        seen, after = 0, 0
        while True:
            await cur.execute(percent_s(PAGE_EVENTS), (run_id, after, page))
            rows = await cur.fetchall()
            seen += len(rows)
            if len(rows) < page:
                break
            after = rows[-1][0]
        return clock.stop_reads(began, loaded, len(syncs), seen)


class Asyncpg(AsyncDriver):
    name = "asyncpg"

    def __init__(self) -> None:
        # Imported by name: asyncpg is not a dependency, and ships no type information.
        self.module: Any = None
        try:
            self.module = importlib.import_module("asyncpg")
        except ImportError:
            self.missing = (
                "asyncpg is not installed: its rows are skipped (pip install asyncpg into this "
                "environment to measure it)"
            )

    async def _with(self, url: str, case: Callable[[Any], Awaitable[Timing]]) -> Timing:
        conn = await self.module.connect(url)
        try:
            return await case(conn)
        finally:
            await conn.close()

    async def _durable(self, conn: Any, work: Sequence[Intent]) -> Timing:
        clock = Clock()
        for event, sync in work:
            began = time.perf_counter()
            async with conn.transaction():
                await conn.execute(INSERT_EVENT, *event)
                await conn.execute(UPDATE_INTENT, *sync)
            clock.timing.steps.append(time.perf_counter() - began)
        return clock.stop()

    async def _group(self, conn: Any, work: Sequence[Intent], batch: int) -> Timing:
        clock = Clock()
        for start in range(0, len(work), batch):
            chunk = work[start : start + batch]
            began = time.perf_counter()
            async with conn.transaction():
                await conn.executemany(UPDATE_INTENT, [s for _, s in chunk])
                await conn.executemany(INSERT_EVENT, [e for e, _ in chunk])
            clock.timing.steps.append(time.perf_counter() - began)
        return clock.stop()

    async def _reads(self, conn: Any, run_id: str, page: int) -> Timing:
        clock = Clock()
        began = time.perf_counter()
        syncs = await conn.fetch(SELECT_SYNCS, run_id)
        loaded = time.perf_counter()
        seen, after = 0, 0
        while True:
            rows = await conn.fetch(PAGE_EVENTS, run_id, after, page)
            seen += len(rows)
            if len(rows) < page:
                break
            after = rows[-1][0]
        return clock.stop_reads(began, loaded, len(syncs), seen)


class AsyncpgUnnest(Asyncpg):
    name = "asyncpg unnest"
    cases = ("group",)

    async def _group(self, conn: Any, work: Sequence[Intent], batch: int) -> Timing:
        clock = Clock()
        for start in range(0, len(work), batch):
            chunk = work[start : start + batch]
            began = time.perf_counter()
            async with conn.transaction():
                await conn.execute(UPDATE_INTENTS, *columns([s for _, s in chunk]))
                await conn.execute(INSERT_EVENTS, *columns([e for e, _ in chunk]))
            clock.timing.steps.append(time.perf_counter() - began)
        return clock.stop()


# -- the cases --------------------------------------------------------------------------------


def run_case(db: Database, driver: Driver, case: str, sizes: Sizes, data: dict[str, Any]) -> Timing:
    """Set the tables up for *case* (untimed), run it with *driver*, check what it did."""
    if case == "reads":
        db.load_finished("read", data["finished_syncs"], data["events"])
        timing = driver.reads(db.url, "read", sizes.page)
        assert timing.extra["syncs"] == sizes.read_syncs, timing.extra
        assert timing.extra["events"] == sizes.read_events, timing.extra
        return timing
    db.reset("write", data["started_syncs"])
    if case == "durable":
        work = data["intents"][: sizes.durable]
        timing = driver.durable(db.url, work)
    else:
        work = data["intents"][: sizes.group]
        timing = driver.group(db.url, work, sizes.batch)
    # Every intent landed: its event row, and its sync row's new attempt.
    assert db.count("SELECT count(*) FROM events") == len(work)
    assert db.count(
        "SELECT count(*) FROM syncs WHERE attempt = 1 AND intent_at IS NOT NULL"
    ) == len(work)
    return timing


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(value: float, base: float | None) -> float | None:
    return None if not base else value / base


def report(
    results: dict[str, dict[str, list[Timing]]], sizes: Sizes, settings: dict[str, str], repeat: int
) -> str:
    """The three Markdown tables: medians over the repetitions, ratios to psycopg."""
    server = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "server_version")
    out = [
        f"PostgreSQL {settings.get('server_version', '?')} ({server}); "
        f"medians of {repeat} repetitions\n"
    ]
    base = "psycopg"

    def med(case: str, driver: str, pick: Callable[[Timing], float]) -> float:
        return median([pick(t) for t in results[case][driver]])

    if "durable" in results:
        case, n = "durable", sizes.durable
        rows = []
        for driver in results[case]:
            wall = med(case, driver, lambda t: t.wall)
            cpu = med(case, driver, lambda t: t.cpu)
            rows.append(
                [
                    driver,
                    med(case, driver, lambda t: percentile(t.steps, 0.5) * 1000),
                    med(case, driver, lambda t: percentile(t.steps, 0.95) * 1000),
                    round(n / wall),
                    ratio(wall, med(case, base, lambda t: t.wall)),
                    cpu * 1e6 / n,
                    ratio(cpu, med(case, base, lambda t: t.cpu)),
                ]
            )
        out.append(f"Durable intents: {n:,} transactions (INSERT event + UPDATE sync + COMMIT)\n")
        out.append(
            table(["driver", "p50 ms", "p95 ms", "tx/s", "wall ×", "CPU µs/tx", "CPU ×"], rows)
        )
    if "group" in results:
        case, n = "group", sizes.group
        rows = []
        for driver in results[case]:
            wall = med(case, driver, lambda t: t.wall)
            cpu = med(case, driver, lambda t: t.cpu)
            rows.append(
                [
                    driver,
                    round(n / wall),
                    med(case, driver, lambda t: percentile(t.steps, 0.5) * 1000),
                    ratio(wall, med(case, base, lambda t: t.wall)),
                    cpu * 1e6 / n,
                    ratio(cpu, med(case, base, lambda t: t.cpu)),
                ]
            )
        out.append(
            f"\nGroup commit: {n:,} intents, {sizes.batch} a transaction (executemany of the "
            "UPDATE and the INSERT; unnest: one statement each, the batch as arrays)\n"
        )
        out.append(
            table(["driver", "events/s", "ms/batch p50", "wall ×", "CPU µs/event", "CPU ×"], rows)
        )
    if "reads" in results:
        case = "reads"
        rows = []
        for driver in results[case]:
            syncs = med(case, driver, lambda t: t.extra["syncs_s"])
            events = med(case, driver, lambda t: t.extra["events_s"])
            cpu = med(case, driver, lambda t: t.cpu)
            rows.append(
                [
                    driver,
                    syncs * 1000,
                    ratio(syncs, med(case, base, lambda t: t.extra["syncs_s"])),
                    events * 1000,
                    ratio(events, med(case, base, lambda t: t.extra["events_s"])),
                    cpu * 1000,
                    ratio(cpu, med(case, base, lambda t: t.cpu)),
                ]
            )
        pages = -(-sizes.read_events // sizes.page)
        out.append(
            f"\nReads: one run's {sizes.read_syncs:,} syncs, then its {sizes.read_events:,} "
            f"events in {pages} pages of {sizes.page:,}\n"
        )
        out.append(
            table(
                ["driver", "syncs ms", "×", "events ms", "×", "CPU ms", "CPU ×"],
                rows,
            )
        )
    out.append(
        "\n×: the driver's median time (wall or client CPU) ÷ psycopg's; below 1 is less than psycopg."
    )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get("AIRBYTE_FLEET_BENCH_DATABASE_URL", "").strip() or DEFAULT_SERVER,
        help="a PostgreSQL server where the user may create databases (any database on it); "
        f"default {DEFAULT_SERVER}",
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions; the median counts")
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument(
        "--synchronous-commit",
        choices=("on", "off"),
        default="on",
        help="off: a commit does not wait for its WAL flush, which leaves the drivers' own cost "
        "and round trips (not durable: for comparing drivers only)",
    )
    parser.add_argument("--cases", default=",".join(CASES), help="of " + ",".join(CASES))
    args = parser.parse_args()
    sizes = Sizes().tenth() if args.quick else Sizes()
    cases = [c for c in args.cases.split(",") if c]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case {', '.join(unknown)}: choose from {', '.join(CASES)}")

    drivers: list[Driver] = [
        PsycopgSync(),
        PsycopgPipeline(),
        PsycopgAsync(),
        Asyncpg(),
        PsycopgUnnest(),
        AsyncpgUnnest(),
    ]
    missing = sorted({d.missing for d in drivers if d.missing})
    for line in missing:
        print(f"note: {line}", file=sys.stderr)
    drivers = [d for d in drivers if not d.missing]

    with step("preparing the rows"):
        data = {
            "intents": intents("write", max(sizes.durable, sizes.group)),
            "started_syncs": sync_rows("write", max(sizes.durable, sizes.group), finished=False),
            "finished_syncs": sync_rows("read", sizes.read_syncs, finished=True),
            "events": event_rows("read", sizes.read_events, sizes.read_syncs),
        }
    try:
        db = Database(args.database_url, synchronous_commit=args.synchronous_commit)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(
            f"cannot create a database on {shown(args.database_url)} ({first}); start PostgreSQL "
            "or pass --database-url with a server where the user may create databases",
            file=sys.stderr,
        )
        return 2
    results: dict[str, dict[str, list[Timing]]] = {
        c: {d.name: [] for d in drivers if c in d.cases} for c in cases
    }
    try:
        settings = db.settings()
        for rep in range(args.repeat):
            # A rotated order each time, so no driver always goes first after the setup.
            order = drivers[rep % len(drivers) :] + drivers[: rep % len(drivers)]
            for case in cases:
                with step(f"repetition {rep + 1}/{args.repeat}: {case}"):
                    for driver in order:
                        if case not in driver.cases:
                            continue
                        results[case][driver.name].append(run_case(db, driver, case, sizes, data))
    finally:
        db.close()

    text = report(results, sizes, settings, args.repeat)
    print(text)
    write_json(
        OUT / "store_drivers.json",
        {
            "machine": machine(),
            "server": settings,
            "sizes": sizes.__dict__,
            "repeat": args.repeat,
            "results": {
                case: {
                    name: [
                        {"wall_s": t.wall, "cpu_s": t.cpu, "steps": len(t.steps), **t.extra}
                        for t in timings
                    ]
                    for name, timings in by_driver.items()
                }
                for case, by_driver in results.items()
            },
        },
    )
    (OUT / "store_drivers.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
