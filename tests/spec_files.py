"""Where the tests find Airbyte's OpenAPI spec files, and how they get them on a fresh machine.

In this order:

1. ``$AIRBYTE_FLEET_SPEC_DIR``, a folder holding the files below (set it and it must hold them);
2. ``../shared/airbyte-api`` beside the checkout, the layout CI uses (its ``SOURCE.txt`` says where
   each file comes from);
3. the same files fetched from airbyte-platform at the pinned commit into a cache folder
   (``$XDG_CACHE_HOME`` or ``~/.cache``), each checked against its sha256, when a network is there.

With none of these the spec checks are off and one line says how to get the files; under
``CI=true`` that is an error, because CI must check every exchange.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "PINNED",
    "REPO_ROOT",
    "SIBLING_DIR",
    "SPEC_DIR_ENV",
    "SpecDirError",
    "SpecSource",
    "fetch_pinned",
    "locate",
    "spec_source",
]

SPEC_DIR_ENV: Final = "AIRBYTE_FLEET_SPEC_DIR"
REPO_ROOT: Final = Path(__file__).resolve().parents[1]
SIBLING_DIR: Final = REPO_ROOT.parent / "shared" / "airbyte-api"

UPSTREAM_COMMIT: Final = "310e6cb6ac0e7bd310fe99bfd505d5c36ba71f2e"
UPSTREAM_BASE: Final = (
    f"https://raw.githubusercontent.com/airbytehq/airbyte-platform/{UPSTREAM_COMMIT}/"
)
#: Local name -> (path in airbyte-platform at UPSTREAM_COMMIT, sha256 of its bytes). The same
#: files, byte for byte, as ``../shared/airbyte-api`` holds (their git blob ids match SOURCE.txt).
PINNED: Final[Mapping[str, tuple[str, str]]] = {
    "public-api-v1.current.api_sdk.yaml": (
        "airbyte-api/server-api/src/main/openapi/api_sdk.yaml",
        "55ddc054e5b593c89689c97ed97a3ab5df6923e47161aaf453ecc9718a5424cb",
    ),
    "public-api-v1.current.api.yaml": (
        "airbyte-api/server-api/src/main/openapi/api.yaml",
        "8e04217c657308bd9c430a9c43806c555fbd817d7a3d69e0a38b8ce8202acdc9",
    ),
    "api-problems.current.yaml": (
        "airbyte-api/problems-api/src/main/openapi/api-problems.yaml",
        "2d64daa04092cb2e276eb8d648e42d0cf5377155407814a7ee4c5b21bf9e7ce0",
    ),
    "config-api-internal.current.config.yaml": (
        "airbyte-api/server-api/src/main/openapi/config.yaml",
        "f56456f5f5320e9e67d002ef3adc4206824badd518904a5e10113235fbe02ac7",
    ),
}
_FETCH_TIMEOUT_SECONDS: Final = 20.0


class SpecDirError(Exception):
    """``AIRBYTE_FLEET_SPEC_DIR`` names a folder without the spec files, or a fetch was wrong."""


@dataclass(frozen=True)
class SpecSource:
    """The folder holding the spec files and how it was found, or None and what to do."""

    directory: Path | None
    how: str

    @property
    def found(self) -> bool:
        return self.directory is not None


def _has_all(directory: Path) -> bool:
    return all((directory / name).is_file() for name in PINNED)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def default_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "airbyte-fleet" / "airbyte-api" / UPSTREAM_COMMIT[:12]


def fetch_pinned(into: Path, *, base_url: str = UPSTREAM_BASE) -> None:
    """Download every pinned file into *into*, keeping only files whose sha256 matches.

    Raises ``OSError`` when the network is not there and ``SpecDirError`` when a file arrives
    with other bytes than pinned (nothing of it is kept).
    """
    into.mkdir(parents=True, exist_ok=True)
    for name, (upstream, digest) in PINNED.items():
        target = into / name
        if target.is_file() and _sha256(target) == digest:
            continue
        with urllib.request.urlopen(base_url + upstream, timeout=_FETCH_TIMEOUT_SECONDS) as reply:
            body = reply.read()
        got = hashlib.sha256(body).hexdigest()
        if got != digest:
            raise SpecDirError(
                f"{base_url}{upstream} has sha256 {got}, not the pinned {digest}; nothing was kept"
            )
        # Publish whole files only: a parallel session or an interrupted fetch sees none or all.
        fd, tmp = tempfile.mkstemp(prefix=name, suffix=".part", dir=into)
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
        os.replace(tmp, target)


def locate(
    *,
    env: Mapping[str, str] | None = None,
    sibling: Path = SIBLING_DIR,
    cache: Path | None = None,
    base_url: str = UPSTREAM_BASE,
) -> SpecSource:
    """Find the spec files (see the module docstring); fetch them when that is the only way."""
    env = os.environ if env is None else env
    configured = env.get(SPEC_DIR_ENV, "").strip()
    if configured:
        directory = Path(configured).expanduser()
        if not _has_all(directory):
            missing = sorted(name for name in PINNED if not (directory / name).is_file())
            raise SpecDirError(
                f"{SPEC_DIR_ENV}={configured} lacks {', '.join(missing)}; point it at a copy of "
                "airbyte-api (see tests/spec_files.py) or unset it"
            )
        return SpecSource(directory, f"{SPEC_DIR_ENV}={configured}")
    if _has_all(sibling):
        return SpecSource(sibling, f"{sibling} (beside the checkout)")
    cache = cache or default_cache()
    if _has_all(cache) and all(_sha256(cache / n) == d for n, (_, d) in PINNED.items()):
        return SpecSource(cache, f"{cache} (fetched at {UPSTREAM_COMMIT[:12]})")
    try:
        fetch_pinned(cache, base_url=base_url)
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", exc)
        return SpecSource(
            None,
            "Airbyte's OpenAPI specs were not found, so the spec checks are off: put a copy of "
            f"airbyte-api at {sibling} or set {SPEC_DIR_ENV} to one, or run the tests once with "
            f"a network to fetch the pinned files into {cache} (fetching failed: {reason}).",
        )
    return SpecSource(cache, f"{cache} (fetched now at {UPSTREAM_COMMIT[:12]})")


@functools.cache
def spec_source() -> SpecSource:
    """The session's answer, looked up (and fetched) once."""
    return locate()
