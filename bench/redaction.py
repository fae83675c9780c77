"""Micro-benchmark of ``redact`` on a 10,000-line log (a benchmark script, not a test).

``redact`` runs on every string value of every log line, so its cost per call matters. Run with
``.venv/bin/python bench/redaction.py``; it prints microseconds per call.
"""

from __future__ import annotations

import json
import random
import sys
import time
import timeit
from collections.abc import Callable

LINES = 10_000


def make_log(seed: int = 1) -> list[str]:
    """Log lines as the CLI writes them during a busy run (JSON, 100-300 characters each)."""
    rng = random.Random(seed)
    events = ("sync_status", "poll", "airbyte_retry", "sync_triggered", "job_read_failed")
    lines = []
    for n in range(LINES):
        event = {
            "event": rng.choice(events),
            "level": "info",
            "timestamp": f"2025-01-0{1 + n % 9}T10:{n % 60:02d}:00.000000Z",
            "connection_id": f"9f0e8d7c-0000-4000-8000-{n:012d}",
            "job_id": 1_000 + n,
            "status": rng.choice(("running", "succeeded", "failed", "pending")),
        }
        if event["event"] == "airbyte_retry":
            event["reason"] = "Airbyte answered HTTP 503 for GET /jobs: upstream connect error"
        lines.append(json.dumps(event))
    return lines


def per_call_us(redact: Callable[[str], str], lines: list[str], repeat: int = 15) -> float:
    def one_pass() -> None:
        for line in lines:
            redact(line)

    # CPU time, best of several passes: other processes on the machine add wall time, not this.
    best = min(timeit.Timer(one_pass, timer=time.process_time).repeat(number=1, repeat=repeat))
    return best / len(lines) * 1e6


def main() -> None:
    sys.path.insert(0, "src")
    from airbyte_fleet._redact import forget_secrets, redact, register_secret

    lines = make_log()
    forget_secrets()
    print(f"no secret registered:  {per_call_us(redact, lines):.2f} us/call")
    for secret in (
        'back\\slash0123"secret',  # every escaped form differs from the raw one
        "Passw\u00f6rd-with-umlaut",
        "eyJhbGciOiJIUzI1NiJ9." + "x" * 600 + ".sig",  # an access token
    ):
        register_secret(secret)
    print(f"three secrets:         {per_call_us(redact, lines):.2f} us/call")
    forget_secrets()


if __name__ == "__main__":
    main()
