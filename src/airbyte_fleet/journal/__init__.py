"""The run journal: every trigger and every outcome, kept before anyone acts on it.

:class:`RunStore` is what the rest of airbyte-fleet uses; :class:`Journal` is its SQLite backend,
one file in the state dir. A crashed run can be resumed without triggering anything twice, ``runs``
lists history, and a service replays a run's events and then follows it live.

Start reading at ``store.py`` (the interface and its records); ``codec.py`` turns events into
JSON and back; ``schema.py``, ``writer.py`` and ``queries.py`` are the SQLite backend that
``sqlite.py`` puts together. Nothing here knows how a run is run: only events and their outcomes.
"""

from airbyte_fleet.journal.codec import (
    EventDecodeError,
    UnknownEventKind,
    decode_event,
    encode_event,
)
from airbyte_fleet.journal.schema import FILE_NAME, SCHEMA_VERSION
from airbyte_fleet.journal.sqlite import Journal
from airbyte_fleet.journal.store import (
    JournalDamagedError,
    JournalError,
    NoJournalError,
    RunRecord,
    RunStore,
    SyncRecord,
)
from airbyte_fleet.journal.writer import Fsync

__all__ = [
    "FILE_NAME",
    "SCHEMA_VERSION",
    "EventDecodeError",
    "Fsync",
    "Journal",
    "JournalDamagedError",
    "JournalError",
    "NoJournalError",
    "RunRecord",
    "RunStore",
    "SyncRecord",
    "UnknownEventKind",
    "decode_event",
    "encode_event",
]
