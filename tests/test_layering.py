"""The shape of the code that the design depends on: data flows one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "airbyte_fleet"


def _imports(folder: str) -> set[str]:
    found: set[str] = set()
    for path in (PACKAGE / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(("." * node.level) + node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        # The simulator is a second, independent reading of the spec: no shared code with the client.
        ("simulator", ("airbyte_fleet.api", "airbyte_fleet.engine", "airbyte_fleet.config", "..")),
        # The client knows nothing of runs.
        (
            "api",
            (
                "airbyte_fleet.engine",
                "airbyte_fleet.sinks",
                "airbyte_fleet.cli",
                "airbyte_fleet.simulator",
            ),
        ),
        # The engine knows no CLI, no HTTP server and no sink.
        (
            "engine",
            (
                "airbyte_fleet.cli",
                "airbyte_fleet.sinks",
                "airbyte_fleet.service",
                "airbyte_fleet.simulator",
                "aiohttp.web",
            ),
        ),
    ],
)
def test_layers_do_not_reach_sideways(folder: str, forbidden: tuple[str, ...]) -> None:
    imports = _imports(folder)
    assert imports  # the walk really found the modules
    bad = sorted(i for i in imports if i.startswith(forbidden))
    assert not bad, f"{folder}/ imports {bad}"
