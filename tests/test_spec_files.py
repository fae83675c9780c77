"""Finding Airbyte's spec files on a fresh machine: beside the checkout, from the environment,
fetched at the pinned commit (checked against sha256), or not at all (one line, a failure in CI)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from spec_files import PINNED, SPEC_DIR_ENV, SpecDirError, fetch_pinned, locate, spec_source

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def real_specs() -> Path:
    source = spec_source()
    if source.directory is None:
        pytest.skip(source.how)
    return source.directory


@pytest.fixture
def upstream(tmp_path: Path, real_specs: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server laid out like raw.githubusercontent.com at the pinned commit."""
    root = tmp_path / "upstream"
    for name, (path, _) in PINNED.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(real_specs / name, root / path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_pins_are_the_files_beside_the_checkout(real_specs: Path) -> None:
    for name, (_, digest) in PINNED.items():
        assert hashlib.sha256((real_specs / name).read_bytes()).hexdigest() == digest, name


def test_the_environment_variable_wins_and_must_name_a_complete_folder(
    tmp_path: Path, real_specs: Path
) -> None:
    found = locate(env={SPEC_DIR_ENV: str(real_specs)}, sibling=tmp_path / "none")
    assert found.directory == real_specs
    with pytest.raises(SpecDirError, match="lacks"):
        locate(env={SPEC_DIR_ENV: str(tmp_path)}, sibling=real_specs)


def test_beside_the_checkout_is_found_without_a_network(tmp_path: Path, real_specs: Path) -> None:
    found = locate(env={}, sibling=real_specs, cache=tmp_path, base_url="http://127.0.0.1:9/")
    assert found.directory == real_specs
    assert not any(tmp_path.iterdir())  # nothing fetched


def test_missing_specs_are_fetched_once_and_checked(
    tmp_path: Path, upstream: tuple[str, Path]
) -> None:
    base_url, _ = upstream
    cache = tmp_path / "cache"
    found = locate(env={}, sibling=tmp_path / "none", cache=cache, base_url=base_url)
    assert found.directory == cache
    assert sorted(p.name for p in cache.iterdir()) == sorted(PINNED)
    # A second session uses the cache: no server needed.
    again = locate(env={}, sibling=tmp_path / "none", cache=cache, base_url="http://127.0.0.1:9/")
    assert again.directory == cache


def test_a_file_with_other_bytes_is_refused_and_not_kept(
    tmp_path: Path, upstream: tuple[str, Path]
) -> None:
    base_url, root = upstream
    name, (path, _) = next(iter(PINNED.items()))
    (root / path).write_bytes((root / path).read_bytes() + b"\n# tampered\n")
    cache = tmp_path / "cache"
    with pytest.raises(SpecDirError, match="not the pinned"):
        fetch_pinned(cache, base_url=base_url)
    assert not (cache / name).exists()
    assert not list(cache.glob("*.part"))


def test_without_specs_or_network_the_checks_are_off_with_one_line(tmp_path: Path) -> None:
    found = locate(
        env={}, sibling=tmp_path / "none", cache=tmp_path / "c", base_url="http://127.0.0.1:9/"
    )
    assert found.directory is None
    assert "\n" not in found.how
    assert SPEC_DIR_ENV in found.how
    assert "spec checks are off" in found.how


def _pytest_without_specs(tmp_path: Path, *, ci: str) -> subprocess.CompletedProcess[str]:
    """This suite, run on a fake machine: a checkout with no specs beside it and no network."""
    checkout = tmp_path / "checkout"
    shutil.copytree(TESTS, checkout / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(TESTS.parent / "pyproject.toml", checkout / "pyproject.toml")
    env = {k: v for k, v in os.environ.items() if k not in (SPEC_DIR_ENV, "CI")}
    env.update(
        CI=ci,
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        # No network: every fetch goes to a proxy that refuses connections.
        https_proxy="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        no_proxy="",
        NO_PROXY="",
    )
    # One module whose simulator checks its answers, one about the spec checks themselves.
    targets = ["tests/simulator/test_control.py", "tests/test_spec_validation.py"]
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_a_fresh_clone_without_specs_runs_and_says_how_to_get_them(tmp_path: Path) -> None:
    done = _pytest_without_specs(tmp_path, ci="")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if "spec checks are off" in line]
    assert len(lines) == 1, done.stdout[-3000:]
    assert SPEC_DIR_ENV in lines[0]


@pytest.mark.slow
def test_ci_without_specs_fails(tmp_path: Path) -> None:
    done = _pytest_without_specs(tmp_path, ci="true")
    assert done.returncode != 0
    assert "CI=true" in done.stdout + done.stderr
    assert "spec checks are off" in done.stdout + done.stderr
