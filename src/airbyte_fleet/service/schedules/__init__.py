"""Named schedules from the config file, run by the worker. One concept a module:

* :mod:`.spec`: a ``[schedules.NAME]`` table and the model that checks it (:func:`parse_schedules`);
* :mod:`.fire_times`: when a schedule fires, in its own zone and across DST changes;
* :mod:`.state`: what is remembered across restarts (:class:`ScheduleState`);
* :mod:`.scheduler`: the loop that fires ticks and submits runs (:class:`Scheduler`).
"""

from __future__ import annotations

from airbyte_fleet.service.schedules.fire_times import (
    describe_next,
    next_fire_times,
    summarize_selection,
)
from airbyte_fleet.service.schedules.scheduler import (
    SKIP_REASON,
    Firing,
    IsLive,
    Scheduler,
    Submit,
    Track,
)
from airbyte_fleet.service.schedules.spec import MAX_CATCH_UP, Schedule, parse_schedules
from airbyte_fleet.service.schedules.state import FileState, ScheduleState, StoredState

__all__ = [
    "MAX_CATCH_UP",
    "SKIP_REASON",
    "FileState",
    "Firing",
    "IsLive",
    "Schedule",
    "ScheduleState",
    "Scheduler",
    "StoredState",
    "Submit",
    "Track",
    "describe_next",
    "next_fire_times",
    "parse_schedules",
    "summarize_selection",
]
