"""How long the worker's run page takes to draw a finished run of N syncs in Chromium.

A worker (in this process, as the tests start it) runs N simulator connections; then Debian's
Chromium, driven by Playwright, logs in and opens the run's page three times. The time printed is
the page's own: ``performance.now()`` when the table and the timeline hold every sync, from the
start of navigation. Then one frame after scrolling the timeline to its middle.

    PYTHONPATH=src:tests .venv/bin/python bench/ui_page.py 10000
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from playwright.async_api import async_playwright

from airbyte_fleet.settings_file import FileConfig
from airbyte_fleet.simulator import Simulator, SimulatorOptions
from service.support import FAST_RUN, TOKEN, worker

SCROLL = """() => new Promise(done => {
  const box = document.getElementById('timeline');
  const t0 = performance.now();
  box.scrollTop = box.scrollHeight / 2;
  requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t0)));
})"""


async def measure(syncs: int, rounds: int) -> None:
    options = SimulatorOptions(
        connections=syncs,
        workspaces=1,
        sync_seconds=(0.0, 0.0),
        failure_rate=0.02,
        incomplete_rate=0.0,
    )
    sim = Simulator(options, record_exchanges=False)
    root = await sim.start("127.0.0.1", 0)
    state = Path(tempfile.mkdtemp())
    try:
        config = FileConfig(run=FAST_RUN | {"max_concurrency": syncs, "poll_interval": 1.0})
        async with worker(root, state / "state", file=config) as (running, api):
            began = time.perf_counter()
            run_id = await api.submit({"all": True})
            await api.finished(run_id, within=1800)
            print(f"a run of {syncs} syncs made in {time.perf_counter() - began:.0f} s")
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=shutil.which("chromium"),
                    args=["--no-sandbox", "--disable-dev-shm-usage"],
                )
                context = await browser.new_context(viewport={"width": 1400, "height": 900})
                page = await context.new_page()
                await page.goto(running.url + "/ui/login")
                await page.fill("#token", TOKEN)
                await page.click("#login button")
                await page.wait_for_url(running.url + "/ui")
                for _ in range(rounds):
                    await page.goto(f"{running.url}/ui/runs/{run_id}")
                    await page.wait_for_function(
                        "() => document.body.dataset.drawn && document.getElementById"
                        f"('timeline-canvas').dataset.bars === '{syncs}'",
                        timeout=600_000,
                    )
                    drawn = await page.evaluate("() => Number(document.body.dataset.drawn)")
                    scroll = await page.evaluate(SCROLL)
                    print(
                        f"{syncs} syncs: drawn {drawn} ms after navigation; a scroll {scroll:.0f} ms"
                    )
                await browser.close()
    finally:
        await sim.stop()
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("syncs", type=int, nargs="?", default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(measure(args.syncs, args.rounds))


if __name__ == "__main__":
    main()
