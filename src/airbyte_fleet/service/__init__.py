"""The long-running worker behind ``airbyte-fleet serve``: an HTTP API over many runs.

``serve(ServeOptions.resolve(...))`` is the command; ``launch`` starts the same worker as an async
context manager (tests, embedding); ``build_app`` is the bare aiohttp application over a
:class:`Worker`.
"""

from airbyte_fleet.service.app import Running, build_app, launch, serve
from airbyte_fleet.service.options import ServeOptions, ShutdownMode, check_bind, is_loopback
from airbyte_fleet.service.runs import RunState, RunView, Worker

__all__ = [
    "RunState",
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
