"""The HTML report at size: bytes, Python's time to write it, Chromium's time to draw it.

For each size a real run, in this process, of that many quick syncs against the simulator (on
loopback, 2 % failing and retried once, a concurrency limit of a fifth of the run so that most
syncs wait for a slot), journaled in a scratch folder; then the report as ``runs show --html``
writes it (read back from the journal), opened ``--rounds`` times in headless Chromium (Debian's
``/usr/bin/chromium``, driven by Playwright). Reported, medians over the rounds:

- ``bytes``: the file;
- ``write_ms``: reading the run back from the journal and writing the page (Python);
- ``load_ms``: navigation start to the load event;
- ``drawn_ms``: navigation start to two animation frames after the load event (laid out and
  painted: what the browser test holds under 2 s at 2,000 syncs);
- ``table_ms``: scrolling to the table, which is laid out only then, to two frames later.

    .venv/bin/python bench/report_html.py                   # 500, 2,000 and 10,000 syncs, ~2 min
    .venv/bin/python bench/report_html.py --sizes 2000 --rounds 3

Writes ``bench/out/report_html.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from airbyte_fleet.api import AirbyteClient, ClientCredentials, plan_url
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.journal import Journal
from airbyte_fleet.report import stored_report
from airbyte_fleet.runner import RunSession
from airbyte_fleet.simulator import Simulator, SimulatorOptions

OUT = Path(__file__).resolve().parent / "out"
CHROMIUM = os.environ.get("AIRBYTE_FLEET_CHROMIUM") or shutil.which("chromium") or ""

DRAWN = (
    "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(() => {"
    " const nav = performance.getEntriesByType('navigation')[0];"
    " done({drawn_ms: performance.now(), load_ms: nav.loadEventEnd}); })))"
)
TABLE = (
    "() => new Promise(done => { const t0 = performance.now();"
    " document.querySelector('table').scrollIntoView();"
    " requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0))); })"
)


async def _run(count: int, state: Path) -> tuple[str, float]:
    """A real run of *count* syncs journaled in *state*; its page and the ms it took to write."""
    sim = Simulator(
        SimulatorOptions(
            connections=count,
            workspaces=1,
            sync_seconds=(0.05, 0.4),
            failure_rate=0.02,
            incomplete_rate=0.0,
            client_id="bench-client",
            client_secret="bench-secret",
        ),
        record_exchanges=False,
    )
    root = await sim.start("127.0.0.1", 0)
    try:
        api = plan_url(root + "/api/public/v1").candidates[0]
        auth = ClientCredentials("bench-client", SecretStr("bench-secret"), api.token_url)
        options = RunOptions(
            max_concurrency=max(count // 5, 1), poll_interval=0.1, retries=1, retry_backoff=0
        )
        with Journal(state) as journal:
            async with AirbyteClient(api, auth) as client:
                session = await RunSession.planned(
                    client, Selection(all=True), options, store=journal
                )
                await session.run()
            began = time.perf_counter()
            page = stored_report(journal, session.run_id)
            took = (time.perf_counter() - began) * 1000
    finally:
        await sim.stop()
    assert page is not None
    return page, took


async def _draw(path: Path, rounds: int) -> dict[str, float]:
    from playwright.async_api import async_playwright

    seen: list[dict[str, float]] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        for _ in range(rounds):
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            await page.goto(path.as_uri(), wait_until="load")
            timing = await page.evaluate(DRAWN)
            timing["table_ms"] = await page.evaluate(TABLE)
            seen.append(timing)
            await context.close()
        await browser.close()
    return {key: round(statistics.median(t[key] for t in seen)) for key in seen[0]}


async def main(sizes: list[int], rounds: int) -> list[dict[str, Any]]:
    rows = []
    for count in sizes:
        with tempfile.TemporaryDirectory() as scratch:
            page, write_ms = await _run(count, Path(scratch))
            path = Path(scratch) / "report.html"
            path.write_text(page, encoding="utf-8")
            row = {"syncs": count, "bytes": path.stat().st_size, "write_ms": round(write_ms)}
            row |= await _draw(path, rounds)
        print(json.dumps(row))
        rows.append(row)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 10000])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not CHROMIUM:
        raise SystemExit("no Chromium found (apt-get install chromium)")
    found = asyncio.run(main(args.sizes, args.rounds))
    OUT.mkdir(exist_ok=True)
    (OUT / "report_html.json").write_text(json.dumps(found, indent=2) + "\n")
