"""The long-running worker behind ``airbyte-fleet serve``: an HTTP API over many runs.

``serve(ServeOptions.resolve(...))`` is the command; ``launch`` starts the same worker as an async
context manager (tests, embedding); ``build_app`` is the bare aiohttp application over a
:class:`Worker`.

The names are loaded on first use, so that the CLI reads :mod:`~.options` (the ``serve`` flags'
defaults) and :mod:`~.schedules` without loading the HTTP server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airbyte_fleet._lazy import lazy_exports

__all__ = [
    "RunView",
    "Running",
    "ServeOptions",
    "ShutdownMode",
    "Worker",
    "build_app",
    "check_bind",
    "is_loopback",
    "launch",
    "serve",
]

if TYPE_CHECKING:
    from airbyte_fleet.service.app import Running, build_app, launch, serve
    from airbyte_fleet.service.options import ServeOptions, ShutdownMode, check_bind, is_loopback
    from airbyte_fleet.service.runs import RunView, Worker

__getattr__ = lazy_exports(
    __name__,
    {
        "Running": "airbyte_fleet.service.app",
        "build_app": "airbyte_fleet.service.app",
        "launch": "airbyte_fleet.service.app",
        "serve": "airbyte_fleet.service.app",
        "ServeOptions": "airbyte_fleet.service.options",
        "ShutdownMode": "airbyte_fleet.service.options",
        "check_bind": "airbyte_fleet.service.options",
        "is_loopback": "airbyte_fleet.service.options",
        "RunView": "airbyte_fleet.service.runs",
        "Worker": "airbyte_fleet.service.runs",
    },
)
