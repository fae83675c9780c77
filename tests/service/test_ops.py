"""What operators lean on: a readiness probe that answers within its second without a token, an
access log line per request (refusals included, no secrets), and the per-schedule success time
in /metrics. Real worker, real simulator, a real stalling hop between them."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from airbyte_fleet.service.openapi import openapi_document
from airbyte_fleet.service.readiness import NOT_CHECKED_YET, Readiness
from airbyte_fleet.service.schedules import ScheduleState, StoredState
from airbyte_fleet.settings_file import FileConfig
from airbyte_fleet.simulator import JobScript
from conftest import SimFactory, client_for, misbehaving_proxy

from .support import FAST_RUN, TOKEN, until, worker

pytestmark = pytest.mark.anyio

# A probe's budget: Kubernetes' default timeoutSeconds.
PROBE_BUDGET = 1.0


class Stall:
    """A real HTTP hop in front of the simulator that stops answering while ``stalled``."""

    def __init__(self) -> None:
        self.stalled = False
        self.requests = 0
        self._release = asyncio.Event()

    def stall(self) -> None:
        self.stalled = True
        self._release.clear()

    def resume(self) -> None:
        self.stalled = False
        self._release.set()

    @asynccontextmanager
    async def serving(self, upstream: str) -> AsyncIterator[str]:
        async def before(request: web.Request) -> None:
            self.requests += 1
            if self.stalled:
                await self._release.wait()

        # Released before the relay closes: it waits for the requests it still holds.
        async with misbehaving_proxy(upstream, before=before) as hop:
            try:
                yield hop
            finally:
                self.resume()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _timed(readiness: Readiness) -> tuple[str | None, float]:
    started = time.monotonic()
    reason = await readiness.reason()
    return reason, time.monotonic() - started


# ----------------------------------------------------------------------------- readiness


async def test_readyz_needs_no_token_and_fails_within_a_probes_second_on_a_stalled_airbyte(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    secret = "sim-Secret-Not-In-Probes-77"
    _, root = await make_sim(connections=1, client_secret=secret)
    stall = Stall()
    async with stall.serving(root) as hop:
        stall.stall()
        async with worker(hop, tmp_path, client_secret=secret, ready_timeout=1.5) as (_, api):
            answers: list[tuple[int, dict[str, Any]]] = []

            async def probe() -> dict[str, Any]:
                # As a probe sends it: no token. Timed alone, without the checks against the
                # document (api.call's), which come after.
                started = time.monotonic()
                async with api.session.get(f"{api.base}/readyz") as response:
                    body: dict[str, Any] = await response.json()
                    answers.append((response.status, body))
                assert time.monotonic() - started < PROBE_BUDGET
                return body

            assert await probe() == {"ready": False, "reason": NOT_CHECKED_YET}

            async def timed_out() -> bool:
                return "did not answer within 1.5 s" in (await probe())["reason"]

            await until(timed_out, within=5)
            assert {status for status, _ in answers} == {503}
            assert secret not in json.dumps(answers)
            conforms = await api.call("GET", "/readyz", auth=False)
            assert conforms.status == 503


async def test_readiness_answers_from_its_latest_check_and_checks_again_when_it_is_old(
    make_sim: SimFactory,
) -> None:
    _, root = await make_sim(connections=1)
    stall, clock = Stall(), Clock()
    async with stall.serving(root) as hop, client_for(hop) as client:
        readiness = Readiness(client.check, timeout=0.3, max_age=5.0, wait=0.2, clock=clock)
        assert await readiness.reason() is None  # Airbyte answers well within the wait
        checked = stall.requests
        assert checked >= 1

        stall.stall()
        clock.now += 4.9
        reason, took = await _timed(readiness)
        assert (reason, stall.requests) == (None, checked)  # fresh enough: Airbyte is not asked

        clock.now += 0.1
        reason, took = await _timed(readiness)
        # Old: a new check starts, the probe waits for it only briefly, then gets the last one.
        assert reason is None
        assert took < 0.2 + 0.15
        assert stall.requests == checked + 1

        async def gave_up() -> bool:
            reason, took = await _timed(readiness)
            assert took < 0.2 + 0.15
            return reason is not None and "did not answer within 0.3 s" in reason

        await until(gave_up, within=5)
        assert stall.requests == checked + 1  # one check at a time, never one per probe

        stall.resume()
        clock.now += 5.0
        assert await readiness.reason() is None
        await readiness.close()


async def test_a_closed_readiness_leaves_no_check_running(make_sim: SimFactory) -> None:
    _, root = await make_sim(connections=1)
    stall = Stall()
    async with stall.serving(root) as hop, client_for(hop) as client:
        stall.stall()
        readiness = Readiness(client.check, timeout=30, wait=0.05)
        assert await readiness.reason() == NOT_CHECKED_YET
        pending = {t for t in asyncio.all_tasks() if t.get_name() == "readiness-check"}
        assert len(pending) == 1
        await readiness.close()
        assert all(t.done() for t in pending)


# ----------------------------------------------------------------------------- access log


async def test_every_request_gets_one_access_line_without_secrets(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (_, api):
        with capture_logs() as logs:
            await api.call("GET", "/healthz", auth=False)
            await api.call("GET", "/runs", auth=False)
            await api.call("GET", "/runs?limit=5", token=TOKEN[:-1] + "X")
            await api.call("GET", "/runs?limit=5&access_token=query-Secret-123", check=False)
            await api.call("POST", "/runs/nope/cancel")
            await api.call("GET", "/runs/x%0Ay", check=False)
        lines = _access(logs)
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("GET", "/healthz", 200),
        ("GET", "/runs", 401),
        ("GET", "/runs", 401),
        ("GET", "/runs", 422),
        ("POST", "/runs/nope/cancel", 404),
        # Percent-encoded as sent: a line break in a path never breaks the log's line.
        ("GET", "/runs/x%0Ay", 404),
    ]
    for line in lines:
        assert isinstance(line["duration_ms"], float)
        assert line["duration_ms"] >= 0
        assert line["peer"] == "127.0.0.1"
        assert line["log_level"] == "info"
    text = json.dumps(logs)
    assert TOKEN not in text
    assert TOKEN[:-1] not in text
    assert "query-Secret-123" not in text
    assert "Bearer" not in text


def _access(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "http_request"]


# ----------------------------------------------------------------------------- schedule metric


async def test_metrics_show_when_each_schedule_last_succeeded(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=2)
    good, bad = (c["connectionId"] for c in sim.connections)
    sim.script(bad, JobScript(seconds=0.1, final="failed"))
    # Both schedules last fired over a minute ago: the minute's tick is due as the worker starts.
    ago = datetime.now(UTC) - timedelta(seconds=61)
    ScheduleState(last_fired={"fine": ago, "broken": ago}).write(tmp_path / ScheduleState.FILE_NAME)
    file = FileConfig(
        run=FAST_RUN,
        schedules={
            "fine": {"cron": "* * * * *", "connections": [good]},
            "broken": {"cron": "* * * * *", "connections": [bad]},
        },
    )
    async with worker(root, tmp_path, file=file) as (running, api):

        async def both_finished() -> bool:
            runs = (await api.call("GET", "/runs")).body["runs"]
            return len(runs) == 2 and all(r["state"] == "finished" for r in runs)

        await until(both_finished, within=15)
        # The file an older version kept was brought into the store at start, then removed.
        assert not (tmp_path / ScheduleState.FILE_NAME).exists()
        run_ids = StoredState(running.worker.coordinator).read().run_ids
        fine = (await api.call("GET", f"/runs/{run_ids['fine']}")).body["result"]
        broken = (await api.call("GET", f"/runs/{run_ids['broken']}")).body["result"]
        assert (fine["outcome"], broken["outcome"]) == ("succeeded", "failed")
        scraped = (await api.call("GET", "/metrics", auth=False)).text

    series = {
        sample.labels["schedule"]: sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == "airbyte_fleet_schedule_last_success_timestamp_seconds"
    }
    finished_at = datetime.fromisoformat(fine["finished_at"]).timestamp()
    assert series == {"fine": pytest.approx(finished_at, abs=0.01)}


# ----------------------------------------------------------------------------- Last-Event-ID


async def test_last_event_id_is_taken_exactly_as_the_document_says(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    pattern = openapi_document()["paths"]["/runs/{run_id}/events"]["get"]["parameters"][0]
    assert pattern["name"] == "Last-Event-ID"
    async with worker(root, tmp_path) as (_, api):
        run_id = await api.submit({"all": True})
        await api.finished(run_id)
        host, port = api.base.removeprefix("http://").split(":")
        # (raw header bytes, what the worker should see once HTTP took the spaces around it off)
        for raw, value in (
            (b"", ""),
            (b"  1 \t", "1"),
            (b"001", "001"),
            (b"\xc2\xa03", "\xc2\xa03"),  # a no-break space is no HTTP space: not an id
            (b"3 4", "3 4"),
            (b"0x1", "0x1"),
            (b"9" * 19, "9" * 19),
        ):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(
                f"GET /runs/{run_id}/events HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {TOKEN}\r\nConnection: close\r\n".encode()
                + b"Last-Event-ID:"
                + raw
                + b"\r\n\r\n"
            )
            await writer.drain()
            async with asyncio.timeout(10):
                status = int((await reader.readline()).split()[1])
                await reader.read()
            writer.close()
            documented = re.fullmatch(pattern["schema"]["pattern"], value) is not None
            assert status == (200 if documented else 422), (raw, status)
