"""What the worker reads again and again leaves nothing behind: pydantic-core caches strings met in
JSON process-wide by default, so each new run id read would stay in memory.

(A queue entry, ``LedgerEntry``, does not need it: its ``mode="before"`` validator has pydantic
build plain Python values first, without the cache.)"""

from __future__ import annotations

import gc
import json
import sys

from airbyte_fleet.service.schedules.state import ScheduleState

RUNS = 3000


def _state(n: int) -> str:
    return json.dumps(
        {
            "version": 1,
            "schedules": {"nightly": {"run_id": f"run-{n:05d}-{'x' * 20}", "pending": []}},
        }
    )


def test_reading_schedule_state_keeps_no_values_alive() -> None:
    texts = [_state(n) for n in range(RUNS)]
    for text in texts[:10]:
        ScheduleState.from_json(text)
    gc.collect()
    before = sys.getallocatedblocks()
    for text in texts:
        ScheduleState.from_json(text)
    gc.collect()
    kept = sys.getallocatedblocks() - before
    # Caching every string kept one block or more per document; a few dozen blocks of the
    # interpreter's own come and go.
    assert kept < RUNS // 10, f"{kept} blocks kept after reading {RUNS} documents"
