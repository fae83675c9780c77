"""The real CLI as a subprocess against the simulator over loopback."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

import anyio
import pytest

from conftest import SimFactory

pytestmark = pytest.mark.anyio

SECRET = "cli-Secret-4242-abcd"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(extra)
    return env


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    result = await anyio.run_process(
        [sys.executable, "-m", "airbyte_fleet", *args], env=env, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def _creds(root: str, **over: str) -> dict[str, str]:
    values = {
        "AIRBYTE_BASE_URL": root,
        "AIRBYTE_CLIENT_ID": "sim-client",
        "AIRBYTE_CLIENT_SECRET": SECRET,
        "USE_SERVER_AUTH": "TRUE",
        "AIRBYTE_AUTH_TYPE": "client_credentials",
    }
    values.update(over)
    return _env(**values)


async def test_connections_json_lists_every_page(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=130, workspaces=2, client_secret=SECRET)
    code, out, err = await _cli("connections", "--output", "json", env=_creds(root))
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)  # stdout is the JSON and nothing else
    assert len(rows) == 130
    assert {r["connection_id"] for r in rows} == {c["connectionId"] for c in sim.connections}
    assert set(rows[0]) == {
        "connection_id",
        "name",
        "workspace_id",
        "status",
        "tags",
        "schedule_type",
    }
    # The ambiguous random port was probed and the public API found.
    log_lines = [json.loads(line) for line in err.splitlines()]
    url = next(line for line in log_lines if line["event"] == "airbyte_url")
    assert url["base_url"] == f"{root}/api/public/v1"
    assert SECRET not in out + err


async def test_connections_table_filters_by_tag(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=12, workspaces=1, client_secret=SECRET)
    tag = sim.connections[0]["tags"][0]["name"]
    expected = [c for c in sim.connections if tag in {t["name"] for t in c["tags"]}]
    code, out, err = await _cli(
        "connections", "--tag", tag, "--log-format", "console", env=_creds(root)
    )
    assert code == 0, err
    assert f"{len(expected)} connections" in out
    for c in expected:
        assert c["connectionId"] in out


def _fatal(err: str) -> dict[str, Any]:
    """The one fatal line of a command whose log lines are JSON: it is a JSON line too, the last."""
    lines = [json.loads(line) for line in err.splitlines()]  # every line is JSON
    fatal = [line for line in lines if line["event"] == "fatal"]
    assert fatal == [lines[-1]]
    assert set(fatal[0]) == {"event", "error", "exit_code", "level", "timestamp"}
    assert fatal[0]["level"] == "error"
    return fatal[0]


async def test_bad_credentials_exit_3_with_one_sentence(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    code, out, err = await _cli(
        "connections", env=_creds(root, AIRBYTE_CLIENT_SECRET="not-the-secret-123")
    )
    assert code == 3
    assert out == ""
    fatal = _fatal(err)
    assert fatal["exit_code"] == 3
    assert "check AIRBYTE_CLIENT_ID and AIRBYTE_CLIENT_SECRET" in fatal["error"]
    assert "not-the-secret-123" not in err
    assert "Traceback" not in err
    assert sim.count("POST", "/jobs") == 0


@pytest.mark.parametrize(
    ("where", "extra"),
    [("flag", ["--log-format", "console"]), ("variable", [])],
)
async def test_console_logs_end_with_a_plain_fatal_line(
    make_sim: SimFactory, where: str, extra: list[str]
) -> None:
    _, root = await make_sim(connections=3, client_secret=SECRET)
    env = _creds(root, AIRBYTE_CLIENT_SECRET="not-the-secret-123")
    if where == "variable":
        env["AIRBYTE_FLEET_LOG_FORMAT"] = "console"
    code, _, err = await _cli(*extra, "connections", env=env)
    assert code == 3
    message = [line for line in err.splitlines() if line.startswith("airbyte-fleet:")]
    assert len(message) == 1
    assert message[0] == err.splitlines()[-1]
    assert "check AIRBYTE_CLIENT_ID and AIRBYTE_CLIENT_SECRET" in message[0]
    assert not any(line.startswith("{") for line in err.splitlines())


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--log-level", "warning", "connections"], {}),
        (["connections", "--log-level", "warning"], {}),
        (["connections"], {"AIRBYTE_FLEET_LOG_LEVEL": "warning"}),
        (["connections", "--log-level", "info"], {"AIRBYTE_FLEET_LOG_LEVEL": "error"}),
    ],
)
async def test_log_level_before_or_after_the_command_or_from_the_variable(
    make_sim: SimFactory, argv: list[str], env: dict[str, str]
) -> None:
    _, root = await make_sim(connections=3, client_secret=SECRET)
    code, out, err = await _cli(*argv, "--output", "json", env={**_creds(root), **env})
    assert code == 0, err
    assert len(json.loads(out)) == 3
    # airbyte_url is an info line: shown exactly when the level asked for lets info through.
    shown = [json.loads(line)["event"] for line in err.splitlines()]
    assert ("airbyte_url" in shown) is (argv[-1] == "info")


async def test_a_bad_log_variable_exits_2_before_any_request(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    env = {**_creds(root), "AIRBYTE_FLEET_LOG_LEVEL": "loud"}
    code, out, err = await _cli("connections", env=env)
    assert (code, out) == (2, "")
    assert err == (
        "airbyte-fleet: AIRBYTE_FLEET_LOG_LEVEL='loud' is not one of debug, info, warning, "
        "error; set one of them or unset it.\n"
    )
    assert sim.exchanges == []


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("localhost:8000", "has no scheme"),
        ("http://localhost:80a0", "not a number from 1 to 65535"),
        ("http://localhost:8000/api/v1", "internal Configuration API"),
    ],
)
async def test_bad_url_exits_2_before_any_request(url: str, fragment: str) -> None:
    code, out, err = await _cli("connections", env=_creds(url))
    assert out == ""
    assert code == 2
    assert fragment in _fatal(err)["error"]
    assert "Traceback" not in err


async def test_unreachable_exits_3(anyio_backend: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = await _cli("connections", env=_creds(f"http://127.0.0.1:{port}"))
    assert code == 3
    assert "Could not reach Airbyte" in err
    assert "Traceback" not in err


async def test_missing_secret_exits_2(anyio_backend: str) -> None:
    env = _env(AIRBYTE_BASE_URL="http://127.0.0.1:8000", AIRBYTE_CLIENT_ID="x")
    code, _, err = await _cli("connections", env=env)
    assert code == 2
    assert "AIRBYTE_CLIENT_SECRET is not set" in err


async def test_usage_error_exits_2_in_one_line(anyio_backend: str) -> None:
    code, out, err = await _cli("connections", "--output", "yaml", env=_env())
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "invalid choice" in err


async def test_basic_auth_against_old_oss(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=4, auth="basic", layouts=("legacy",))
    env = _env(
        AIRBYTE_BASE_URL=root + "/v1", AIRBYTE_USERNAME="airbyte", AIRBYTE_PASSWORD="password"
    )
    code, out, err = await _cli("connections", "--output", "json", env=env)
    assert code == 0, err
    assert len(json.loads(out)) == 4
    assert all(
        e.request_headers.get("authorization", "").startswith("Basic ")
        for e in sim.exchanges
        if e.route == "/connections"
    )
