"""What the scheduler remembers across restarts: the last tick dealt with, the last run and the
catch-ups still owed, per schedule: in the store's database (``schedule_state``), shared by every
replica (:class:`StoredState`), or in one JSON file replaced atomically (:class:`FileState`, what
versions before the shared store kept, imported once)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from airbyte_fleet._files import write_atomically
from airbyte_fleet._logging import get_logger
from airbyte_fleet._messages import fold_whitespace

if TYPE_CHECKING:
    from airbyte_fleet.coordination import Coordinator

__all__ = ["FileState", "ScheduleState", "StateKeeper", "StoredState"]

log = get_logger("airbyte_fleet.schedules")


# Keys only in pydantic-core's process-wide string cache: the state is read again and again (at
# start, and as replicas share it), and its values (run ids, ticks) would stay there, more a fire.
_KEYS_ONLY = ConfigDict(cache_strings="keys")


class _StateEntry(BaseModel):
    model_config = _KEYS_ONLY

    last_tick: AwareDatetime | None = None
    run_id: str | None = None
    pending: list[AwareDatetime] = Field(default_factory=list)


class _StateFile(BaseModel):
    model_config = _KEYS_ONLY

    version: Literal[1] = 1
    schedules: dict[str, _StateEntry] = Field(default_factory=dict)


@dataclass
class ScheduleState:
    """What the scheduler must remember across restarts, per schedule name.

    ``last_fired``: the newest tick dealt with (fired, skipped or dropped), UTC; ``run_ids``: the
    last run submitted, to keep runs from overlapping after a restart; ``pending``: catch-up ticks
    still waiting for the previous run to end.
    """

    last_fired: dict[str, datetime] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)
    pending: dict[str, list[datetime]] = field(default_factory=dict)

    FILE_NAME = "schedules.json"

    def copy(self) -> ScheduleState:
        return ScheduleState(
            last_fired=dict(self.last_fired),
            run_ids=dict(self.run_ids),
            pending={name: list(ticks) for name, ticks in self.pending.items()},
        )

    def forget(self, name: str) -> None:
        self.last_fired.pop(name, None)
        self.run_ids.pop(name, None)
        self.pending.pop(name, None)

    def to_json(self) -> str:
        doc = _StateFile(schedules=self._entries())
        return doc.model_dump_json(indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ScheduleState:
        doc = _StateFile.model_validate_json(text)
        state = cls()
        for name, entry in doc.schedules.items():
            state._take(name, entry)
        return state

    def _entries(self) -> dict[str, _StateEntry]:
        """Each schedule's memory as one entry (what a file or the store keeps)."""
        names = sorted(set(self.last_fired) | set(self.run_ids) | set(self.pending))
        return {
            name: _StateEntry(
                last_tick=self.last_fired.get(name),
                run_id=self.run_ids.get(name),
                pending=self.pending.get(name, []),
            )
            for name in names
        }

    def _take(self, name: str, entry: _StateEntry) -> None:
        if entry.last_tick is not None:
            self.last_fired[name] = entry.last_tick.astimezone(UTC)
        if entry.run_id:
            self.run_ids[name] = entry.run_id
        if entry.pending:
            self.pending[name] = sorted(t.astimezone(UTC) for t in entry.pending)

    @classmethod
    def read(cls, path: Path) -> ScheduleState:
        """The state in *path*; empty when it does not exist or cannot be read.

        An unreadable file is not fatal: starting empty re-arms every schedule from now, which
        can lose a catch-up but never fires a tick twice.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("schedule_state_unreadable", path=str(path), error=str(exc))
            return cls()
        try:
            return cls.from_json(text)
        except ValidationError as exc:
            log.warning(
                "schedule_state_unreadable",
                path=str(path),
                error=fold_whitespace(str(exc.errors()[0].get("msg", "invalid"))),
            )
            return cls()

    def write(self, path: Path) -> None:
        """Replace *path* atomically: a crash leaves the old file or the new one, never half."""
        # Durable (rename included) before the run it records is submitted.
        write_atomically(path, self.to_json())


class StateKeeper(Protocol):
    """Where the scheduler's state is kept. *shared*: other processes change it too (the
    scheduler reads it again before each tick)."""

    shared: bool

    def read(self) -> ScheduleState: ...

    def write(self, state: ScheduleState) -> None:
        """Durable on return; raises OSError (a file) or the store's error when it cannot."""


class FileState:
    """The state in one JSON file (tests, and what older versions kept)."""

    shared = False

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> ScheduleState:
        return ScheduleState.read(self.path)

    def write(self, state: ScheduleState) -> None:
        state.write(self.path)


class StoredState:
    """The state in the store's ``schedule_state`` table, one JSON document per schedule, shared
    by every replica on the database. Entries that cannot be read are left out (as an unreadable
    file is: the schedule re-arms from now, which can lose a catch-up but never fires twice, as
    each tick fires once in the database anyway)."""

    shared = True

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def read(self) -> ScheduleState:
        state = ScheduleState()
        for name, text in self.coordinator.schedule_states().items():
            try:
                entry = _StateEntry.model_validate_json(text)
            except ValidationError as exc:
                log.warning(
                    "schedule_state_unreadable",
                    schedule=name,
                    error=fold_whitespace(str(exc.errors()[0].get("msg", "invalid"))),
                )
                continue
            state._take(name, entry)
        return state

    def write(self, state: ScheduleState) -> None:
        for name, entry in state._entries().items():
            self.coordinator.save_schedule_state(name, entry.model_dump_json())
