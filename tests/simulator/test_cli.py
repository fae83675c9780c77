"""The command line: argument handling and a real subprocess."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import airbyte_fleet.simulator
from airbyte_fleet.simulator import SimulatorOptions, main
from airbyte_fleet.simulator._cli import _parser

SRC = Path(airbyte_fleet.simulator.__file__).resolve().parents[2]


def test_help_and_usage_errors_return_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: airbyte-fleet simulate")
    assert "sim-secret" not in out
    assert main(["--sync-seconds", "fast"]) == 2
    assert main(["--rate-429", "3"]) == 2
    assert "rate_429" in capsys.readouterr().err


def test_no_flag_is_matched_by_a_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    # `--conn 3` used to mean `--connections 3`; a typo must not start a different world.
    with pytest.raises(SystemExit) as stopped:
        _parser("sim").parse_args(["--conn", "3"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == ("sim: unrecognized arguments: --conn 3; see 'sim --help'.\n")


def test_help_describes_every_flag_with_its_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["--help"]) == 0
    lines = capsys.readouterr().out.splitlines()
    entries: list[str] = []  # one per flag, its wrapped lines joined
    for line in lines[lines.index("options:") + 1 :]:
        if line.startswith("  -"):
            entries.append(line.strip())
        else:
            entries[-1] += " " + line.strip()
    flags = [" ".join(entry.split()) for entry in entries if entry.startswith("--")]
    assert len(flags) == len(dataclasses.fields(SimulatorOptions)) + 2  # and --host, --port
    defaults = SimulatorOptions()
    low, high = defaults.sync_seconds
    for expected in (
        "--host HOST address to listen on (default: 127.0.0.1)",
        "--port PORT 0 picks a free port (default: 8000)",
        f"(default: {defaults.connections})",
        f"(default: {low:g}:{high:g})",
        f"--client-id ID the client id a token request must send (default: {defaults.client_id})",
        f"(default: {defaults.failure_rate:g})",
        "--down-window START:END seconds after start during which every request is dropped "
        "(default: none)",
    ):
        assert any(expected in flag for flag in flags), expected
    for flag in flags:
        assert "(default: " in flag, flag
    assert defaults.client_secret not in "\n".join(lines)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_subprocess_prints_the_url_serves_and_stops_on_signal(signum: signal.Signals) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airbyte_fleet.simulator",
            "--port",
            "0",
            "--connections",
            "3",
            "--client-secret",
            "top-secret-value",
            "--sync-seconds",
            "0:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        root = line.split()[-1]
        with urllib.request.urlopen(f"{root}/v1/health", timeout=5) as reply:
            assert reply.read() == b"Successful operation"
        request = urllib.request.Request(
            f"{root}/_simulator/faults", data=b'{"rate_429": 0.0}', method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert json.load(reply)["rate_429"] == 0.0
        with urllib.request.urlopen(f"{root}/_simulator/stats", timeout=5) as reply:
            assert json.load(reply)["requests"] == {"GET /health": 1}
        process.send_signal(signum)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert out == ""
    assert "top-secret-value" not in err
    assert "Traceback" not in err
