"""The shape of the code that the design depends on: data flows one way.

config -> plan -> engine -> events -> sinks; the run's one home (``runner/``) wires them for the CLI,
the worker and the Python API. Each rule below is one arrow that must not point backwards.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "airbyte_fleet"


def _imports(where: str) -> set[str]:
    """Every module imported under *where* (a folder or a ``.py`` file of the package)."""
    target = PACKAGE / where
    paths = [target] if target.suffix == ".py" else list(target.rglob("*.py"))
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(("." * node.level) + node.module)
            elif isinstance(node, ast.ImportFrom):
                found.add("." * node.level)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


@pytest.mark.parametrize(
    ("where", "forbidden"),
    [
        # The simulator is a second, independent reading of the spec: no shared code with the client.
        ("simulator", ("airbyte_fleet.api", "airbyte_fleet.engine", "airbyte_fleet.config", "..")),
        # The client knows nothing of runs; it takes its version from _version, not the package
        # root (whose __init__ names the engine and config).
        (
            "api",
            (
                "airbyte_fleet.engine",
                "airbyte_fleet.journal",
                "airbyte_fleet.runner",
                "airbyte_fleet.sinks",
                "airbyte_fleet.cli",
                "airbyte_fleet.service",
                "airbyte_fleet.simulator",
                "airbyte_fleet.config",
                "airbyte_fleet.settings_file",
            ),
        ),
        # The transport knows no endpoint.
        ("api/_transport.py", ("airbyte_fleet.api.client", "airbyte_fleet.api.models")),
        # The engine knows no CLI, no HTTP server, no storage, no screen and no configuration.
        (
            "engine",
            (
                "airbyte_fleet.cli",
                "airbyte_fleet.sinks",
                "airbyte_fleet.service",
                "airbyte_fleet.simulator",
                "airbyte_fleet.journal",
                "airbyte_fleet.runner",
                "airbyte_fleet.report",
                "airbyte_fleet.config",
                "airbyte_fleet.settings_file",
                "sqlite3",
                "rich",
                "aiohttp.web",
            ),
        ),
        # Events (and the PlannedSync they carry) are pure data: whoever stores or shows them
        # does not load the HTTP client for it.
        ("engine/events.py", ("airbyte_fleet.api", "aiohttp")),
        # The journal is a store of events: it knows no run logic (how a run is planned, run,
        # watched, or turned into a result), nor who runs it.
        (
            "journal",
            (
                "airbyte_fleet.engine.run",
                "airbyte_fleet.engine._core",
                "airbyte_fleet.engine.trigger",
                "airbyte_fleet.engine.follow",
                "airbyte_fleet.engine.plan",
                "airbyte_fleet.engine.watch",
                "airbyte_fleet.engine.result",
                "airbyte_fleet.runner",
                "airbyte_fleet.cli",
                "airbyte_fleet.service",
                "airbyte_fleet.sinks",
            ),
        ),
        # Coordination keeps who runs what (leases, the queue, claims): no run logic, no HTTP, no
        # screen; it reads the journal's schema (one database) and answers the engine's hook.
        (
            "coordination",
            (
                "airbyte_fleet.engine.run",
                "airbyte_fleet.engine._core",
                "airbyte_fleet.engine.trigger",
                "airbyte_fleet.engine.follow",
                "airbyte_fleet.engine.plan",
                "airbyte_fleet.engine.watch",
                "airbyte_fleet.engine.result",
                "airbyte_fleet.api",
                "airbyte_fleet.runner",
                "airbyte_fleet.cli",
                "airbyte_fleet.service",
                "airbyte_fleet.sinks",
                "aiohttp",
            ),
        ),
        # The run's home serves the CLI and the worker; it knows neither.
        ("runner", ("airbyte_fleet.cli", "airbyte_fleet.service", "aiohttp.web")),
        # The report draws a run from its events and result (read back through the runner's
        # replay); it runs nothing and serves nothing: the CLI and the worker call it.
        (
            "report",
            (
                "airbyte_fleet.cli",
                "airbyte_fleet.service",
                "airbyte_fleet.sinks",
                "airbyte_fleet.simulator",
                "airbyte_fleet.api",
                "airbyte_fleet.engine.run",
                "airbyte_fleet.engine.trigger",
                "airbyte_fleet.engine.follow",
                "airbyte_fleet.engine.watch",
                "airbyte_fleet.runner.session",
                "aiohttp",
            ),
        ),
        # Sinks render events; they do not run anything.
        (
            "sinks",
            (
                "airbyte_fleet.cli",
                "airbyte_fleet.service",
                "airbyte_fleet.runner",
                "airbyte_fleet.engine.run",
            ),
        ),
        # The error base is a leaf that every layer may import.
        ("errors.py", ("airbyte_fleet.api", "airbyte_fleet.engine", "airbyte_fleet.config")),
    ],
)
def test_layers_do_not_reach_sideways(where: str, forbidden: tuple[str, ...]) -> None:
    imports = _imports(where)
    assert imports  # the walk really found the modules
    bad = sorted(i for i in imports if i.startswith(forbidden) or i == "airbyte_fleet")
    assert not bad, f"{where} imports {bad}"


def test_no_module_but_the_cli_imports_the_cli() -> None:
    offenders = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] not in ("cli", "__main__.py")
        and any(i.startswith("airbyte_fleet.cli") for i in _imports(str(path.relative_to(PACKAGE))))
    )
    assert not offenders, f"only the CLI may import the CLI: {offenders}"
