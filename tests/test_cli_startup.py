"""`airbyte-fleet --help` and `--version` answer at once: they load no HTTP client, no engine, no
worker and no pydantic model (those took 500-750 ms, most of it imports). Asserted on what gets
imported, not on a time, which a busy machine would make flaky."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# A module whose name starts with one of these must not be loaded to answer --help or --version.
HEAVY = (
    "aiohttp",
    "pydantic",
    "structlog",
    "rich",
    "asyncio",
    "sqlite3",
    "airbyte_fleet.api",
    "airbyte_fleet.engine",
    "airbyte_fleet.journal",
    "airbyte_fleet.runner",
    "airbyte_fleet.service",
    "airbyte_fleet.simulator",
    "airbyte_fleet.cli.commands",
)


def _imported(*argv: str) -> tuple[str, list[str]]:
    """Run the command as a user would (``python -m airbyte_fleet`` is what the console script
    runs too) with ``-X importtime``; its stdout and every module it imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRBYTE_")}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "airbyte_fleet", *argv],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    modules = [
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    ]
    assert "airbyte_fleet.cli" in modules  # the listing is real
    return done.stdout, modules


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["-h"], ["runs", "--help"]])
def test_help_and_version_import_nothing_heavy(argv: list[str]) -> None:
    out, modules = _imported(*argv)
    if argv == ["--version"]:
        assert out.startswith("airbyte-fleet 0.")
    elif argv == ["runs", "--help"]:
        # The default state directory is shown without loading the journal to learn it.
        assert ".airbyte-fleet" in out
    else:
        assert "COMMAND" in out
    heavy = sorted({m for m in modules if m.startswith(HEAVY)})
    assert heavy == []


def test_a_light_command_still_loads_what_it_needs() -> None:
    # The other side of the coin: `run --help` builds the run flags from the options' model.
    out, modules = _imported("run", "--help")
    assert "--max-concurrency N" in out
    assert "airbyte_fleet.engine.options" in modules
    assert not any(m.startswith(("airbyte_fleet.service", "airbyte_fleet.runner")) for m in modules)
