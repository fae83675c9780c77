"""The recipes' virtualenvs: one per orchestrator, built in parallel, reused while nothing changed.

Dagster, Airflow and Prefect pin different versions of the same packages, so each gets a
virtualenv of its own, ``.recipes/<name>/venv`` (gitignored): this checkout installed in editable
mode (the examples run against the API as it is in ``src/``) with the ``recipe-<name>`` extra.
A venv is reused while its stamp (pyproject.toml, this file, the interpreter, the checkout's
place) matches.

The installer is uv (from PyPI, into ``.recipes/uv``, with its cache in ``.recipes/uv-cache``):
pip takes minutes over these dependency sets where uv takes seconds. Built in two steps, because
an editable install writes ``src/airbyte_fleet.egg-info`` into the checkout and three at once
would race on it:

1. in parallel, one resolve per venv of what ``pip install -e '.[recipe-<name>]'`` resolves (the
   project's dependencies, its extra, its build requirements), read from pyproject.toml;
2. one venv at a time, the editable install of the checkout itself, without dependencies.

Airflow and Prefect keep their state in a SQLite database that must be migrated before a first
run (Airflow ~5 s, Prefect ~15 s); each build migrates one into ``.recipes/<name>/template`` and
a test copies it into a home of its own, so a run starts from a fresh, current database.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".recipes"
BUILD_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class Recipe:
    """One orchestrator: its extra, its example, and how its state database is prepared."""

    name: str
    example: str
    dist: str  # the distribution whose version the tests report
    # The command (a script in the venv's bin/, its arguments) that creates the orchestrator's
    # database in its home folder, and that file's name.
    migrate: tuple[str, ...] = ()
    database: str | None = None

    @property
    def extra(self) -> str:
        return f"recipe-{self.name}"

    @property
    def home(self) -> Path:
        return CACHE / self.name

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    @property
    def template(self) -> Path:
        return self.home / "template"

    @property
    def log(self) -> Path:
        return self.home / "build.log"

    def bin(self, script: str) -> Path:
        return self.venv / "bin" / script

    @property
    def how_to_run(self) -> str:
        return (
            f"building .recipes/{self.name}/venv (the checkout with its extra {self.extra}) "
            "needs PyPI; with CI=true this is a failure"
        )


DAGSTER = Recipe("dagster", "examples/dagster_assets.py", "dagster")
AIRFLOW = Recipe(
    "airflow",
    "examples/airflow_dag.py",
    "apache-airflow",
    migrate=("airflow", "db", "migrate"),
    database="airflow.db",
)
PREFECT = Recipe(
    "prefect",
    "examples/prefect_flow.py",
    "prefect",
    migrate=("prefect", "server", "database", "upgrade", "-y"),
    database="prefect.db",
)
RECIPES = (DAGSTER, AIRFLOW, PREFECT)


@dataclass
class Built:
    """What building (or reusing) one venv gave."""

    recipe: Recipe
    error: str | None = None
    reused: bool = False
    seconds: float = 0.0
    versions: dict[str, str] = field(default_factory=dict)


def orchestrator_env(home: Path) -> dict[str, str]:
    """The variables that keep an orchestrator's state in *home*, and Prefect's telemetry off."""
    return {
        # Airflow: its database and config in home; only the DAG folder the test names; no
        # example DAGs to parse.
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # Prefect: its database in home; no telemetry (there is no route to it here, and its
        # failure is logged as an error); a cold server may take longer than the 20 s default.
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }


def _stamp() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(Path(__file__).read_bytes())  # how a venv is built is part of what it is
    digest.update(sys.version.encode())
    digest.update(str(ROOT).encode())
    return digest.hexdigest()


def _requirements(recipe: Recipe) -> list[str]:
    """What ``pip install -e '.[recipe-<name>]'`` resolves, the project itself aside."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return [
        *pyproject["build-system"]["requires"],
        *pyproject["project"]["dependencies"],
        *pyproject["project"]["optional-dependencies"][recipe.extra],
    ]


def clean_env() -> dict[str, str]:
    """This process's environment less what would steer a venv's pip or an orchestrator: an
    active virtualenv, a PYTHONPATH, a developer's own Airflow, Prefect or Dagster settings."""
    drop = {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PIP_REQUIRE_VIRTUALENV"}
    return {
        k: v
        for k, v in os.environ.items()
        if k not in drop and not k.startswith(("AIRFLOW", "PREFECT_", "DAGSTER_"))
    }


def _run(argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None) -> str | None:
    """Run one build step, its output appended to *log*; None, or what went wrong."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        try:
            done = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**clean_env(), **(env or {})},
                timeout=BUILD_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return f"`{' '.join(argv[:4])} ...` took over {BUILD_TIMEOUT_S:.0f} s"
    if done.returncode == 0:
        return None
    tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-3:]
    return (
        f"`{' '.join(argv[:4])} ...` exited {done.returncode}: {' | '.join(tail)[-600:]} "
        f"(log: {log})"
    )


def _versions(recipe: Recipe) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    )
    probe = subprocess.run(
        [str(recipe.bin("python")), "-c", code, recipe.dist, "mypy", "airbyte-fleet"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    versions: dict[str, str] = json.loads(probe.stdout) if probe.returncode == 0 else {}
    return versions


def _uv() -> tuple[Path | None, str | None]:
    """The uv this cache installs with: ``.recipes/uv/bin/uv``, installed by pip if missing."""
    uv = CACHE / "uv" / "bin" / "uv"
    if uv.exists():
        return uv, None
    log = CACHE / "uv.log"
    shutil.rmtree(CACHE / "uv", ignore_errors=True)
    pip = [str(CACHE / "uv" / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    for argv in (
        [sys.executable, "-m", "venv", str(CACHE / "uv")],
        [*pip, "--no-input", "install", "--quiet", "uv>=0.5,<1"],
    ):
        if error := _run(argv, log):
            return None, error
    return uv, None


def _build(recipe: Recipe, uv: Path, stamp: str, editable_lock: threading.Lock) -> Built:
    started = time.monotonic()
    stamp_file = recipe.home / "stamp"
    if recipe.bin("python").exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
        return Built(recipe, reused=True, versions=_versions(recipe))
    shutil.rmtree(recipe.home, ignore_errors=True)
    recipe.home.mkdir(parents=True)
    into = ["--quiet", "--python", str(recipe.bin("python"))]
    uv_env = {"UV_CACHE_DIR": str(CACHE / "uv-cache")}
    steps = [
        [str(uv), "venv", "--quiet", "--python", sys.executable, str(recipe.venv)],
        [str(uv), "pip", "install", *into, *_requirements(recipe)],
    ]
    for argv in steps:
        if error := _run(argv, recipe.log, uv_env):
            return Built(recipe, error=error)
    with editable_lock:
        argv = [
            str(uv),
            "pip",
            "install",
            *into,
            "--no-deps",
            "--no-build-isolation",
            "-e",
            str(ROOT),
        ]
        if error := _run(argv, recipe.log, uv_env):
            return Built(recipe, error=error)
    if recipe.migrate:
        recipe.template.mkdir()
        argv = [str(recipe.bin(recipe.migrate[0])), *recipe.migrate[1:]]
        if error := _run(argv, recipe.log, orchestrator_env(recipe.template)):
            return Built(recipe, error=error)
    stamp_file.write_text(stamp)
    return Built(recipe, seconds=time.monotonic() - started, versions=_versions(recipe))


@contextmanager
def _cache_lock() -> Iterator[None]:
    # Two test sessions on one checkout (a developer's and an editor's) build one at a time.
    CACHE.mkdir(exist_ok=True)
    with (CACHE / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_all(recipes: Sequence[Recipe] = RECIPES) -> dict[str, Built]:
    """Build (or reuse) every recipe's venv, all at once; a failure is reported, not raised."""
    stamp = _stamp()
    editable_lock = threading.Lock()
    with _cache_lock():
        uv, error = _uv()
        if uv is None:
            return {recipe.name: Built(recipe, error=error) for recipe in recipes}
        with ThreadPoolExecutor(len(recipes)) as pool:
            futures = [pool.submit(_build, r, uv, stamp, editable_lock) for r in recipes]
            return {future.result().recipe.name: future.result() for future in futures}


if __name__ == "__main__":
    # `python tests/recipes/venvs.py`: build them ahead of a test run, and say how long it took.
    began = time.monotonic()
    for built in build_all().values():
        state = built.error or ("reused" if built.reused else f"built in {built.seconds:.0f} s")
        print(f"{built.recipe.name}: {state} {built.versions}")
    print(f"{time.monotonic() - began:.1f} s in all")
