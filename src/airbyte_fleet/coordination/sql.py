"""The coordination tables' statements and rules, written once for SQLite and PostgreSQL.

Statements are written in SQLite's spelling with three tokens a :class:`Dialect` renders: ``{now}``
(the instant every lease is compared with), ``{until}`` (now plus the lease time) and ``IN_LIST(:p)``
(membership in a list parameter). PostgreSQL reads the database's clock, the same for every
replica; SQLite, on one host, gets the instant from the process (a clock tests may replace).

A lease is live while ``lease_until > now``; anything else about a run (its claims, whether it
may be taken from the queue) follows from that one comparison.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar

from airbyte_fleet.coordination.protocol import (
    CoordinationError,
    Lease,
    LeaseHeldError,
    QueuedRun,
    Renewal,
)
from airbyte_fleet.engine.hooks import Adopt, Claim, Trigger

__all__ = ["Dialect", "SqlCoordinator", "Tx", "decide_claim"]

T = TypeVar("T")
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Dialect:
    """How one database spells the tokens, placeholders and locks of the shared statements."""

    now: str
    until: str
    member: str  # IN_LIST(:p) becomes this, with {p} the parameter's name
    lock_next: str  # locks the worker_runs row take_next picks, or nothing
    claim_lock: str | None  # serialises one connection's claims, or None (the transaction does)
    named: Callable[[str], str]  # :name -> the driver's placeholder
    ids: Callable[[Sequence[str]], object]  # a list parameter as the driver takes it
    time: Callable[[datetime], object]  # an instant as a parameter
    read_time: Callable[[Any], datetime]  # an instant read back (UTC)
    _cache: dict[str, str] = field(default_factory=dict, compare=False)

    def render(self, template: str) -> str:
        found = self._cache.get(template)
        if found is None:
            text = template.replace("{now}", self.now).replace("{until}", self.until)
            text = text.replace("{lock_next}", self.lock_next)
            text = re.sub(r"IN_LIST\(:(\w+)\)", lambda m: self.member.format(p=m[1]), text)
            found = self._cache[template] = re.sub(r"(?<![:\w]):(\w+)", self._named, text)
        return found

    def _named(self, match: re.Match[str]) -> str:
        return self.named(match[1])


class Tx(Protocol):
    """One open transaction; the backend supplies the clock's parameters."""

    def rows(self, template: str, params: Mapping[str, object] | None = None) -> list[Row]: ...

    def count(self, template: str, params: Mapping[str, object] | None = None) -> int:
        """Run a statement; how many rows it changed."""
        ...


_ACQUIRE = """
INSERT INTO run_leases (run_id, owner, lease_until, acquired_at)
VALUES (:run_id, :owner, {until}, {now})
ON CONFLICT (run_id) DO UPDATE SET
    owner = excluded.owner,
    lease_until = excluded.lease_until,
    acquired_at = CASE WHEN run_leases.owner = excluded.owner
                       THEN run_leases.acquired_at ELSE excluded.acquired_at END
WHERE run_leases.owner = excluded.owner OR run_leases.lease_until <= {now}
RETURNING lease_until
"""
_HOLDER = "SELECT owner, lease_until FROM run_leases WHERE run_id = :run_id AND lease_until > {now}"
# An expired lease nobody took is still ours to renew; one taken by another process is lost.
_RENEW = """
UPDATE run_leases SET lease_until = {until}
WHERE owner = :owner AND run_id IN_LIST(:ids)
RETURNING run_id,
    (SELECT w.cancel_requested FROM worker_runs w WHERE w.run_id = run_leases.run_id)
"""
_RELEASE = "DELETE FROM run_leases WHERE owner = :owner AND run_id IN_LIST(:ids)"
_SUBMIT = """
INSERT INTO worker_runs (run_id, submitted_at, submitted_by, entry, cancel_requested)
VALUES (:run_id, :submitted_at, :submitted_by, :entry, :cancel_requested)
ON CONFLICT (run_id) DO NOTHING
"""
_NEXT = """
SELECT w.run_id, w.submitted_at, w.submitted_by, w.entry, w.cancel_requested
FROM worker_runs w LEFT JOIN run_leases l ON l.run_id = w.run_id
WHERE (l.run_id IS NULL OR l.lease_until <= {now}) AND NOT (w.run_id IN_LIST(:exclude))
ORDER BY w.submitted_at, w.run_id
LIMIT 1 {lock_next}
"""
_QUEUED = """
SELECT w.run_id, w.submitted_at, w.submitted_by, w.entry, w.cancel_requested,
       l.owner, l.lease_until
FROM worker_runs w LEFT JOIN run_leases l ON l.run_id = w.run_id AND l.lease_until > {now}
ORDER BY w.submitted_at, w.run_id
"""
_CANCEL = "UPDATE worker_runs SET cancel_requested = TRUE WHERE run_id = :run_id"
_FINISH = (
    "DELETE FROM worker_runs WHERE run_id = :run_id",
    "DELETE FROM run_leases WHERE run_id = :run_id",
    "DELETE FROM connection_claims WHERE run_id = :run_id",
)
_FIRE = """
INSERT INTO schedule_fires (schedule, tick, run_id, fired_at)
VALUES (:schedule, :tick, :run_id, {now})
ON CONFLICT (schedule, tick) DO NOTHING
RETURNING run_id
"""
_FIRED = "SELECT run_id FROM schedule_fires WHERE schedule = :schedule AND tick = :tick"
_STATES = "SELECT schedule, state FROM schedule_state"
# A scheduled run's schedule outlives its queue entry in schedule_fires.
_SUBMITTERS = """
SELECT run_id, schedule FROM schedule_fires WHERE run_id IN_LIST(:ids)
UNION ALL
SELECT run_id, submitted_by FROM worker_runs
WHERE submitted_by IS NOT NULL AND run_id IN_LIST(:ids)
"""
_SAVE_STATE = """
INSERT INTO schedule_state (schedule, state) VALUES (:schedule, :state)
ON CONFLICT (schedule) DO UPDATE SET state = excluded.state
"""
_OURS = """
SELECT 1 FROM run_leases WHERE run_id = :run_id AND owner = :owner AND lease_until > {now}
"""
_STALE_CLAIMS = """
DELETE FROM connection_claims
WHERE connection_id = :connection_id AND NOT EXISTS (
    SELECT 1 FROM run_leases l
    WHERE l.run_id = connection_claims.run_id AND l.lease_until > {now})
"""
_CLAIMS = (
    "SELECT run_id, job_id, triggering FROM connection_claims WHERE connection_id = :connection_id"
)
_TRIGGERING = """
INSERT INTO connection_claims (connection_id, run_id, job_id, triggering)
VALUES (:connection_id, :run_id, NULL, TRUE)
ON CONFLICT (connection_id, run_id) DO UPDATE SET triggering = TRUE
"""
_FOLLOWING = """
INSERT INTO connection_claims (connection_id, run_id, job_id, triggering)
VALUES (:connection_id, :run_id, :job_id, FALSE)
ON CONFLICT (connection_id, run_id) DO UPDATE SET job_id = excluded.job_id, triggering = FALSE
"""
_RELEASE_ONE = (
    "DELETE FROM connection_claims WHERE connection_id = :connection_id AND run_id = :run_id"
)
_RELEASE_ALL = "DELETE FROM connection_claims WHERE run_id = :run_id"
_FOLLOWERS = """
SELECT c.run_id FROM connection_claims c
JOIN run_leases l ON l.run_id = c.run_id AND l.lease_until > {now}
WHERE c.connection_id = :connection_id AND c.job_id = :job_id AND c.run_id <> :run_id
ORDER BY c.run_id
"""


def decide_claim(run_id: str, rows: Iterable[Row], seen: frozenset[int]) -> Claim | None:
    """The claim rules (see ``claims.py``) over the live claim rows of one
    connection, ``(run_id, job_id, triggering)``: an answer, or None to wait."""
    rows = list(rows)
    someone_triggers = any(bool(triggering) for rid, _, triggering in rows if rid != run_id)
    others = {rid: job for rid, job, _ in rows if rid != run_id and job is not None}
    if not someone_triggers and not others:
        return Trigger()
    jobs = [job for _, job, _ in rows if job is not None]
    # Airbyte runs one job per connection at a time: the newest one followed is the live one.
    job_id = max(jobs) if jobs else None
    if not someone_triggers and job_id is not None and job_id not in seen:
        owners = sorted(rid for rid, job in others.items() if job == job_id)
        return Adopt(int(job_id), f"run {owners[0]}" if owners else "another run")
    return None


class SqlCoordinator(ABC):
    """A :class:`~airbyte_fleet.coordination.Coordinator` over any :class:`Dialect`; a backend
    gives it transactions."""

    def __init__(self, *, owner: str, lease_seconds: float, dialect: Dialect, where: str) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.where = where  # the database as messages name it: a path, or a URL without password
        self._d = dialect

    @abstractmethod
    def _transaction(self, doing: str, work: Callable[[Tx], T]) -> T:
        """Run *work* in one write transaction (committed when it returns); a database failure
        becomes a CoordinationError saying what was being done (*doing*)."""

    @abstractmethod
    def close(self) -> None:
        """Let go of the database."""

    # ----------------------------------------------------------------------------- leases

    def acquire(self, run_id: str) -> Lease:
        def work(tx: Tx) -> Lease:
            while True:
                lease = self._lease(tx, run_id)
                if lease is not None:
                    return lease
                # Held: by whom (unless it has just been let go, then try again).
                for owner, until in tx.rows(_HOLDER, {"run_id": run_id}):
                    raise LeaseHeldError(Lease(run_id, owner, self._d.read_time(until)))

        return self._transaction(f"take the lease of run {run_id}", work)

    def _lease(self, tx: Tx, run_id: str) -> Lease | None:
        rows = tx.rows(_ACQUIRE, {"run_id": run_id, "owner": self.owner})
        return Lease(run_id, self.owner, self._d.read_time(rows[0][0])) if rows else None

    def renew(self, run_ids: Iterable[str]) -> Renewal:
        wanted = sorted(set(run_ids))
        if not wanted:
            return Renewal(frozenset(), frozenset())

        def work(tx: Tx) -> Renewal:
            rows = tx.rows(_RENEW, {"owner": self.owner, "ids": self._d.ids(wanted)})
            kept = {rid for rid, _ in rows}
            cancel = frozenset(rid for rid, flag in rows if flag)
            return Renewal(frozenset(wanted) - kept, cancel)

        return self._transaction("renew leases", work)

    def release(self, run_ids: Iterable[str]) -> None:
        wanted = sorted(set(run_ids))
        if wanted:
            params = {"owner": self.owner, "ids": self._d.ids(wanted)}
            self._transaction("release leases", lambda tx: tx.count(_RELEASE, params))

    def holder(self, run_id: str) -> Lease | None:
        def work(tx: Tx) -> Lease | None:
            rows = tx.rows(_HOLDER, {"run_id": run_id})
            return Lease(run_id, rows[0][0], self._d.read_time(rows[0][1])) if rows else None

        return self._transaction(f"read the lease of run {run_id}", work)

    # ----------------------------------------------------------------------------- the queue

    def submit(self, run: QueuedRun) -> None:
        self._transaction(f"accept run {run.run_id}", lambda tx: self._submit(tx, run))

    def _submit(self, tx: Tx, run: QueuedRun) -> None:
        tx.count(
            _SUBMIT,
            {
                "run_id": run.run_id,
                "submitted_at": self._d.time(run.submitted_at),
                "submitted_by": run.submitted_by,
                "entry": run.entry,
                "cancel_requested": run.cancel_requested,
            },
        )

    def take_next(self, *, exclude: Collection[str] = ()) -> QueuedRun | None:
        def work(tx: Tx) -> QueuedRun | None:
            skip = set(exclude)
            while True:
                rows = tx.rows(_NEXT, {"exclude": self._d.ids(sorted(skip))})
                if not rows:
                    return None
                run = self._queued(rows[0])
                # Another process may have leased it after this statement's snapshot: the
                # conditional upsert is what decides.
                lease = self._lease(tx, run.run_id)
                if lease is not None:
                    return QueuedRun(
                        run.run_id,
                        run.submitted_at,
                        run.entry,
                        run.submitted_by,
                        run.cancel_requested,
                        lease,
                    )
                skip.add(run.run_id)

        return self._transaction("take the next queued run", work)

    def finish(self, run_id: str) -> None:
        def work(tx: Tx) -> None:
            for statement in _FINISH:
                tx.count(statement, {"run_id": run_id})

        self._transaction(f"finish run {run_id}", work)

    def request_cancel(self, run_id: str) -> bool:
        changed = self._transaction(
            f"ask to cancel run {run_id}", lambda tx: tx.count(_CANCEL, {"run_id": run_id})
        )
        return changed > 0

    def queued(self) -> list[QueuedRun]:
        def work(tx: Tx) -> list[QueuedRun]:
            return [self._queued(row) for row in tx.rows(_QUEUED)]

        return self._transaction("list the queued runs", work)

    def _queued(self, row: Row) -> QueuedRun:
        run_id, submitted_at, submitted_by, entry, cancel = row[:5]
        holder = None
        if len(row) > 5 and row[5] is not None:
            holder = Lease(run_id, row[5], self._d.read_time(row[6]))
        return QueuedRun(
            run_id, self._d.read_time(submitted_at), entry, submitted_by, bool(cancel), holder
        )

    # ----------------------------------------------------------------------------- schedules

    def fire_once(self, schedule: str, tick: datetime, run: QueuedRun) -> str:
        params = {"schedule": schedule, "tick": self._d.time(tick), "run_id": run.run_id}

        def work(tx: Tx) -> str:
            if tx.rows(_FIRE, params):
                self._submit(tx, run)
                return run.run_id
            first: str = tx.rows(_FIRED, params)[0][0]
            return first

        return self._transaction(f"fire schedule {schedule}", work)

    def submitters(self, run_ids: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(run_ids))
        if not wanted:
            return {}
        params = {"ids": self._d.ids(wanted)}

        def work(tx: Tx) -> dict[str, str]:
            return {run_id: schedule for run_id, schedule in tx.rows(_SUBMITTERS, params)}

        return self._transaction("read who submitted the runs", work)

    def schedule_states(self) -> dict[str, str]:
        def work(tx: Tx) -> dict[str, str]:
            return {schedule: state for schedule, state in tx.rows(_STATES)}

        return self._transaction("read the schedules' state", work)

    def save_schedule_state(self, schedule: str, state: str) -> None:
        params = {"schedule": schedule, "state": state}
        self._transaction(
            f"save the state of schedule {schedule}", lambda tx: tx.count(_SAVE_STATE, params)
        )

    # ----------------------------------------------------------------------------- claims

    def claim_connection(
        self, run_id: str, connection_id: str, seen: frozenset[int]
    ) -> Claim | None:
        params = {"run_id": run_id, "owner": self.owner, "connection_id": connection_id}

        def work(tx: Tx) -> Claim | None:
            if self._d.claim_lock is not None:
                tx.rows(self._d.claim_lock, params)
            if not tx.rows(_OURS, params):
                raise CoordinationError(
                    f"run {run_id} is not held by this process (its lease ended or was never "
                    "taken), so it may not trigger; it stops here and a process holding it "
                    "carries on"
                )
            tx.count(_STALE_CLAIMS, params)
            answer = decide_claim(run_id, tx.rows(_CLAIMS, params), seen)
            if isinstance(answer, Trigger):
                tx.count(_TRIGGERING, params)
            return answer

        return self._transaction(f"claim connection {connection_id}", work)

    def follow_connection(self, run_id: str, connection_id: str, job_id: int) -> None:
        params = {"run_id": run_id, "connection_id": connection_id, "job_id": job_id}
        self._transaction(
            f"record that run {run_id} follows job {job_id}",
            lambda tx: tx.count(_FOLLOWING, params),
        )

    def release_connection(self, run_id: str, connection_id: str | None) -> None:
        params = {"run_id": run_id, "connection_id": connection_id}
        statement = _RELEASE_ALL if connection_id is None else _RELEASE_ONE
        self._transaction(
            f"release the connections of run {run_id}", lambda tx: tx.count(statement, params)
        )

    def connection_followers(self, run_id: str, connection_id: str, job_id: int) -> list[str]:
        params = {"run_id": run_id, "connection_id": connection_id, "job_id": job_id}

        def work(tx: Tx) -> list[str]:
            return [rid for (rid,) in tx.rows(_FOLLOWERS, params)]

        return self._transaction(f"read who follows job {job_id}", work)
