"""airbyte-fleet: trigger many Airbyte syncs at once, follow every job to its end, report once.

The embedding API is loaded on first use, so ``import airbyte_fleet.simulator`` stays free of the
client (the simulator must share no code with it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airbyte_fleet._lazy import lazy_exports
from airbyte_fleet._version import __version__

__all__ = [
    "AirbyteSettings",
    "RunOptions",
    "RunResult",
    "Selection",
    "__version__",
    "load_settings",
    "run_syncs",
    "run_syncs_blocking",
]

if TYPE_CHECKING:
    from airbyte_fleet._embed import run_syncs, run_syncs_blocking
    from airbyte_fleet.config import AirbyteSettings, load_settings
    from airbyte_fleet.engine.options import RunOptions, Selection
    from airbyte_fleet.engine.result import RunResult

__getattr__ = lazy_exports(
    __name__,
    {
        "run_syncs": "airbyte_fleet._embed",
        "run_syncs_blocking": "airbyte_fleet._embed",
        "AirbyteSettings": "airbyte_fleet.config",
        "load_settings": "airbyte_fleet.config",
        "RunOptions": "airbyte_fleet.engine.options",
        "Selection": "airbyte_fleet.engine.options",
        "RunResult": "airbyte_fleet.engine.result",
    },
)
