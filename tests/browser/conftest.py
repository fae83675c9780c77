"""A real Chromium (Debian's ``/usr/bin/chromium``), driven by Playwright for Python.

``playwright install`` downloads its own browsers and cannot work on these machines, so Playwright
launches the system's Chromium by path. Without one the browser tests skip, except under
``CI=true``, where a missing browser is an install step gone wrong and fails the session.
Screenshots go to ``ARTIFACTS`` (``AIRBYTE_FLEET_TEST_ARTIFACTS`` or ``test-artifacts/``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("AIRBYTE_FLEET_CHROMIUM") or shutil.which("chromium") or ""
ARTIFACTS = Path(
    os.environ.get("AIRBYTE_FLEET_TEST_ARTIFACTS")
    or Path(__file__).resolve().parents[2] / "test-artifacts"
)


def _need_browser() -> None:
    if CHROMIUM:
        return
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail("CI=true: no Chromium found (apt-get install chromium)")
    pytest.skip("no Chromium on this machine (apt-get install chromium)")


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    """A headless Chromium for one test (a ``playwright.async_api.Browser``)."""
    _need_browser()
    try:
        from playwright.async_api import async_playwright
    except ImportError:  # pragma: no cover - the dev extra installs it
        pytest.fail("playwright is not installed (pip install -e '.[dev]')")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            # Containers run as root, and /dev/shm is small there.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots are kept after the run (made on first use)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
