"""A browser's way in, over plain HTTP: the login exchanges the token for a session cookie (never
the token itself), the cookie opens the API and its event streams, a cookie alone never changes
anything for another site's page, and every answer carries the page's security headers."""

from __future__ import annotations

from datetime import UTC, datetime
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from airbyte_fleet.service.session_cookie import COOKIE_NAME, SessionCookies
from airbyte_fleet.settings_file import FileConfig
from conftest import SimFactory

from .support import FAST_RUN, TOKEN, Api, worker

pytestmark = pytest.mark.anyio

# Calls that carry the cookie go unchecked against /openapi.json (check=False): openapi-core's
# test request takes no cookies, so it cannot see the `session` scheme satisfied.


def _cookie(answer_headers: Any) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for header in answer_headers.getall("Set-Cookie", []):
        jar.load(header)
    return jar


async def _login(api: Api, token: str = TOKEN, **headers: str) -> aiohttp.ClientResponse:
    async with api.session.post(
        api.base + "/login", json={"token": token}, headers=headers
    ) as response:
        await response.read()
        return response


async def test_login_gives_an_httponly_strict_cookie_that_is_not_the_token(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (_, api):
        response = await _login(api)
        assert response.status == 200
        (header,) = response.headers.getall("Set-Cookie")
        morsel = _cookie(response.headers)[COOKIE_NAME]
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Strict"
        assert morsel["path"] == "/"
        assert int(morsel["max-age"]) > 0
        assert not morsel["secure"], "plain http: a Secure cookie would never come back"
        assert TOKEN not in header
        assert morsel.value != TOKEN
        # A login from a page on https (a TLS proxy in front) makes it Secure.
        secure = await _login(api, Origin=api.base.replace("http://", "https://"))
        assert secure.status == 200
        assert _cookie(secure.headers)[COOKIE_NAME]["secure"] is True


async def test_a_wrong_token_is_refused_in_one_sentence(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (_, api):
        for wrong in ("not-the-token", TOKEN + "x", TOKEN[:-1]):
            answer = await api.call("POST", "/login", body={"token": wrong}, auth=False)
            assert answer.status == 401
            assert answer.body == {
                "error": "That is not this worker's token; paste the value of "
                "AIRBYTE_FLEET_API_TOKEN."
            }
            assert "Set-Cookie" not in answer.headers
            assert wrong not in answer.text
        missing = await api.call("POST", "/login", body={}, auth=False)
        assert missing.status == 422
        assert missing.body["errors"][0]["loc"] == ["token"]


async def test_the_cookie_opens_the_api_and_the_event_stream(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=2)
    async with worker(root, tmp_path) as (_, api):
        run_id = await api.submit({"all": True})
        await api.finished(run_id)
        cookie = _cookie((await _login(api)).headers)[COOKIE_NAME].value
        sent = {"Cookie": f"{COOKIE_NAME}={cookie}"}
        listed = await api.call("GET", "/runs", auth=False, headers=sent, check=False)
        assert listed.status == 200
        assert listed.body["runs"][0]["run_id"] == run_id
        assert listed.body["runs"][0]["submitted_by"] is None
        async with api.session.get(f"{api.base}/runs/{run_id}/events", headers=sent) as r:
            assert r.status == 200
            text = (await r.read()).decode()
        assert "event: run_finished" in text
        # Without it (or with one that was tampered with), nothing.
        assert (await api.call("GET", "/runs", auth=False)).status == 401
        forged = {"Cookie": f"{COOKIE_NAME}={cookie[:-2]}xx"}
        assert (
            await api.call("GET", "/runs", auth=False, headers=forged, check=False)
        ).status == 401
        # A script's wrong bearer token is not rescued by a cookie sent along.
        both = sent | {"Authorization": "Bearer wrong"}
        assert (await api.call("GET", "/runs", auth=False, headers=both, check=False)).status == 401


async def test_a_cookie_changes_something_only_from_the_workers_own_page(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1, sync_seconds=(0.05, 0.05))
    async with worker(root, tmp_path) as (_, api):
        cookie = _cookie((await _login(api)).headers)[COOKIE_NAME].value
        sent = {"Cookie": f"{COOKIE_NAME}={cookie}"}
        body = {"selection": {"all": True}}
        for refused in (
            {},  # no page vouches for it: a cookie alone is not enough
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "same-site"},
        ):
            answer = await api.call(
                "POST", "/runs", body=body, auth=False, headers=sent | refused, check=False
            )
            assert answer.status == 403, (refused, answer)
            assert answer.body["error"].endswith(".")
        assert sim.count("POST", "/jobs") == 0, "a refused request triggered a sync"
        own = {"Origin": api.base}
        accepted = await api.call(
            "POST", "/runs", body=body, auth=False, headers=sent | own, check=False
        )
        assert accepted.status == 202
        same_origin = {"Sec-Fetch-Site": "same-origin"}
        cancel = await api.call(
            "POST",
            f"/runs/{accepted.body['run_id']}/cancel",
            auth=False,
            headers=sent | same_origin,
            check=False,
        )
        assert cancel.status in (202, 409)


async def test_logout_ends_the_session(make_sim: SimFactory, tmp_path: Path) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (_, api):
        cookie = _cookie((await _login(api)).headers)[COOKIE_NAME].value
        sent = {"Cookie": f"{COOKIE_NAME}={cookie}"}
        assert (await api.call("GET", "/runs", auth=False, headers=sent, check=False)).status == 200
        out = await api.call(
            "POST", "/logout", auth=False, headers=sent | {"Origin": api.base}, check=False
        )
        assert out.status == 204
        cleared = _cookie_headers(out.headers)
        assert any(f"{COOKIE_NAME}=" in h and "Max-Age=0" in h for h in cleared), cleared
        assert (await api.call("GET", "/runs", auth=False, headers=sent, check=False)).status == 401


def _cookie_headers(headers: dict[str, str]) -> list[str]:
    return [v for k, v in headers.items() if k.lower() == "set-cookie"]


async def test_pages_send_a_browser_to_the_login_form_and_carry_a_strict_policy(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (_, api):
        async with api.session.get(api.base + "/ui/runs/r1?x=1", allow_redirects=False) as r:
            assert r.status == 303
            assert r.headers["Location"] == "/ui/login?next=/ui/runs/r1%3Fx%3D1"
        for path in ("/ui/login", "/ui/static/run.js", "/ui/static/style.css"):
            async with api.session.get(api.base + path) as r:
                assert r.status == 200, path
                policy = r.headers["Content-Security-Policy"]
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["Referrer-Policy"] == "no-referrer"
                # A new version's scripts are never taken from a stale cache.
                assert r.headers["Cache-Control"] == "no-cache"
        directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in policy
        # The API's answers carry it too.
        answer = await api.call("GET", "/runs")
        assert answer.headers["Content-Security-Policy"] == policy
        # A page that needs a session, with one.
        cookie = _cookie((await _login(api)).headers)[COOKIE_NAME].value
        async with api.session.get(
            api.base + "/ui", headers={"Cookie": f"{COOKIE_NAME}={cookie}"}
        ) as r:
            assert r.status == 200
            assert "<canvas" not in (await r.text())
            assert r.headers["Content-Type"].startswith("text/html")


async def test_without_a_token_the_page_needs_no_login(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path, token=None) as (_, api):
        async with api.session.get(api.base + "/ui/runs/r1", allow_redirects=False) as r:
            assert r.status == 200
        answer = await api.call("POST", "/login", body={"token": "anything"}, auth=False)
        assert answer.status == 409
        assert answer.body["error"] == (
            "This worker has no API token, so there is nothing to log in with; open /ui."
        )


async def test_schedules_groups_and_who_submitted_a_run(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=2)
    config = FileConfig(
        run=FAST_RUN,
        groups={"everything": {"all": True}},
        schedules={
            "nightly": {"cron": "0 2 * * *", "timezone": "Europe/Berlin", "all": True},
            "paused": {"cron": "0 3 * * *", "all": True, "enabled": False},
        },
    )
    async with worker(root, tmp_path, file=config) as (running, api):
        groups = await api.call("GET", "/groups")
        assert groups.body == {"groups": [{"name": "everything", "selection": "all"}]}
        schedules = await api.call("GET", "/schedules")
        by_name = {s["name"]: s for s in schedules.body["schedules"]}
        nightly = by_name["nightly"]
        assert len(nightly["next"]) == 3
        assert all(t.endswith(("+01:00", "+02:00")) for t in nightly["next"])
        assert nightly["run_id"] is None
        assert nightly["outcome"] is None
        assert nightly["request"] == {"selection": {"all": True}, "options": {}}
        assert by_name["paused"]["next"] == []
        # A tick of the schedule, submitted as the scheduler submits it.
        tick = datetime(2026, 1, 1, 1, 0, tzinfo=UTC)
        worker_ = running.worker
        accepted = await worker_.submit(
            worker_.default_selection.model_copy(update={"all": True}),
            worker_.options_from({}),
            schedule="nightly",
            tick=tick,
        )
        by_api = await api.submit({"all": True})
        await api.finished(accepted.run_id)
        await api.finished(by_api)
        listed = {r["run_id"]: r for r in (await api.call("GET", "/runs")).body["runs"]}
        assert listed[accepted.run_id]["submitted_by"] == "nightly"
        assert listed[by_api]["submitted_by"] is None


def test_a_session_cookie_expires_and_belongs_to_its_token() -> None:
    now = [1_000_000.0]
    cookies = SessionCookies("token-one", lifetime=60, clock=lambda: now[0])
    value, lifetime = cookies.issue()
    assert lifetime == 60
    assert cookies.valid(value)
    assert not SessionCookies("token-two").valid(value)
    assert not cookies.valid(value.replace("v1.", "v2.", 1))
    assert not cookies.valid("")
    assert not cookies.valid(None)
    now[0] += 61
    assert not cookies.valid(value)
