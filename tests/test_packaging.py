"""What a packager gets: the sdist and the wheel, built from a clean copy of the checkout.

Both carry the Apache-2.0 licence text and its metadata; the sdist carries no tests (all or none,
and none is simpler: the tests need a checkout); the long description (README.md) has no link
that only works inside the repository, save one screenshot (see its test).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: sha256 of the Apache License 2.0 text as apache.org publishes it (LICENSE-2.0.txt).
APACHE_2_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
#: A Markdown link or image whose target is neither absolute nor an anchor on the same page.
RELATIVE_LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)[^)]*\)")
HTML_IMAGE = re.compile(r"<img\b[^>]*>")


def _checkout_files() -> list[str]:
    """What a fresh clone holds: tracked files and new ones not ignored."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: cannot tell which files a clone would hold")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``python -m build`` on a copy of the checkout (nothing is written into the real one)."""
    clone = tmp_path_factory.mktemp("clone")
    for name in _checkout_files():
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, clone / name)
    out = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(clone)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def _headers(text: str) -> tuple[list[tuple[str, str]], str]:
    message = HeaderParser().parsestr(text)
    return list(message.items()), str(message.get_payload())


def test_the_licence_is_the_apache_2_text() -> None:
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_SHA256
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]


def test_the_readme_has_no_link_that_breaks_on_a_package_index() -> None:
    readme = (ROOT / "README.md").read_text()
    links = RELATIVE_LINK.findall(readme)
    assert not links, f"relative links in README.md (broken on PyPI): {links}"
    # The one exception, asked for by the web page's issue: a screenshot, while the project has
    # no public address to link it absolutely. It must exist, and its alt text says what it shows
    # and where it lies, which is what a package index then displays in its place.
    images = HTML_IMAGE.findall(readme)
    assert len(images) <= 1, images
    for tag in images:
        src = re.search(r'src="([^"]+)"', tag)
        alt = re.search(r'alt="([^"]{20,})"', tag)
        assert src is not None, tag
        assert alt is not None, tag
        if not src[1].startswith("https://"):
            assert src[1].startswith("docs/img/"), tag
            assert (ROOT / src[1]).is_file(), tag
            assert src[1] in alt[1], f"the alt text must name {src[1]}: {tag}"


def test_the_build_needs_only_setuptools() -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert [re.split(r"[<>=!~ ;\[]", r)[0] for r in requires] == ["setuptools"]


@pytest.mark.slow
def test_the_sdist_has_the_licence_and_no_tests(dists: tuple[Path, Path]) -> None:
    sdist, _ = dists
    with tarfile.open(sdist) as archive:
        names = [m.name.split("/", 1)[1] for m in archive.getmembers() if "/" in m.name]
        top = sdist.name.removesuffix(".tar.gz")
        licence = archive.extractfile(f"{top}/LICENSE")
        assert licence is not None
        assert licence.read() == (ROOT / "LICENSE").read_bytes()
        info = archive.extractfile(f"{top}/PKG-INFO")
        assert info is not None
        headers, _ = _headers(info.read().decode())
    assert ("License-Expression", "Apache-2.0") in headers
    assert ("License-File", "LICENSE") in headers
    tests = [n for n in names if n.startswith("tests/") or "conftest" in n or "/test_" in n]
    assert not tests, f"the sdist carries test files: {tests}"
    assert not [n for n in names if n.endswith(".pyc") or "__pycache__" in n]
    assert "src/airbyte_fleet/cli/__init__.py" in names


@pytest.mark.slow
def test_the_wheel_has_the_licence_and_the_metadata(dists: tuple[Path, Path]) -> None:
    _, wheel = dists
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        assert archive.read(f"{dist_info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
        headers, description = _headers(archive.read(f"{dist_info}/METADATA").decode())
    assert ("License-Expression", "Apache-2.0") in headers
    assert ("License-File", "LICENSE") in headers
    classifiers = [value for key, value in headers if key == "Classifier"]
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert not [c for c in classifiers if c.startswith("License ::")]  # PEP 639: the expression
    assert "airbyte_fleet/py.typed" in names
    # The web page (/ui) is served from the installed package: every file of it must be there.
    static = ROOT / "src/airbyte_fleet/service/ui/static"
    shipped = {f"airbyte_fleet/service/ui/static/{p.name}" for p in static.iterdir()}
    assert shipped
    assert shipped <= set(names), sorted(shipped - set(names))
    assert not [n for n in names if n.startswith("tests/")]
    assert description.strip(), "no long description"
    assert not RELATIVE_LINK.findall(description)
