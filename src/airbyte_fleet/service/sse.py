"""``GET /runs/{id}/events``: a run's events as Server-Sent Events.

The journal is the only source: the stream replays what it holds after ``Last-Event-ID`` (the
journal's per-run sequence number is the SSE id), then waits for the run's next event and reads
on. Because every event is journaled before anyone else hears of it, a client that reconnects
with its last id gets each event exactly once, whether it was live or replayed, and whether the
run is followed by this worker, a worker that ran before it, or a CLI sharing the state dir.

The stream ends after ``run_finished`` (unless more events follow it, as when a finished run was
resumed), when the worker stops, or when the client goes away. An event of a kind this version
does not know (a newer version wrote it) is left out; the journal logs it.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from airbyte_fleet.engine.events import Event, RunFinished
from airbyte_fleet.service.responses import dumps
from airbyte_fleet.service.runs import Worker

__all__ = ["EVENT_STREAM", "event_frame", "stream_events"]

EVENT_STREAM = "text/event-stream"
# Events read from the journal per query: bounds memory on a long replay.
PAGE = 500
# Runs this worker does not drive (another process writes them) are re-read this often.
POLL_SECONDS = 1.0
# Tells EventSource clients how soon to reconnect after the stream drops.
RETRY_MS = 2000


def event_frame(seq: int, event: Event) -> bytes:
    """One SSE message: the event as the log line shows it (``Event.to_dict``)."""
    # dumps escapes line breaks, so the payload is one data line as SSE requires; a lone
    # surrogate (Airbyte's JSON may hold one) is written as JSON's escape for it.
    frame = f"id: {seq}\nevent: {event.kind}\ndata: {dumps(event.to_dict())}\n\n"
    return frame.encode("utf-8", "backslashreplace")


async def stream_events(
    request: web.Request, worker: Worker, run_id: str, after: int, *, keepalive: float
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": f"{EVENT_STREAM}; charset=utf-8",
            "Cache-Control": "no-cache",
            # nginx and friends would otherwise hold events back until a buffer fills.
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    try:
        await response.write(f"retry: {RETRY_MS}\n\n".encode())
        last_write = time.monotonic()
        # A client reconnecting with the id of run_finished has seen the whole run already.
        ended = after > 0 and _is_run_finished(worker, run_id, after)
        while True:
            waiter = worker.waiter(run_id)
            rows = worker.journal.events(run_id, after=after, limit=PAGE)
            if rows:
                # One write per page read: a replay of 10,000 events is 20 writes, not 10,000
                # (each a wait for the socket); a client still sees whole messages only.
                await response.write(b"".join(event_frame(seq, event) for seq, event in rows))
                after = rows[-1][0]
                ended = isinstance(rows[-1][1], RunFinished)
                last_write = time.monotonic()
            if len(rows) == PAGE:
                continue
            if (
                (ended and not worker.is_live(run_id))
                or worker.stopped
                or worker.unrecorded(run_id)
            ):
                break
            timeout = keepalive if worker.drives(run_id) else min(POLL_SECONDS, keepalive)
            try:
                await asyncio.wait_for(waiter.wait(), timeout)
            except TimeoutError:
                if time.monotonic() - last_write >= keepalive:
                    # A comment line: keeps proxies from closing an idle stream, and finds a
                    # client that went away.
                    await response.write(b": keep-alive\n\n")
                    last_write = time.monotonic()
    except ConnectionResetError:
        # The client went away: nobody is left to tell.
        return response
    await response.write_eof()
    return response


def _is_run_finished(worker: Worker, run_id: str, seq: int) -> bool:
    """Whether the run's event number *seq* is its ``run_finished``."""
    found = worker.journal.events(run_id, after=seq - 1, limit=1)
    return bool(found) and found[0][0] == seq and isinstance(found[0][1], RunFinished)
