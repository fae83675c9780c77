"""`airbyte-fleet serve` as a user starts it: a subprocess, env vars, a token, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import anyio
import pytest

from conftest import SimFactory

pytestmark = pytest.mark.anyio

TOKEN = "serve-token-0123456789abcdef"


async def test_serve_runs_a_submitted_run_and_stops_on_sigterm(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=5)
    config = tmp_path / "fleet.toml"
    config.write_text('[schedules.nightly]\ncron = "0 2 * * *"\ntags = ["nightly"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET="sim-secret",
        AIRBYTE_FLEET_API_TOKEN=TOKEN,
    )
    process = await anyio.open_process(
        [
            sys.executable,
            "-m",
            "airbyte_fleet",
            "serve",
            "--port",
            "0",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "state"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with anyio.fail_after(30):
            line = (await process.stdout.receive()).decode()
            url = line.split("listening on ", 1)[1].split()[0]
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}/healthz") as reply:
                    assert reply.status == 200
                async with http.post(f"{url}/runs", json={"selection": {"all": True}}) as reply:
                    assert reply.status == 401
                body = {"selection": {"all": True}, "options": {"poll_interval": "50ms"}}
                async with http.post(f"{url}/runs", json=body, headers=headers) as reply:
                    assert reply.status == 202
                    run_id = (await reply.json())["run_id"]
                state = ""
                while state != "finished":
                    await anyio.sleep(0.05)
                    async with http.get(f"{url}/runs/{run_id}", headers=headers) as reply:
                        view = await reply.json()
                        state = view["state"]
            assert view["result"]["counts"]["succeeded"] == 5
            assert sim.count("POST", "/jobs") == 5
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
            err = b""
            async for chunk in process.stderr:
                err += chunk
    finally:
        if process.returncode is None:
            process.kill()
    assert code == 0
    events = [
        json.loads(line)["event"] for line in err.decode().splitlines() if line.startswith("{")
    ]
    assert "schedules" in events  # the config file's schedule is running in the worker
    assert "stopping" in events
    assert TOKEN not in err.decode()
