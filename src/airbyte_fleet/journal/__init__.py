"""The run journal: every trigger and every outcome, kept before anyone acts on it.

:class:`RunStore` is what the rest of airbyte-fleet uses; :class:`Journal` is its SQLite backend,
one file in the state dir, and :class:`PostgresStore` its PostgreSQL one, a database several
processes share; :func:`open_store` picks one. A crashed run can be resumed without triggering
anything twice, ``runs`` lists history, and a service replays a run's events and then follows it
live.

Start reading at ``store.py`` (the interface and its records); ``codec.py`` turns events into
JSON and back; ``writer.py`` and ``queries.py`` write and read either database, spelt for each by
``dialect.py``; ``schema.py`` and ``sqlite.py`` are SQLite's tables and store, ``pg_schema.py``
and ``postgres.py`` PostgreSQL's; ``open.py`` chooses. Nothing here knows how a run is run: only
events and their outcomes.
"""

from typing import TYPE_CHECKING

from airbyte_fleet._lazy import lazy_exports
from airbyte_fleet.journal.codec import (
    EventDecodeError,
    UnknownEventKind,
    decode_event,
    encode_event,
)
from airbyte_fleet.journal.open import migrate, open_store, store_location
from airbyte_fleet.journal.schema import FILE_NAME, SCHEMA_VERSION
from airbyte_fleet.journal.sqlite import Journal
from airbyte_fleet.journal.store import (
    JournalDamagedError,
    JournalError,
    LeaseLostError,
    NoJournalError,
    RunRecord,
    RunStore,
    SyncRecord,
)
from airbyte_fleet.journal.urls import redact_url
from airbyte_fleet.journal.writer import Fsync

__all__ = [
    "FILE_NAME",
    "SCHEMA_VERSION",
    "EventDecodeError",
    "Fsync",
    "Journal",
    "JournalDamagedError",
    "JournalError",
    "LeaseLostError",
    "NoJournalError",
    "PostgresStore",
    "RunRecord",
    "RunStore",
    "SyncRecord",
    "UnknownEventKind",
    "decode_event",
    "encode_event",
    "migrate",
    "open_store",
    "redact_url",
    "store_location",
]

if TYPE_CHECKING:
    from airbyte_fleet.journal.postgres import PostgresStore

# PostgresStore loads psycopg (0.2 s): only a process that keeps its runs in PostgreSQL pays for it.
__getattr__ = lazy_exports(__name__, {"PostgresStore": "airbyte_fleet.journal.postgres"})
