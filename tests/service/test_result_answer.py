"""``GET /runs/{id}`` of a finished run: the body is streamed one sync at a time, and is byte for
byte the answer the worker gave as one body (real worker, real simulator, over loopback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airbyte_fleet.service.responses import json_response
from airbyte_fleet.simulator import JobScript
from conftest import SimFactory

from .support import TOKEN, worker

pytestmark = pytest.mark.anyio


async def test_a_finished_runs_answer_is_streamed_as_the_one_body_was(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=40, workspaces=2)
    failing = sim.connections[0]["connectionId"]
    sim.script(failing, JobScript(seconds=0.05, final="failed"))
    async with worker(root, tmp_path) as (running, api):
        run_id = await api.submit({"all": True}, max_concurrency=40)
        # Checked against /openapi.json on every poll, the streamed answer included.
        result = await api.finished(run_id)
        assert len(result["syncs"]) == 40
        view = running.worker.view(run_id)
        assert view is not None
        assert view.result is not None
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with api.session.get(f"{api.base}/runs/{run_id}", headers=headers) as answer:
            body = await answer.read()
            assert answer.status == 200
            assert answer.headers["Content-Type"] == "application/json; charset=utf-8"
            assert answer.headers.get("Transfer-Encoding") == "chunked"
    assert body == json_response(view.status()).body
    syncs = {s["connection_id"]: s for s in json.loads(body)["result"]["syncs"]}
    assert syncs[failing]["outcome"] == "failed"
    assert "→" in body.decode()  # names as they are, in UTF-8
