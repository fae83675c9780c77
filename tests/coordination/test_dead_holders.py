"""On one host (SQLite), a lease whose holder process has ended is let go at once: a `run` killed
with SIGKILL is resumed now, not a lease time later; a live holder still keeps its run."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from airbyte_fleet.coordination import LeaseHeldError, new_owner
from airbyte_fleet.coordination.sqlite import SqliteCoordinator

HOLD = """
import sys, time
from airbyte_fleet.coordination import new_owner
from airbyte_fleet.coordination.sqlite import SqliteCoordinator
c = SqliteCoordinator(sys.argv[1], owner=new_owner(), lease_seconds=600)
c.acquire("r1")
print("held", flush=True)
time.sleep(600)
"""


def test_a_killed_holders_lease_is_taken_at_once_a_live_ones_is_not(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        me = SqliteCoordinator(tmp_path, owner=new_owner(), lease_seconds=600)
        with pytest.raises(LeaseHeldError, match=f":{holder.pid}:"):
            me.acquire("r1")
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        lease = me.acquire("r1")
        assert lease.owner == me.owner
        me.close()
    finally:
        holder.kill()
        holder.wait()


def test_a_holder_on_another_host_is_never_judged_from_here(tmp_path: Path) -> None:
    other = SqliteCoordinator(tmp_path, owner="elsewhere:1:abcdef", lease_seconds=600)
    other.acquire("r1")
    me = SqliteCoordinator(tmp_path, owner=new_owner(), lease_seconds=600)
    with pytest.raises(LeaseHeldError):
        me.acquire("r1")
    assert me.take_next() is None
    me.close()
    other.close()
