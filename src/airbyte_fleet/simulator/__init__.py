"""A local, spec-faithful simulator of Airbyte's public API, for demos and tests.

It is an independent reading of the spec and of Airbyte's server behaviour and shares no code
with the client in ``airbyte_fleet.api``.
"""

from ._cli import main
from ._clock import Clock, FakeClock, RealClock
from ._exchange import FAULT_KINDS, Exchange
from ._options import Faults, SimulatorOptions
from ._server import Simulator
from ._world import ConnectionNotActiveError, JobAlreadyRunningError, JobScript

__all__ = [
    "FAULT_KINDS",
    "Clock",
    "ConnectionNotActiveError",
    "Exchange",
    "FakeClock",
    "Faults",
    "JobAlreadyRunningError",
    "JobScript",
    "RealClock",
    "Simulator",
    "SimulatorOptions",
    "main",
]
