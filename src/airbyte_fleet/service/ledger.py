"""What the worker keeps of a run it accepted: a :class:`LedgerEntry` (plan, options, selection).

The journal knows a run from its ``run_started`` on, but a run waiting in the queue has not started,
and its submitter already holds its run id: the entry keeps it so that it survives a restart, and
any replica can start it. Entries live in the store's queue (``worker_runs``, see
``coordination/``), as opaque JSON this module reads and writes.

Versions before the shared store kept one JSON file per entry under ``<state_dir>/service/runs/``:
:class:`LegacyLedger` brings those into the queue at the worker's first start and removes them. A
file that cannot be read is renamed ``*.bad`` and reported (its run id is its file name) until the
worker has settled it: an accepted run is never dropped without a word.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from airbyte_fleet._logging import get_logger
from airbyte_fleet.coordination import Coordinator, QueuedRun
from airbyte_fleet.engine.events import PlannedSync
from airbyte_fleet.engine.plan import Plan
from airbyte_fleet.engine.stages import Stage

__all__ = ["DamagedEntry", "LedgerEntry", "LegacyLedger", "first_line"]

log = get_logger("airbyte_fleet.service")

# Run ids become file names: only the shape new_run_id() produces is accepted.
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class LedgerEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    run_id: str
    submitted_at: datetime
    options: dict[str, Any]
    selection: dict[str, Any] | None = None
    plan: list[PlannedSync]
    warnings: list[str] = []
    # A staged run's groups (engine/stages.py): a run taken from the queue keeps its order.
    stages: list[Stage] = []

    @model_validator(mode="before")
    @classmethod
    def _older_names(cls, data: Any) -> Any:
        # Entries written before plan items were PlannedSync called the name "name": a queued
        # run must survive the upgrade.
        if isinstance(data, dict) and isinstance(data.get("plan"), list):
            data = dict(data)
            data["plan"] = [
                {("connection_name" if k == "name" else k): v for k, v in item.items()}
                if isinstance(item, dict)
                else item
                for item in data["plan"]
            ]
        return data

    def to_plan(self) -> Plan:
        return Plan(
            items=tuple(self.plan), warnings=tuple(self.warnings), stages=tuple(self.stages)
        )


@dataclass(frozen=True)
class DamagedEntry:
    """An accepted run whose ledger entry cannot be read: all that is left is its id."""

    run_id: str
    path: Path
    reason: str


class LegacyLedger:
    """The run files an older worker left in the state directory (never creates the folder)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "service" / "runs"

    def _file(self, run_id: str) -> Path:
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        return self.path / f"{run_id}.json"

    def import_into(self, coordinator: Coordinator) -> list[DamagedEntry]:
        """Queue every readable entry that is not queued yet, then remove its file; returns the
        entries that cannot be read (kept as ``*.bad`` for the caller to settle)."""
        if not self.path.is_dir():
            return []
        queued = {q.run_id for q in coordinator.queued()}
        for entry in self.entries():
            if entry.run_id not in queued:
                coordinator.submit(
                    QueuedRun(
                        run_id=entry.run_id,
                        submitted_at=entry.submitted_at,
                        entry=entry.model_dump_json(),
                    )
                )
                log.info("ledger_entry_imported", run_id=entry.run_id)
            self.forget(entry.run_id, damaged=False)
        return self.damaged()

    def forget(self, run_id: str, *, damaged: bool = True) -> None:
        """Remove the run's file (and what is left of a damaged one)."""
        paths = [self._file(run_id)]
        if damaged:
            paths.append(self._file(run_id).with_suffix(".bad"))
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def entries(self) -> list[LedgerEntry]:
        """Every readable entry, oldest submission first; an unreadable one is logged and kept
        aside (renamed ``*.bad``, see :meth:`damaged`)."""
        found: list[LedgerEntry] = []
        for path in sorted(self.path.glob("*.json")):
            try:
                entry = _read(path)
            except (OSError, ValueError) as exc:
                log.error("ledger_entry_unreadable", path=str(path), error=str(exc)[:200])
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            found.append(entry)
        found.sort(key=lambda e: (e.submitted_at, e.run_id))
        return found

    def damaged(self) -> list[DamagedEntry]:
        """The runs whose entries could not be read (kept as ``*.bad``), by run id."""
        found: list[DamagedEntry] = []
        for path in sorted(self.path.glob("*.bad")):
            if not _RUN_ID.fullmatch(path.stem):
                continue
            try:
                _read(path)
                reason = "it was set aside as unreadable"
            except (OSError, ValueError) as exc:
                reason = first_line(exc)
            found.append(DamagedEntry(path.stem, path, reason))
        return found


def _read(path: Path) -> LedgerEntry:
    try:
        entry = LedgerEntry.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ValueError(first_line(exc)) from None
    if path.stem != entry.run_id:
        raise ValueError("the file name and the run id differ")
    return entry


def first_line(exc: Exception) -> str:
    """*exc* in one line for a log or an API answer: a validation error's first problem."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "the entry"
        return f"{where}: {first['msg']}"
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
