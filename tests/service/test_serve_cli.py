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


@pytest.mark.parametrize(
    "token", ["tökén-0123456789abcdef", "fifteen-chars-1", "\u00e9t\u00e9-Secret-0123456789"]
)
async def test_serve_refuses_a_token_unfit_for_its_bind_in_one_sentence(
    token: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    # Airbyte is never asked: the token is checked before anything starts.
    env.update(
        AIRBYTE_BASE_URL="http://127.0.0.1:9/api/public/v1",
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET="sim-secret",
        AIRBYTE_FLEET_API_TOKEN=token,
    )
    state = tmp_path / "state"
    done = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "airbyte_fleet",
            "serve",
            "--host",
            "0.0.0.0",
            "--port",
            "0",
            "--state-dir",
            str(state),
        ],
        env=env,
        check=False,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert done.stdout == b""
    assert len(err.splitlines()) == 1, err
    # One sentence, naming the variable and how to make a good token (a line or a JSON record).
    assert "AIRBYTE_FLEET_API_TOKEN " in err
    assert "make one with 'openssl rand -hex 32'" in err or "make a longer one with" in err
    assert token not in err
    assert not state.exists()
