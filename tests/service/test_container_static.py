"""The container tests' gating and the Dockerfile's rules, checked without building anything.

The container tests (``test_container.py``) skip with one clear line where podman is missing and
fail under ``CI=true``; ``-m "not container"`` leaves all of them out. The Dockerfile runs as a
numeric user (Kubernetes' ``runAsNonRoot`` cannot check a name) and installs pinned versions.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "tests" / "service" / "test_container.py"


def _pytest(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_not_container_deselects_every_container_test() -> None:
    done = _pytest("--collect-only", "-q", "-m", "not container", str(MODULE), env=dict(os.environ))
    assert "no tests collected" in done.stdout, done.stdout[-2000:]
    assert re.search(r"\((\d+) deselected\)", done.stdout), done.stdout[-2000:]
    selected = _pytest("--collect-only", "-q", "-m", "container", str(MODULE), env=dict(os.environ))
    assert "::test_serve_runs_syncs_and_stops_gracefully_on_sigterm" in selected.stdout


def test_only_unavailable_may_skip() -> None:
    """A skip anywhere else would let a broken image or `serve` pass in CI."""
    tree = ast.parse(MODULE.read_text())
    allowed = next(
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name == "_unavailable"
    )
    inside = {id(node) for node in ast.walk(allowed)}
    skips = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("skip", "xfail", "importorskip")
        and id(node) not in inside
    ]
    assert not skips, f"test_container.py skips outside _unavailable at lines {skips}"


def _without_podman(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    empty = tmp_path / "bin"  # a PATH with no podman, no bash: a machine without them
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PATH=str(empty), CI=ci)
    return _pytest("-q", "-ra", str(MODULE), env=env)


@pytest.mark.slow
def test_without_podman_the_container_tests_skip_with_how_to_get_it(tmp_path: Path) -> None:
    done = _without_podman(tmp_path, ci="")
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" not in done.stdout
    reasons = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons, done.stdout[-3000:]
    for reason in reasons:  # one line per test, each saying what is missing and how to get it
        assert "podman is not installed" in reason
        assert "scripts/container-base.sh" in reason


@pytest.mark.slow
def test_without_podman_in_ci_the_container_tests_fail(tmp_path: Path) -> None:
    done = _without_podman(tmp_path, ci="true")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "skipped" not in done.stdout.splitlines()[-1]
    assert "CI=true: the container tests must run in CI" in done.stdout


def _instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), as (keyword, arguments)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_the_image_runs_as_a_numeric_non_root_user() -> None:
    users = [rest for keyword, rest in _instructions() if keyword == "USER"]
    assert users, "the Dockerfile sets no USER"
    for user in users:
        match = re.fullmatch(r"(\d+)(?::(\d+))?", user)
        assert match, f"USER {user}: use numeric ids (hadolint DL3066, runAsNonRoot)"
        assert match.group(1) != "0", user
    assert users[-1] == "10001:10001"


def test_the_image_installs_pinned_dependencies() -> None:
    runs = [rest for keyword, rest in _instructions() if keyword == "RUN"]
    installs = [r for r in runs if "pip install" in r and "--no-deps" not in r]
    assert installs, "no dependency install in the Dockerfile"
    for command in installs:
        assert re.search(r"(-c|--constraint)\s+\S*constraints\.txt", command), command
    copies = [rest for keyword, rest in _instructions() if keyword == "COPY"]
    assert any("constraints.txt" in c for c in copies)
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!constraints.txt" in dockerignore


def test_constraints_pin_every_runtime_dependency_within_its_range() -> None:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version.strip()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        wanted = Requirement(dependency)
        name = canonicalize_name(wanted.name)
        assert name in pins, f"{wanted.name} is not in constraints.txt: run `make constraints`"
        assert wanted.specifier.contains(pins[name], prereleases=True), (dependency, pins[name])
