"""The token endpoint and the three auth modes."""

from __future__ import annotations

import base64
import re

import pytest

from .conftest import LEGACY, StartApi

pytestmark = pytest.mark.anyio

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
GOOD = {"client_id": "sim-client", "client_secret": "sim-secret"}


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        ("json", {}),
        ("json", {"grant-type": "client_credentials"}),
        ("form", {"grant_type": "client_credentials"}),
        ("form", {}),
    ],
)
async def test_token_accepts_json_and_form_with_any_grant_spelling(
    start: StartApi, kind: str, extra: dict[str, str]
) -> None:
    api = await start(token_ttl=600)
    body = {**GOOD, **extra}
    sent = {"json": body} if kind == "json" else {"data": body}
    reply = await api.post("/applications/token", auth=False, **sent)
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.body["token_type"] == "Bearer"
    assert reply.body["expires_in"] == 600
    token = reply.body["access_token"]
    jobs = await api.get("/jobs", auth=False, headers={"Authorization": f"Bearer {token}"})
    assert jobs.status == 200
    assert api.sim.token_requests == 1


async def test_tokens_are_distinct_and_counted(start: StartApi) -> None:
    api = await start()
    tokens = {
        (await api.post("/applications/token", auth=False, json=GOOD)).body["access_token"]
        for _ in range(3)
    }
    assert len(tokens) == 3
    assert api.sim.token_requests == 3
    assert api.sim.count("POST", "/applications/token") == 3


async def test_bad_credentials_cloud_style(start: StartApi) -> None:
    api = await start(token_errors="cloud")
    reply = await api.post(
        "/applications/token", auth=False, json={**GOOD, "client_secret": "nope"}
    )
    assert reply.status == 401
    assert list(reply.body) == ["errorId"]
    assert UUID_RE.match(reply.body["errorId"])
    assert api.sim.token_requests == 0


async def test_bad_credentials_oss_style(start: StartApi) -> None:
    api = await start(token_errors="oss")
    reply = await api.post("/applications/token", auth=False, data={**GOOD, "client_id": "x"})
    assert reply.status == 400
    assert reply.body["message"] == "Invalid client id or token"
    assert (
        reply.body["exceptionClassName"] == "io.airbyte.commons.server.errors.BadRequestException"
    )


async def test_token_request_missing_fields_is_bad_request(start: StartApi) -> None:
    api = await start()
    reply = await api.post("/applications/token", auth=False, json={"client_id": "sim-client"})
    assert reply.status == 400
    assert reply.body["title"] == "bad-request"
    malformed = await api.post(
        "/applications/token", auth=False, data=b"{", headers={"Content-Type": "application/json"}
    )
    assert malformed.status == 400


async def test_token_expires_on_the_clock(start: StartApi) -> None:
    api = await start(token_ttl=900)
    token = (await api.post("/applications/token", auth=False, json=GOOD)).body["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    api.clock.advance(899)
    assert (await api.get("/workspaces", auth=False, headers=headers)).status == 200
    api.clock.advance(1)
    reply = await api.get("/workspaces", auth=False, headers=headers)
    assert reply.status == 401
    assert reply.body["type"] == "https://reference.airbyte.com/reference/errors#invalid-api-key"
    assert reply.body["title"] == "invalid-api-key"
    assert reply.body["status"] == 401
    assert reply.body["detail"] == "The API key in the Authorization header is invalid."
    assert isinstance(reply.body["data"]["message"], str)


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer nope", "Basic YWlyYnl0ZTpwYXNzd29yZA=="]
)
async def test_missing_or_wrong_bearer_is_401(start: StartApi, header: str | None) -> None:
    api = await start()
    headers = {} if header is None else {"Authorization": header}
    reply = await api.get("/jobs", auth=False, headers=headers)
    assert reply.status == 401
    assert reply.body["title"] == "invalid-api-key"


async def test_expire_tokens_invalidates_every_token(start: StartApi) -> None:
    api = await start()
    assert (await api.get("/workspaces")).status == 200
    assert api.sim.expire_tokens() == 1
    assert (await api.get("/workspaces")).status == 401


async def test_basic_auth(start: StartApi) -> None:
    api = await start(auth="basic", username="u", password="p:w")
    good = "Basic " + base64.b64encode(b"u:p:w").decode()
    bad = "Basic " + base64.b64encode(b"u:wrong").decode()
    assert (await api.get("/workspaces", headers={"Authorization": good})).status == 200
    for headers in ({"Authorization": bad}, {}, {"Authorization": "Basic !!!"}):
        reply = await api.get("/workspaces", headers=headers)
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"].startswith("Basic ")
    # The basic-auth era server had no token endpoint.
    token = await api.post("/applications/token", json=GOOD, headers={"Authorization": good})
    assert token.status == 404


async def test_no_auth_mode_needs_no_header_and_still_serves_tokens(start: StartApi) -> None:
    api = await start(auth="none")
    assert (await api.get("/jobs", prefix=LEGACY)).status == 200
    assert (await api.get("/jobs", headers={"Authorization": "Bearer whatever"})).status == 200
    assert (await api.post("/applications/token", json=GOOD)).status == 200


async def test_health_needs_no_auth_everywhere(start: StartApi) -> None:
    api = await start()
    for prefix in ("/api/public/v1", "/v1", ""):
        reply = await api.get("/health", prefix=prefix, auth=False)
        assert (reply.status, reply.body) == (200, "Successful operation")
    assert api.sim.count("GET", "/health") == 3
