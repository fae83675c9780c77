"""What the web page asks of the API besides runs: ``POST /login`` and ``/logout`` (the session
cookie), ``GET /schedules`` and ``GET /groups`` (what the start form offers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import hdrs, web
from pydantic import BaseModel, ConfigDict, Field

from airbyte_fleet._logging import get_logger
from airbyte_fleet.service.auth import token_text_matches
from airbyte_fleet.service.errors import LoginRefusedError, request_as
from airbyte_fleet.service.responses import json_response
from airbyte_fleet.service.routes import CONTEXT, _json_body
from airbyte_fleet.service.schedules import Scheduler, next_fire_times, summarize_selection
from airbyte_fleet.service.session_cookie import COOKIE_NAME, SessionCookies

__all__ = ["API_ROUTES", "UI", "UiContext"]

log = get_logger("airbyte_fleet.service")

API_ROUTES = web.RouteTableDef()
# Fire times listed per schedule.
NEXT_TIMES = 3


@dataclass
class UiContext:
    """What the page's routes serve from: the token (None: a loopback worker with no token), the
    cookies it signs, and the worker's scheduler (None without schedules)."""

    token: str | None
    scheduler: Scheduler | None = None
    cookies: SessionCookies | None = field(init=False)

    def __post_init__(self) -> None:
        self.cookies = SessionCookies(self.token) if self.token is not None else None


UI = web.AppKey("ui", UiContext)


class LoginRequest(BaseModel):
    """``POST /login``'s body."""

    model_config = ConfigDict(extra="forbid")

    token: str = Field(min_length=1, max_length=4096)


def _secure(request: web.Request) -> bool:
    """Whether the browser is on https: the worker's own TLS, or a TLS proxy in front of it,
    which the page's Origin tells (a browser sends it with every POST; it only ever makes the
    cookie stricter, so nothing need be trusted)."""
    origin = request.headers.get(hdrs.ORIGIN, "")
    return request.secure or origin.strip().lower().startswith("https://")


@API_ROUTES.post("/login")
async def login(request: web.Request) -> web.Response:
    ui = request.app[UI]
    body = await _json_body(request, request.app[CONTEXT].body_timeout)
    given = request_as(LoginRequest, body, strict=True)
    if ui.token is None or ui.cookies is None:
        raise LoginRefusedError(no_token=True)
    if not token_text_matches(given.token, ui.token):
        log.warning("login_refused", remote=request.remote)
        raise LoginRefusedError
    value, lifetime = ui.cookies.issue()
    response = json_response({"expires_in": lifetime})
    response.set_cookie(
        COOKIE_NAME,
        value,
        max_age=lifetime,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_secure(request),
    )
    log.info("login", remote=request.remote)
    return response


@API_ROUTES.post("/logout")
async def logout(request: web.Request) -> web.Response:
    ui = request.app[UI]
    if ui.cookies is not None:
        ui.cookies.revoke(request.cookies.get(COOKIE_NAME))
    response = web.Response(status=204)
    response.del_cookie(COOKIE_NAME, path="/", samesite="Strict", secure=_secure(request))
    return response


@API_ROUTES.get("/schedules")
async def list_schedules(request: web.Request) -> web.Response:
    scheduler = request.app[UI].scheduler
    worker = request.app[CONTEXT].worker
    if scheduler is None:
        return json_response({"schedules": []})
    now = datetime.now(UTC)
    by_name = {schedule.name: schedule for schedule in scheduler.schedules}
    items: list[dict[str, Any]] = []
    for row in scheduler.status(now):
        schedule = by_name[row["name"]]
        run_id = row["run_id"]
        record = worker.journal.run(run_id) if run_id else None
        items.append(
            {
                "name": schedule.name,
                "enabled": schedule.enabled,
                "cron": schedule.cron,
                "timezone": schedule.timezone,
                "next": [t.isoformat() for t in next_fire_times(schedule, now, NEXT_TIMES)]
                if schedule.enabled
                else [],
                "last_tick": row["last_tick"],
                "run_id": run_id,
                "running": row["running"],
                "outcome": record.outcome
                if record is not None and record.finished_at is not None
                else None,
                "selection": summarize_selection(schedule.selection),
                "request": {
                    "selection": schedule.selection.model_dump(mode="json", exclude_defaults=True),
                    "options": dict(schedule.options),
                },
            }
        )
    return json_response({"schedules": items})


@API_ROUTES.get("/groups")
async def list_groups(request: web.Request) -> web.Response:
    groups = request.app[CONTEXT].worker.groups
    return json_response(
        {
            "groups": [
                {"name": name, "selection": summarize_selection(selection)}
                for name, selection in sorted(groups.items())
            ]
        }
    )
