"""What the worker's API shows of a run, wherever it is known from: a session of this worker, the
journal, or what is left of a run that never started."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airbyte_fleet.engine.result import RunResult
from airbyte_fleet.journal import RunRecord, RunStore
from airbyte_fleet.runner import RunSession, SessionState
from airbyte_fleet.runner.replay import replay_result

__all__ = ["RunView", "session_view"]


@dataclass(frozen=True)
class RunView:
    """What the API shows of a run, wherever it is known from: :meth:`status` is the ``RunStatus``
    of ``/openapi.json``, :meth:`list_item` a ``RunListItem``."""

    run_id: str
    state: SessionState
    result: RunResult | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    outcome: str | None = None
    total: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    # Why the run ended without the worker being able to record it (its journal failed, or its
    # ledger entry was damaged before it started); None for every other run.
    error: str | None = None
    # The replica (or process) holding the run's lease now; None when nobody does.
    owner: str | None = None
    # The schedule that submitted the run; None: submitted through the API.
    submitted_by: str | None = None

    def status(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "result": self.result.model_dump(mode="json") if self.result is not None else None,
            "error": self.error,
            "owner": self.owner,
        }

    def status_json(self) -> Iterator[str]:
        """:meth:`status` as the API's compact JSON (``responses.dumps`` before its secret
        filter), one sync at a time: a result of many syncs is never one dict or one text."""
        if self.result is None:
            yield _compact(self.status())
            return
        syncs = self.result.syncs
        head = self.result.model_copy(update={"syncs": []})
        text = _compact(
            RunView(self.run_id, self.state, head, error=self.error, owner=self.owner).status()
        )
        # Inside a JSON string every quote is escaped: this can only be the key.
        before, key, after = text.partition('"syncs":[]')
        if not key:
            raise RuntimeError("the run's status has no list of syncs")
        piece = before + '"syncs":['
        for i, sync in enumerate(syncs):
            yield piece + ("," if i else "") + _compact(sync.model_dump(mode="json"))
            piece = ""
        yield piece + "]" + after

    def list_item(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "outcome": self.outcome,
            "total": self.total,
            "counts": dict(self.counts),
            "error": self.error,
            "submitted_by": self.submitted_by,
        }


def _compact(data: Any) -> str:
    # What responses.dumps writes, before the secret filter the response applies.
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)


def session_view(session: RunSession, *, owner: str | None = None) -> RunView:
    # The result is made only once the run is over: a listing or a poll of a running run reads
    # no more than its start.
    result = session.snapshot() if session.state == "finished" else None
    started_at = result.started_at if result is not None else _started_at(session)
    failure = session.store_error
    return RunView(
        run_id=session.run_id,
        state=session.state,
        result=result,
        started_at=started_at,
        finished_at=result.finished_at if result is not None else None,
        outcome=result.outcome if result is not None else None,
        total=len(session.plan.items),
        counts=dict(result.counts) if result is not None else {},
        error=failure.message if failure is not None and session.state == "finished" else None,
        owner=owner,
    )


def _started_at(session: RunSession) -> datetime | None:
    if not session.started:
        return None
    try:
        return session.builder.started_at
    except RuntimeError:
        return None  # started, as far as the session knows, but nothing of it was heard yet


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def stored_view(journal: RunStore, record: RunRecord, *, owner: str | None = None) -> RunView:
    """A run this worker does not hold, as the store keeps it (the result only once finished)."""
    finished = record.finished_at is not None
    return RunView(
        run_id=record.run_id,
        state="finished" if finished else "running",
        result=replay_result(journal, record.run_id) if finished else None,
        started_at=record.started_at,
        finished_at=record.finished_at,
        outcome=record.outcome if finished else None,
        total=record.total,
        counts=record.counts,
        owner=None if finished else owner,
    )


def listed_view(record: RunRecord, session: RunSession | None) -> RunView:
    """A listing row from the store; a run this worker still drives is finished only once its
    session says so (the store may hold run_finished a moment before)."""
    if session is not None and session.store_error is not None:
        return session_view(session)
    finished = record.finished_at is not None and (session is None or session.finished)
    return RunView(
        run_id=record.run_id,
        state="finished" if finished else "running",
        started_at=record.started_at,
        finished_at=record.finished_at if finished else None,
        outcome=record.outcome if finished else None,
        total=record.total,
        counts=dict(record.counts),
    )
