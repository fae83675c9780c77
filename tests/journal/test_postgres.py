"""What only the PostgreSQL store has, and the choice between the stores: versioned migrations
(replicas migrating at once), an outage survived, URLs that never show their password."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from structlog.testing import capture_logs

from airbyte_fleet.engine.events import SyncStatusChanged, SyncTriggered, SyncTriggering
from airbyte_fleet.journal import (
    FILE_NAME,
    SCHEMA_VERSION,
    Journal,
    JournalError,
    NoJournalError,
    PostgresStore,
    migrate,
    open_store,
    pg_schema,
    redact_url,
    store_location,
)
from airbyte_fleet.journal.postgres import _Link, connect
from airbyte_fleet.journal.writer import Writer
from journal.stories import Story, crashed_run, journal_all

# --------------------------------------------------------------------------- migrations


def _versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    return [v for (v,) in rows]


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
    return {t for (t,) in rows}


COORDINATION = {
    "run_leases",
    "worker_runs",
    "schedule_fires",
    "schedule_state",
    "connection_claims",
}


def test_a_version_1_database_is_upgraded_with_its_runs_intact(pg_url: str) -> None:
    conn = connect(pg_url)
    assert pg_schema.apply(conn, "test", target=1) == 0
    # A store of version 1 (the journal tables only) writes a run, as that version did: today's
    # writer also sets runs.planning_complete (version 3), so the column is there only while it
    # writes.
    conn.execute(pg_schema.MIGRATIONS[2])
    old = Writer(
        _Link(pg_url, timeout=8.0, conn=conn),
        threading.RLock(),
        fsync="triggers",
        batch_interval=3600,
    )
    events = crashed_run()
    for event in events:
        old.write(event)
    old.close()
    conn = connect(pg_url)
    conn.execute("ALTER TABLE runs DROP COLUMN planning_complete")
    conn.close()
    assert _versions(pg_url) == [1]
    assert not COORDINATION & _tables(pg_url)

    with PostgresStore(pg_url) as store:
        record = store.run("run-crash")
        stored = [e for _, e in store.events("run-crash")]
    assert _versions(pg_url) == [1, 2, 3] == list(range(1, pg_schema.SCHEMA_VERSION + 1))
    assert _tables(pg_url) >= COORDINATION
    assert stored == events
    assert record is not None
    # Every run written before version 3 had its whole plan before it started.
    assert record.planning_complete
    assert {c: s.state for c, s in record.syncs.items()} == {
        "c1": "final",
        "c2": "in_flight",
        "c3": "intent",
        "c4": "untouched",
        "c5": "intent",
    }


def test_replicas_opening_at_once_migrate_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def open_one() -> None:
        try:
            start.wait()
            PostgresStore(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _versions(pg_url) == [1, 2, 3]


def test_a_database_newer_than_the_code_is_refused_in_one_sentence(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (99,))
    with pytest.raises(JournalError) as refused:
        PostgresStore(pg_url)
    message = str(refused.value)
    assert message == (
        f"the run store at {pg_url} has schema version 99, newer than this airbyte-fleet "
        f"understands ({pg_schema.SCHEMA_VERSION}); use a newer airbyte-fleet"
    )
    with pytest.raises(JournalError, match="newer"):
        migrate(database_url=pg_url, state_dir=Path("unused"))


def test_a_reader_never_makes_a_store(pg_url: str, tmp_path: Path) -> None:
    with pytest.raises(NoJournalError, match="no run store"):
        open_store(database_url=pg_url, state_dir=tmp_path, create=False)
    assert "schema_migrations" not in _tables(pg_url)
    with pytest.raises(NoJournalError):
        open_store(database_url=None, state_dir=tmp_path / "none", create=False)
    assert not (tmp_path / "none").exists()


def test_migrate_reports_versions_on_both_stores(pg_url: str, tmp_path: Path) -> None:
    assert migrate(database_url=pg_url, state_dir=tmp_path) == (0, 3)
    assert migrate(database_url=f"  {pg_url} ", state_dir=tmp_path) == (3, 3)
    assert migrate(database_url="", state_dir=tmp_path) == (0, SCHEMA_VERSION)
    assert migrate(database_url=None, state_dir=tmp_path) == (SCHEMA_VERSION, SCHEMA_VERSION)
    assert not (tmp_path / "schema_migrations").exists()


def test_a_version_2_sqlite_journal_gains_the_coordination_tables(tmp_path: Path) -> None:
    with Journal(tmp_path) as journal:
        journal_all(journal, crashed_run())
    db = sqlite3.connect(tmp_path / FILE_NAME)
    for table in COORDINATION:
        db.execute(f"DROP TABLE {table}")
    db.execute("ALTER TABLE runs DROP COLUMN planning_complete")
    db.execute("PRAGMA user_version = 2")
    db.commit()
    db.close()
    assert migrate(database_url=None, state_dir=tmp_path) == (2, SCHEMA_VERSION)
    with Journal(tmp_path) as journal:
        record = journal.run("run-crash")
        assert [e for _, e in journal.events("run-crash")] == crashed_run()
    assert record is not None
    assert record.syncs["c2"].job_id == 202
    db = sqlite3.connect(tmp_path / FILE_NAME)
    names = {n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert names >= COORDINATION


def test_open_store_picks_the_store_and_names_it(pg_url: str, tmp_path: Path) -> None:
    with open_store(database_url=None, state_dir=tmp_path) as sqlite_store:
        assert isinstance(sqlite_store, Journal)
    with open_store(database_url=pg_url, state_dir=tmp_path) as pg_store:
        assert isinstance(pg_store, PostgresStore)
        assert pg_store.damage is None
    assert store_location(None, tmp_path) == str(tmp_path / FILE_NAME)
    assert store_location("  ", tmp_path) == str(tmp_path / FILE_NAME)
    secret = "postgresql://fleet:hunter2-secret@db.example:5432/runs?sslmode=require"
    assert store_location(secret, tmp_path) == (
        "postgresql://fleet@db.example:5432/runs?sslmode=require"
    )


# --------------------------------------------------------------------------- URLs and secrets


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw-1234@h:5432/db", "postgresql://u@h:5432/db"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        ("postgresql://h1:5432,h2:5433/db", "postgresql://h1:5432,h2:5433/db"),
        ("postgresql://u:p%40ss:w@[::1]/db", "postgresql://u@[::1]/db"),
        (
            "postgresql://h/db?password=pw-1234&application_name=x",
            "postgresql://h/db?password=***&application_name=x",
        ),
    ],
)
def test_redact_url_drops_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_a_url_that_is_not_postgresql_is_refused_in_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(JournalError) as refused:
        open_store(database_url="mysql://root:pw-1234@h/db", state_dir=tmp_path)
    message = str(refused.value)
    assert "pw-1234" not in message
    assert message.startswith("the database URL 'mysql://root@h/db' is not a PostgreSQL URL;")
    assert "\n" not in message


def test_a_server_that_cannot_be_reached_is_named_without_its_password(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    url = f"postgresql://fleet:pw-s3cret-9@127.0.0.1:{port}/runs"
    began = time.monotonic()
    with capture_logs() as logs, pytest.raises(JournalError) as failed:
        open_store(database_url=url, state_dir=tmp_path)
    assert time.monotonic() - began < 10
    message = str(failed.value)
    assert message.startswith(
        f"cannot connect to the run store at postgresql://fleet@127.0.0.1:{port}/runs: "
    )
    assert "pw-s3cret-9" not in message
    assert "pw-s3cret-9" not in repr(failed.value)
    assert "pw-s3cret-9" not in str(logs)


def test_the_store_never_shows_its_password(pg_url: str) -> None:
    # The test server trusts local users: a password in the URL is accepted and unused.
    url = pg_url.replace("postgresql://postgres@", "postgresql://postgres:pw-s3cret-9@")
    with PostgresStore(url) as store:
        assert "pw-s3cret-9" not in repr(store)
        assert "pw-s3cret-9" not in store.location


# --------------------------------------------------------------------------- outage


class Proxy:
    """A TCP hop to the test server that a test can cut: open connections are closed and new ones
    refused until :meth:`restore`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.port = 0
        self._listen()

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Close every connection and refuse new ones (nothing listens on the port)."""
        assert self._listener is not None
        # shutdown first: a bare close leaves the thread blocked in accept() accepting.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def restore(self) -> None:
        self._listen()

    def close(self) -> None:
        if self._listener is not None:
            self.cut()


@contextlib.contextmanager
def proxied(url: str) -> Iterator[tuple[Proxy, str]]:
    parts = urlsplit(url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    user = f"{parts.username}@" if parts.username else ""
    try:
        yield proxy, urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{proxy.port}"))
    finally:
        proxy.close()


def test_a_write_while_the_server_is_away_fails_fast_and_lands_once_it_is_back(
    pg_url: str,
) -> None:
    s = Story("r", ["c1", "c2"])
    with proxied(pg_url) as (proxy, url), PostgresStore(url, batch_interval=3600) as store:
        store(s.started())
        store(s.sync(SyncTriggering, "c1"))
        store(s.sync(SyncTriggered, "c1", job_id=1, status="running"))
        proxy.cut()
        began = time.monotonic()
        with pytest.raises(JournalError, match=r"cannot (write to|connect to) the run store"):
            store(s.sync(SyncTriggering, "c2"))
        # Refused at once while nothing listens (a new connection each call).
        store(s.sync(SyncStatusChanged, "c1", job_id=1, status="running"))  # batched
        with pytest.raises(JournalError, match="cannot connect to the run store"):
            store.flush()
        assert time.monotonic() - began < 10
        proxy.restore()
        # The batch was kept: it lands with the next write, on a new connection.
        store(s.sync(SyncTriggering, "c2"))
        kinds = [e.kind for _, e in store.events("r")]
    assert kinds == [
        "run_started",
        "sync_triggering",
        "sync_triggered",
        "sync_status_changed",
        "sync_triggering",
    ]
