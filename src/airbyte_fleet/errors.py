"""The project's error base, apart from any package: config, the client and the runner all raise
subclasses of :class:`FleetError`, and each front end (the CLI's exit codes, the worker's HTTP
statuses) maps them in one place.

Every message is one plain sentence that names the fix and never carries a secret.
"""

from __future__ import annotations

from airbyte_fleet._redact import redact

__all__ = ["ConfigError", "FleetError"]


class FleetError(Exception):
    """Base of every error airbyte-fleet raises on purpose; ``message`` is safe to show."""

    def __init__(self, message: str) -> None:
        self.message = redact(message)
        super().__init__(self.message)


class ConfigError(FleetError):
    """The configuration, selection or options cannot work; nothing was triggered."""
