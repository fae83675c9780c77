"""The worker's HTTP API end to end: a real worker on loopback, a real simulator behind it, and
every answer checked against the worker's own OpenAPI description."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate
from structlog.testing import capture_logs

from airbyte_fleet.coordination import CoordinationError
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.service import RunView, ServeOptions, check_bind, is_loopback, launch
from airbyte_fleet.service.openapi import openapi_document
from conftest import SimFactory

from .support import TOKEN, settings_for, worker

pytestmark = pytest.mark.anyio


async def test_a_run_is_submitted_followed_over_sse_and_reported(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3)
    async with worker(root, tmp_path) as (_, api):
        run_id = await api.submit({"all": True}, max_concurrency=3)
        events = await api.events(run_id)
        kinds = [e.event for e in events]
        assert kinds[0] == "run_started"
        assert kinds[-1] == "run_finished"
        assert kinds.count("sync_triggered") == 3
        assert kinds.count("sync_succeeded") == 3
        # The SSE id is the journal's sequence number: strictly increasing, no gaps.
        assert [e.id for e in events] == list(range(events[0].id, events[0].id + len(events)))
        assert all(e.data["run_id"] == run_id for e in events)

        answer = await api.call("GET", f"/runs/{run_id}")
        assert answer.status == 200
        assert answer.body["state"] == "finished"
        result = answer.body["result"]
        assert result["run_id"] == run_id
        assert result["outcome"] == "succeeded"
        assert result["counts"]["succeeded"] == 3
        assert {s["connection_id"] for s in result["syncs"]} == {
            c["connectionId"] for c in sim.connections
        }

        listed = await api.call("GET", "/runs?limit=5")
        assert listed.status == 200
        assert listed.body["runs"][0]["run_id"] == run_id
        assert listed.body["runs"][0]["state"] == "finished"
        assert listed.body["runs"][0]["outcome"] == "succeeded"
        # The checks against the document let extra keys through; each answer has exactly the
        # properties its schema names, so the names in /openapi.json are the ones served.
        schemas = openapi_document()["components"]["schemas"]
        assert set(answer.body) == set(schemas["RunStatus"]["properties"])
        assert set(listed.body["runs"][0]) == set(schemas["RunListItem"]["properties"])
        assert set(listed.body) == set(schemas["RunList"]["properties"])
    assert sim.count("POST", "/jobs") == 3


async def test_last_event_id_carries_on_after_the_last_event_seen(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=2)
    async with worker(root, tmp_path) as (_, api):
        run_id = await api.submit({"all": True})
        everything = await api.events(run_id)
        middle = everything[len(everything) // 2]
        rest = await api.events(run_id, last_event_id=middle.id)
        assert rest == [e for e in everything if e.id > middle.id]
        assert rest[-1].event == "run_finished"
        # Reconnecting after the last event of a finished run ends the stream at once, empty
        # (it used to stay open for ever, sending keep-alives).
        assert await api.events(run_id, last_event_id=rest[-1].id, within=5) == []
        bad = await api.call("GET", f"/runs/{run_id}/events", headers={"Last-Event-ID": "x1"})
        assert bad.status == 422
        assert bad.body["errors"][0]["loc"] == ["header", "Last-Event-ID"]


async def test_every_route_but_health_and_metrics_needs_the_token(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (_, api):
        for method, path in (
            ("GET", "/runs"),
            ("POST", "/runs"),
            ("GET", "/runs/x"),
            ("GET", "/runs/x/events"),
            ("POST", "/runs/x/cancel"),
            ("GET", "/openapi.json"),
            ("GET", "/nowhere"),
        ):
            described = path != "/nowhere"
            missing = await api.call(method, path, auth=False, check=described)
            assert missing.status == 401, (method, path)
            assert missing.headers["WWW-Authenticate"].startswith("Bearer")
            assert "AIRBYTE_FLEET_API_TOKEN" in missing.body["error"]
            wrong = await api.call(method, path, token=TOKEN[:-1] + "X", check=described)
            assert wrong.status == 401, (method, path)
            assert TOKEN not in wrong.text
        basic = await api.call("GET", "/runs", auth=False, headers={"Authorization": TOKEN})
        assert basic.status == 401
        assert (await api.call("GET", "/healthz", auth=False)).body == {"status": "ok"}
        metrics = await api.call("GET", "/metrics", auth=False)
        assert metrics.status == 200
        assert "airbyte_fleet_syncs_total" in metrics.text
        assert (await api.call("GET", "/runs")).status == 200


async def test_invalid_bodies_get_422_with_every_field_error(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (_, api):
        answer = await api.call(
            "POST",
            "/runs",
            body={
                "selection": {"connections": ["not-a-uuid"], "bogus": 1},
                "options": {"max_concurrency": 0, "timeout": "soon", "nope": True},
                "extra": 1,
            },
        )
        assert answer.status == 422
        locs = {tuple(e["loc"]) for e in answer.body["errors"]}
        assert locs == {
            ("selection", "connections"),
            ("selection", "bogus"),
            ("extra",),
            ("options", "max_concurrency"),
            ("options", "timeout"),
            ("options", "nope"),
        }
        assert all(e["msg"] and e["type"] for e in answer.body["errors"])

        not_object = await api.call("POST", "/runs", body=["all"])
        assert not_object.status == 422
        assert not_object.body["errors"] == [
            {"loc": [], "msg": "the body must be a JSON object", "type": "model_type"}
        ]
        options = await api.call("POST", "/runs", body={"options": "fast"})
        assert options.status == 422
        assert options.body["errors"] == [
            {"loc": ["options"], "msg": "Input should be a valid dictionary", "type": "dict_type"}
        ]
        not_json = await api.call("POST", "/runs", data=b"{selection: all}")
        assert not_json.status == 400
        # Where it went wrong, never what it holds.
        assert not_json.body == {
            "error": "The request body is not JSON (key must be a string at line 1 column 2); "
            "send a JSON object."
        }

        nothing = await api.call("POST", "/runs", body={})
        assert nothing.status == 422
        assert nothing.body["error"].startswith("Nothing selected")
        unknown = "00000000-0000-4000-8000-000000000000"
        missing = await api.call("POST", "/runs", body={"selection": {"connections": [unknown]}})
        assert missing.status == 422
        assert unknown in missing.body["error"]

        page = await api.call("GET", "/runs?limit=0&offset=-1")
        assert page.status == 422
        assert {tuple(e["loc"]) for e in page.body["errors"]} == {
            ("query", "limit"),
            ("query", "offset"),
        }
    assert sim.count("POST", "/jobs") == 0


async def test_aiohttps_own_refusals_are_json_too(make_sim: SimFactory, tmp_path: Path) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (_, api):
        nowhere = await api.call("GET", "/nowhere", check=False)
        assert nowhere.status == 404
        assert nowhere.body == {"error": "There is no route GET /nowhere; see /openapi.json."}
        wrong = await api.call("DELETE", "/runs", check=False)
        assert wrong.status == 405
        assert wrong.body == {"error": "/runs does not accept DELETE; see /openapi.json."}
        assert set(wrong.headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}


async def test_a_failing_handler_is_a_500_that_only_the_log_explains(
    make_sim: SimFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (running, api):

        def broken(**_: object) -> list[RunView]:
            raise RuntimeError("boom in /var/lib/fleet")

        monkeypatch.setattr(running.worker, "recent", broken)
        with capture_logs() as logs:
            answer = await api.call("GET", "/runs", check=False)
        assert answer.status == 500
        assert answer.body == {
            "error": "The worker failed on this request; its log has the details."
        }
        assert "boom" not in answer.text
        assert [(e["path"], e["error"]) for e in logs if e["event"] == "request_failed"] == [
            ("/runs", "RuntimeError('boom in /var/lib/fleet')")
        ]


async def test_a_run_the_state_dir_cannot_record_is_refused_with_503(
    make_sim: SimFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (running, api):

        def disk_full(entry: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(running.worker.coordinator, "submit", disk_full)
        with capture_logs() as logs:
            answer = await api.call("POST", "/runs", body={"selection": {"all": True}})
        assert answer.status == 503
        assert answer.body == {"error": "The worker cannot record the run in its state directory."}
        assert [e["error"] for e in logs if e["event"] == "run_not_recorded"] == [
            "[Errno 28] No space left on device"
        ]
        assert (await api.call("GET", "/runs")).body["runs"] == []
    assert sim.count("POST", "/jobs") == 0


async def test_a_store_that_does_not_answer_is_a_503_in_one_sentence(
    make_sim: SimFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (running, api):

        def away(*args: object, **kwargs: object) -> None:
            raise CoordinationError(
                "cannot read the queue in postgresql://fleet@db:5432/fleet (connection refused)"
            )

        monkeypatch.setattr(running.worker.coordinator, "holder", away)
        monkeypatch.setattr(running.worker.coordinator, "queued", away)
        answer = await api.call("GET", "/runs")
        assert answer.status == 503
        assert answer.body == {
            "error": "The worker cannot reach its store (cannot read the queue in "
            "postgresql://fleet@db:5432/fleet (connection refused)); try again later."
        }
        assert (await api.call("GET", "/healthz")).status == 200
        ready = await api.call("GET", "/readyz")
        assert ready.status == 503
        assert ready.body["reason"].startswith("cannot read the queue in postgresql://fleet@db")


async def test_a_stopping_worker_refuses_new_runs_with_503(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (running, api):
        await running.worker.detach()
        answer = await api.call("POST", "/runs", body={"selection": {"all": True}})
        assert answer.status == 503
        assert answer.body == {"error": "The worker is shutting down; submit the run again later."}
        ready = await api.call("GET", "/readyz")
        assert ready.status == 503
        assert ready.body == {"ready": False, "reason": "The worker is shutting down."}
    assert sim.count("POST", "/jobs") == 0


async def test_an_oversized_body_is_refused_with_413(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=1)
    async with worker(root, tmp_path, max_body_bytes=4096) as (_, api):
        names = ["x" * 100] * 60
        answer = await api.call("POST", "/runs", body={"selection": {"names": names}})
        assert answer.status == 413
        assert "larger than 4096 bytes" in answer.body["error"]
        # Also when no length is declared up front (chunked): stopped while it is read.
        async with api.session.post(
            f"{api.base}/runs",
            data=_chunks(json.dumps({"selection": {"names": names}}).encode()),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        ) as r:
            assert r.status == 413
            assert (await r.json())["error"]
    assert sim.count("POST", "/jobs") == 0


async def _chunks(data: bytes) -> object:
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


async def test_openapi_document_is_valid_and_served(make_sim: SimFactory, tmp_path: Path) -> None:
    validate(openapi_document())
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (_, api):
        answer = await api.call("GET", "/openapi.json")
        assert answer.status == 200
        assert answer.body == openapi_document()
        assert answer.body["openapi"].startswith("3.")


async def test_readyz_says_why_airbyte_refuses_us(make_sim: SimFactory, tmp_path: Path) -> None:
    secret = "a-Wrong-Secret-31337"
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path / "bad", client_secret=secret) as (_, api):
        answer = await api.call("GET", "/readyz")
        assert answer.status == 503
        assert answer.body["ready"] is False
        reason = answer.body["reason"]
        assert reason.endswith(".")
        assert "\n" not in reason
        assert secret not in answer.text
    async with worker(root, tmp_path / "good") as (_, api):
        answer = await api.call("GET", "/readyz")
        assert answer.status == 200
        assert answer.body == {"ready": True}


async def test_readyz_when_airbyte_is_gone(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=1)
    await sim.stop()
    async with worker(root, tmp_path, ready_timeout=2.0) as (_, api):
        answer = await api.call("GET", "/readyz")
        assert answer.status == 503
        assert "Airbyte" in answer.body["reason"]


async def test_submitting_fails_cleanly_when_airbyte_refuses_us(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    async with worker(root, tmp_path, client_secret="nope-nope-nope") as (_, api):
        answer = await api.call("POST", "/runs", body={"selection": {"all": True}})
        assert answer.status == 503
        assert answer.body["error"]
        assert (await api.call("GET", "/runs")).body["runs"] == []
    assert sim.count("POST", "/jobs") == 0


def test_an_open_api_on_a_reachable_address_is_refused() -> None:
    # Only "localhost" itself among names: what "app.localhost" resolves to is up to a resolver.
    for host in ("0.0.0.0", "::", "", "192.168.1.10", "fleet.example.com", "app.localhost"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match=r"^Refusing to listen on .* without an API token"):
            check_bind(ServeOptions(host=host))
        check_bind(ServeOptions(host=host, api_token=TOKEN))
    for host in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_bind(ServeOptions(host=host))


async def test_launch_refuses_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AIRBYTE_FLEET_API_TOKEN"):
        async with launch(ServeOptions(host="0.0.0.0", state_dir=tmp_path), environ={}):
            pytest.fail("started")
    assert not (tmp_path / "journal.sqlite3").exists()


def test_serve_options_come_from_flags_then_environment() -> None:
    env = {
        "AIRBYTE_FLEET_HOST": "0.0.0.0",
        "AIRBYTE_FLEET_PORT": "9000",
        "AIRBYTE_FLEET_API_TOKEN": "from-the-env-123456",
        "AIRBYTE_FLEET_MAX_RUNS": "7",
        "AIRBYTE_FLEET_ON_SHUTDOWN": "cancel",
        "AIRBYTE_FLEET_STATE_DIR": "/tmp/x",
    }
    options = ServeOptions.resolve(env, host="127.0.0.1", port=None, max_runs=None)
    assert (options.host, options.port, options.max_runs) == ("127.0.0.1", 9000, 7)
    assert options.on_shutdown == "cancel"
    assert options.token == "from-the-env-123456"
    assert str(options.state_dir) == "/tmp/x"
    defaults = ServeOptions.resolve({})
    assert (defaults.on_shutdown, defaults.max_runs, defaults.token) == ("detach", 4, None)
    with pytest.raises(ConfigError, match=r"^AIRBYTE_FLEET_MAX_RUNS='0' is invalid"):
        ServeOptions.resolve({"AIRBYTE_FLEET_MAX_RUNS": "0"})
    with pytest.raises(ConfigError, match=r"^--on-shutdown is invalid"):
        ServeOptions.resolve({}, on_shutdown="explode")
    with pytest.raises(ConfigError) as caught:
        ServeOptions.resolve({"AIRBYTE_FLEET_API_TOKEN": "tok-Secret-999"}, port="tok-Secret-999")
    assert "tok-Secret-999" not in str(caught.value)


async def test_a_port_in_use_is_one_sentence(make_sim: SimFactory, tmp_path: Path) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path / "one") as (running, _):
        port = int(running.url.rsplit(":", 1)[1])
        options = ServeOptions(host="127.0.0.1", port=port, state_dir=tmp_path / "two")
        with pytest.raises(ConfigError, match=rf"^Cannot listen on 127.0.0.1:{port} .*--port\.$"):
            async with launch(options, settings=settings_for(root), environ={}):
                pytest.fail("started twice on one port")
