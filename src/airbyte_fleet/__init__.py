"""airbyte-fleet: trigger many Airbyte syncs at once, follow every job to its end, report once.

The Python API (``docs/python-api.md``): :func:`run_syncs` and :func:`run_syncs_blocking`, the
models they take (:class:`Selection`, :class:`RunOptions`) and return (:class:`RunResult`), the
events a caller's sink receives, and the exceptions. Names are loaded on first use, so
``import airbyte_fleet.simulator`` stays free of the client (the simulator must share no code with
it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airbyte_fleet._lazy import lazy_exports
from airbyte_fleet._version import __version__

__all__ = [
    "AirbyteError",
    "AirbyteSettings",
    "AttemptRecord",
    "AuthError",
    "ConfigError",
    "Event",
    "EventSink",
    "FleetError",
    "Group",
    "GroupArgs",
    "GroupResult",
    "ResultBuilder",
    "RunOptions",
    "RunOptionsArgs",
    "RunResult",
    "Selection",
    "SelectionArgs",
    "SyncResult",
    "Totals",
    "TransportError",
    "__version__",
    "load_settings",
    "run_syncs",
    "run_syncs_blocking",
]

if TYPE_CHECKING:
    from airbyte_fleet._embed import run_syncs, run_syncs_blocking
    from airbyte_fleet.api.errors import AirbyteError, AuthError, TransportError
    from airbyte_fleet.config import AirbyteSettings, load_settings
    from airbyte_fleet.engine.events import Event, EventSink
    from airbyte_fleet.engine.options import (
        Group,
        GroupArgs,
        RunOptions,
        RunOptionsArgs,
        Selection,
        SelectionArgs,
    )
    from airbyte_fleet.engine.result import (
        AttemptRecord,
        GroupResult,
        ResultBuilder,
        RunResult,
        SyncResult,
        Totals,
    )
    from airbyte_fleet.errors import ConfigError, FleetError

__getattr__ = lazy_exports(
    __name__,
    {
        "run_syncs": "airbyte_fleet._embed",
        "run_syncs_blocking": "airbyte_fleet._embed",
        "AirbyteError": "airbyte_fleet.api.errors",
        "AuthError": "airbyte_fleet.api.errors",
        "TransportError": "airbyte_fleet.api.errors",
        "AirbyteSettings": "airbyte_fleet.config",
        "load_settings": "airbyte_fleet.config",
        "Event": "airbyte_fleet.engine.events",
        "EventSink": "airbyte_fleet.engine.events",
        "Group": "airbyte_fleet.engine.options",
        "GroupArgs": "airbyte_fleet.engine.options",
        "GroupResult": "airbyte_fleet.engine.result",
        "RunOptions": "airbyte_fleet.engine.options",
        "RunOptionsArgs": "airbyte_fleet.engine.options",
        "Selection": "airbyte_fleet.engine.options",
        "SelectionArgs": "airbyte_fleet.engine.options",
        "AttemptRecord": "airbyte_fleet.engine.result",
        "ResultBuilder": "airbyte_fleet.engine.result",
        "RunResult": "airbyte_fleet.engine.result",
        "SyncResult": "airbyte_fleet.engine.result",
        "Totals": "airbyte_fleet.engine.result",
        "ConfigError": "airbyte_fleet.errors",
        "FleetError": "airbyte_fleet.errors",
    },
)
