"""The worker's web page (/ui) in a real Chromium, against a real worker and the simulator.

Every test logs in through the form, as a person would, and watches the whole page: no request
leaves the worker's origin, the Content-Security-Policy is served and nothing breaks it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from airbyte_fleet.service import Running
from airbyte_fleet.settings_file import FileConfig
from airbyte_fleet.simulator import FakeClock, Simulator
from conftest import SimFactory
from service.support import FAST_RUN, TOKEN, Api, worker

pytestmark = pytest.mark.anyio

# What the page must draw a finished run of this many syncs within (issue 16).
BIG_RUN = 2_000
DRAW_LIMIT_MS = 2_000


@dataclass
class Watched:
    """One browser page, and what it did: every request's URL, every console message."""

    page: Any
    base: str
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    navigations: list[str] = field(default_factory=list)

    def check_clean(self) -> None:
        """Nothing left the worker's origin, and the browser reported no CSP violation nor
        script error."""
        elsewhere = [u for u in self.requests if not u.startswith(self.base + "/")]
        assert not elsewhere, f"requests outside the worker's origin: {elsewhere}"
        assert self.requests, "the page made no request at all"
        broken = [
            m
            for m in self.console
            if "Content Security Policy" in m or "Refused to" in m or m.startswith("pageerror")
        ]
        assert not broken, broken


async def open_page(browser: Any, base: str) -> Watched:
    context = await browser.new_context(viewport={"width": 1400, "height": 900})
    page = await context.new_page()
    watched = Watched(page, base)
    page.on("request", lambda request: watched.requests.append(request.url))
    page.on("console", lambda message: watched.console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: watched.console.append(f"pageerror: {error}"))
    page.on(
        "framenavigated",
        lambda frame: watched.navigations.append(frame.url) if frame == page.main_frame else None,
    )
    return watched


async def log_in(watched: Watched, token: str, *, then: str = "/ui") -> None:
    page = watched.page
    await page.goto(watched.base + then)
    # Sent to the form first: the page needs a session.
    assert "/ui/login" in page.url
    await page.fill("#token", token)
    await page.click("#login button")


@contextlib.asynccontextmanager
async def ui_worker(
    make_sim: SimFactory,
    tmp_path: Path,
    *,
    clock: Any = None,
    run: dict[str, Any] | None = None,
    groups: dict[str, Any] | None = None,
    schedules: dict[str, Any] | None = None,
    **sim: Any,
) -> AsyncIterator[tuple[Simulator, Running, Api]]:
    simulator, root = await make_sim(clock=clock, **sim)
    config = FileConfig(
        run=FAST_RUN | (run or {}),
        groups=groups or {},
        schedules=schedules or {},
    )
    async with worker(root, tmp_path / "state", file=config) as (running, api):
        yield simulator, running, api


async def test_log_in_start_a_run_and_watch_it_live(
    browser: Any, make_sim: SimFactory, tmp_path: Path, artifacts: Path
) -> None:
    clock = FakeClock()
    async with ui_worker(
        make_sim,
        tmp_path,
        clock=clock,
        connections=3,
        workspaces=1,
        sync_seconds=(60.0, 60.0),
        groups={"everything": {"all": True}},
        schedules={"nightly": {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "all": True}},
    ) as (sim, running, _):
        watched = await open_page(browser, running.url)
        page = watched.page
        await log_in(watched, TOKEN)
        await page.wait_for_url(running.url + "/ui")
        await page.wait_for_selector("#start[data-ready=true]")
        # The schedule's next fire times are listed on its page.
        await page.goto(running.url + "/ui/schedules")
        await page.wait_for_selector("tr[data-schedule=nightly]")
        nexts = await page.locator("tr[data-schedule=nightly] td:nth-child(4) div").count()
        assert nexts == 3

        await page.goto(running.url + "/ui")
        await page.wait_for_selector("#start[data-ready=true]")
        await page.select_option("#what", "group:everything")
        await page.click("#start button")
        await page.wait_for_url(running.url + "/ui/runs/**")
        run_id = page.url.rsplit("/", 1)[1]
        loaded = len(watched.navigations)

        # All three jobs run (the simulator's clock stands still): rows say so.
        with anyio.fail_after(30):
            await page.wait_for_function(
                "() => document.querySelectorAll('#syncs tbody tr.sync[data-state=running]').length === 3"
            )
        assert await page.get_attribute("#timeline-canvas", "data-bars") == "3"
        assert len(sim.jobs) == 3

        # The simulator's clock moves on: the jobs end, and the page shows it without a reload.
        clock.advance(120)
        with anyio.fail_after(30):
            await page.wait_for_function("() => document.body.dataset.state === 'finished'")
        states = await page.locator("#syncs tbody tr.sync").evaluate_all(
            "rows => rows.map(r => r.dataset.state)"
        )
        assert states == ["succeeded"] * 3
        assert len(watched.navigations) == loaded, "the page reloaded"
        assert await page.get_attribute("#timeline-canvas", "data-bars") == "3"

        # The filters: by outcome, then by name.
        await page.select_option("#outcome", "failed")
        await page.wait_for_function(
            "() => document.getElementById('timeline-canvas').dataset.bars === '0'"
        )
        assert await page.locator("#syncs tbody tr.sync").count() == 0
        await page.select_option("#outcome", "")
        first = sim.connections[0]["name"]
        await page.fill("#name", first)
        await page.wait_for_function(
            "() => document.getElementById('timeline-canvas').dataset.bars === '1'"
        )
        assert await page.locator("#syncs tbody tr.sync td:first-child").all_inner_texts() == [
            first
        ]

        # The run's static report, linked from its page, opens from the same origin with the
        # cookie: a bar per sync there too.
        await page.fill("#name", "")
        await page.click("#report")
        await page.wait_for_url(running.url + f"/runs/{run_id}/report.html")
        assert await page.locator("svg rect.b").count() == 3
        await page.go_back()

        # The runs list shows it, with who submitted it.
        await page.goto(running.url + "/ui")
        row = page.locator(f"tr[data-run='{run_id}']")
        await row.wait_for()
        assert "API" in await row.inner_text()
        assert "3 succeeded" in await row.inner_text()
        await page.screenshot(path=str(artifacts / "ui-runs.png"), full_page=True)

        response = await page.goto(running.url + "/ui")
        assert response is not None
        policy = (await response.all_headers())["content-security-policy"]
        assert "default-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        watched.check_clean()


async def test_cancel_from_the_page(browser: Any, make_sim: SimFactory, tmp_path: Path) -> None:
    clock = FakeClock()
    async with ui_worker(
        make_sim, tmp_path, clock=clock, connections=2, workspaces=1, sync_seconds=(600.0, 600.0)
    ) as (sim, running, api):
        run_id = await api.submit({"all": True})
        watched = await open_page(browser, running.url)
        page = watched.page
        await log_in(watched, TOKEN, then=f"/ui/runs/{run_id}")
        await page.wait_for_url(running.url + f"/ui/runs/{run_id}")
        with anyio.fail_after(30):
            await page.wait_for_function(
                "() => document.querySelectorAll('#syncs tbody tr.sync[data-state=running]').length === 2"
            )
        # Asked first; saying no leaves the run alone.
        await page.click("#cancel")
        await page.click("#confirm-no")
        assert not any(job["status"] == "cancelled" for job in sim.jobs)
        await page.click("#cancel")
        await page.click("#confirm-yes")
        with anyio.fail_after(30):
            await page.wait_for_function("() => document.body.dataset.state === 'finished'")
        assert sorted(job["status"] for job in sim.jobs) == ["cancelled", "cancelled"]
        states = await page.locator("#syncs tbody tr.sync").evaluate_all(
            "rows => rows.map(r => r.dataset.state)"
        )
        assert states == ["cancelled", "cancelled"]
        assert await page.inner_text("#run-state") == "interrupted"
        watched.check_clean()


async def test_a_wrong_token_is_refused(browser: Any, make_sim: SimFactory, tmp_path: Path) -> None:
    async with ui_worker(make_sim, tmp_path, connections=1) as (_, running, _api):
        watched = await open_page(browser, running.url)
        page = watched.page
        await log_in(watched, "not-the-token")
        await page.wait_for_selector("#message.bad")
        assert "not this worker's token" in await page.inner_text("#message")
        assert "/ui/login" in page.url
        cookies = await page.context.cookies()
        assert not cookies
        # Still nothing to see without a session.
        await page.goto(running.url + "/ui/schedules")
        assert "/ui/login" in page.url
        watched.check_clean()


async def test_a_finished_run_of_2000_syncs_draws_within_2_seconds(
    browser: Any, make_sim: SimFactory, tmp_path: Path, artifacts: Path
) -> None:
    async with ui_worker(
        make_sim,
        tmp_path,
        connections=BIG_RUN,
        workspaces=1,
        sync_seconds=(0.0, 0.0),
        failure_rate=0.02,
        run={"max_concurrency": BIG_RUN},
    ) as (_, running, api):
        run_id = await api.submit({"all": True})
        result = await api.finished(run_id, within=300)
        assert len(result["syncs"]) == BIG_RUN
        watched = await open_page(browser, running.url)
        page = watched.page
        await log_in(watched, TOKEN)
        await page.wait_for_url(running.url + "/ui")
        began = time.perf_counter()
        await page.goto(running.url + f"/ui/runs/{run_id}")
        with anyio.fail_after(30):
            await page.wait_for_function(
                "() => document.body.dataset.drawn && "
                f"document.getElementById('timeline-canvas').dataset.bars === '{BIG_RUN}'"
            )
        waited_ms = (time.perf_counter() - began) * 1000
        # From the start of navigation to the table and timeline drawn, by the page's own clock.
        drawn_ms = int(await page.evaluate("Number(document.body.dataset.drawn)"))
        assert await page.evaluate("() => document.body.dataset.syncs") == str(BIG_RUN)
        # The table, like the timeline, lays out only the rows in view.
        rows = await page.locator("#syncs tbody tr.sync").count()
        assert 0 < rows < 100
        print(
            f"\n2,000-sync run page: drawn {drawn_ms} ms after navigation ({waited_ms:.0f} ms waited)"
        )
        assert drawn_ms < DRAW_LIMIT_MS, drawn_ms
        # Scrolling the timeline draws only what is in view.
        drawn = int(await page.get_attribute("#timeline-canvas", "data-drawn") or 0)
        assert 0 < drawn < 100
        await page.screenshot(path=str(artifacts / "ui-run-2000.png"))
        watched.check_clean()


async def test_the_run_page_picture(
    browser: Any, make_sim: SimFactory, tmp_path: Path, artifacts: Path
) -> None:
    """A run as the README shows it: a limiter holding syncs back, a few failures and retries."""
    async with ui_worker(
        make_sim,
        tmp_path,
        connections=24,
        workspaces=1,
        sync_seconds=(0.3, 1.6),
        failure_rate=0.2,
        run={"max_concurrency": 6, "retries": 1, "retry_backoff": 0},
    ) as (_, running, api):
        run_id = await api.submit({"all": True})
        await api.finished(run_id, within=120)
        watched = await open_page(browser, running.url)
        page = watched.page
        await log_in(watched, TOKEN, then=f"/ui/runs/{run_id}")
        await page.wait_for_url(running.url + f"/ui/runs/{run_id}")
        await page.wait_for_function("() => document.body.dataset.drawn")
        assert await page.get_attribute("#timeline-canvas", "data-bars") == "24"
        # The window's view (the README's picture): the run's header, its timeline, the table's
        # first rows.
        await page.screenshot(path=str(artifacts / "ui-run.png"))
        watched.check_clean()
