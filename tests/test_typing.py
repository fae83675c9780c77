"""The Python API type-checks as documented, for a user whose mypy has no pydantic plugin."""

from __future__ import annotations

from pathlib import Path

import pytest
from mypy import api as mypy_api

HERE = Path(__file__).parent
SRC = HERE.parent / "src"

_MISTAKES = """
from airbyte_fleet import RunOptions, Selection, run_syncs_blocking

run_syncs_blocking({"tag": ["nightly"]})
run_syncs_blocking({"all": True}, {"timeout": ["45m"]})
RunOptions(on_interrupt="ignore")
Selection(tag=["x"])
"""


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """One mypy --strict run over the usage file and a file of mistakes (mypy is slow to start)."""
    work = tmp_path_factory.mktemp("typing")
    mistakes = work / "mistakes.py"
    mistakes.write_text(_MISTAKES)
    config = work / "mypy.ini"
    config.write_text(f"[mypy]\nstrict = True\nmypy_path = {SRC}\n")
    stdout, stderr, _ = mypy_api.run(
        [
            "--config-file",
            str(config),
            "--cache-dir",
            str(work / "cache"),
            "--no-error-summary",
            str(HERE / "typing" / "api_usage.py"),
            str(mistakes),
        ]
    )
    assert not stderr, stderr
    report: dict[str, list[str]] = {"usage": [], "mistakes": []}
    for line in stdout.splitlines():
        if " error: " not in line:
            continue
        report["mistakes" if line.startswith(str(mistakes)) else "usage"].append(line)
    return report


def test_the_documented_usage_type_checks(mypy_report: dict[str, list[str]]) -> None:
    assert mypy_report["usage"] == []


def test_mistakes_in_a_call_are_type_errors(mypy_report: dict[str, list[str]]) -> None:
    errors = mypy_report["mistakes"]
    lines = sorted({int(line.split(":")[1]) for line in errors})
    # One per mistake, each on its own line of _MISTAKES (line 1 is blank, 2 the import).
    assert lines == [4, 5, 6, 7], "\n".join(errors)
    assert any('"tag"' in line for line in errors)
