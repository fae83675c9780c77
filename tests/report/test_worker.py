"""The worker serves a run's report at /runs/{id}/report.html, from its store, as the document
says."""

from __future__ import annotations

from pathlib import Path

import pytest

from airbyte_fleet.report import CONTENT_SECURITY_POLICY
from airbyte_fleet.simulator import JobScript
from conftest import SimFactory
from service.support import TOKEN, worker

from .support import BAR

pytestmark = pytest.mark.anyio


async def test_the_worker_serves_a_runs_report(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=4)
    failing = sim.connections[1]["connectionId"]
    sim.script(failing, JobScript(seconds=0.1, final="failed"))
    async with worker(root, tmp_path) as (_, api):
        run_id = await api.submit({"all": True}, max_concurrency=2)
        result = await api.finished(run_id)
        answer = await api.call("GET", f"/runs/{run_id}/report.html")
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "text/html; charset=utf-8"
        assert answer.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        page = answer.text
        assert run_id in page
        assert len(BAR.findall(page)) == len(result["syncs"]) == 4
        assert '<span class="chip f">1 failed</span>' in page
        for sync in result["syncs"]:
            assert sync["connection_name"] in page

        missing = await api.call("GET", "/runs/20990101T000000Z-deadbeef/report.html")
        assert missing.status == 404
        refused = await api.call("GET", f"/runs/{run_id}/report.html", token=TOKEN[:-1] + "X")
        assert refused.status == 401
        assert run_id not in refused.text
