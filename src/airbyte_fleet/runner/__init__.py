"""A run's one home (:class:`RunSession`) and what every front end needs around it: opening the
client, handling signals, replaying a journal, planning a resume."""

from airbyte_fleet.runner.client import open_client
from airbyte_fleet.runner.session import RunSession, SessionState
from airbyte_fleet.runner.signals import on_signals

__all__ = ["RunSession", "SessionState", "on_signals", "open_client"]
