"""No file of the repository names a path of the machine it was written on.

A path under the checkout's parent folder (where this machine keeps the checkout, the shared
spec files, the research notes) means nothing on a fresh clone: find such things relative to the
repository instead, as ``tests/spec_files.py`` does.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _repository_files() -> list[Path]:
    """Tracked files and new ones not ignored (what the next commit can hold)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an sdist, say): nothing to list the files with")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def machine_paths(text: str, parent: Path) -> list[str]:
    """Absolute paths in *text* that start with *parent* and a slash."""
    prefix = re.escape(parent.as_posix().rstrip("/") + "/")
    # Not preceded by a path character: "../parent/x" or "$parent/x" are relative, not absolute.
    return re.findall(rf"(?<![\w.$~/-]){prefix}[^\s'\"`)\]>,;]*", text)


def test_the_pattern_finds_absolute_paths_only() -> None:
    parent = Path("/srv/code")
    text = 'a = "/srv/code/shared/x.yaml"\nb = ../srv/code/y\nc = $srv/code/z /srv/codes/w'
    assert machine_paths(text, parent) == ["/srv/code/shared/x.yaml"]


def test_no_file_names_a_path_of_this_machine() -> None:
    parent = ROOT.parent
    if parent == Path(parent.anchor):
        pytest.skip("the checkout sits at the file system's root: every path would match")
    found: list[str] = []
    for path in _repository_files():
        if not path.is_file() or path.is_symlink():
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        found += [f"{path.relative_to(ROOT)}: {hit}" for hit in machine_paths(text, parent)]
    assert not found, "absolute paths of this machine:\n" + "\n".join(found)
