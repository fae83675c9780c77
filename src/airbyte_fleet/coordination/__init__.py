"""What several airbyte-fleet processes sharing one database agree on.

Runs are held by leases (one process at a time runs a run; a dead holder's lease expires and
another process takes over), the worker's accepted runs wait in a shared queue, a schedule's tick
fires once across every replica, and runs claim connections so that one of them triggers.

Start at ``protocol.py`` (the records and the :class:`Coordinator` interface); ``sql.py`` holds the
statements and rules for both databases, which ``sqlite.py`` and ``postgres.py`` run;
``claims.py`` is the engine's trigger hook over the claims table and ``keeper.py`` renews a
process's leases in the background.
"""

from airbyte_fleet.coordination.claims import StoreClaims
from airbyte_fleet.coordination.keeper import LeaseKeeper
from airbyte_fleet.coordination.opening import open_coordinator
from airbyte_fleet.coordination.protocol import (
    CoordinationError,
    Coordinator,
    Lease,
    LeaseHeldError,
    QueuedRun,
    Renewal,
    new_owner,
)

__all__ = [
    "CoordinationError",
    "Coordinator",
    "Lease",
    "LeaseHeldError",
    "LeaseKeeper",
    "QueuedRun",
    "Renewal",
    "StoreClaims",
    "new_owner",
    "open_coordinator",
]
