"""A local, spec-faithful simulator of Airbyte's public API, for demos and tests.

It is an independent reading of the spec and of Airbyte's server behaviour and shares no code
with the client in ``airbyte_fleet.api``.

Where things are: ``_server`` is the ``Simulator`` object and ``_cli`` its command line. A request
goes through ``_app`` (``_routing``, ``_fault_injection``, ``_auth``, then ``_handlers``, whose
errors are ``_problems``); ``_control`` is the out-of-band ``/_simulator/`` routes. They share
``_state``, whose ``_world`` enforces Airbyte's rules over ``_seed`` data and jobs that are
``_timeline``s of status changes, queued for a slot by ``_slots`` under ``--max-running``.
"""

from ._cli import main
from ._clock import Clock, FakeClock, RealClock
from ._exchange import FAULT_KINDS, Exchange
from ._options import Faults, SimulatorOptions
from ._server import Simulator
from ._timeline import JobScript
from ._world import ConnectionNotActiveError, JobAlreadyRunningError

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
