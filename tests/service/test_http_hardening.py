"""The worker's HTTP surface under hostile clients: slow or silent connections, descriptor
exhaustion, cross-site requests from web pages, bad bytes in headers and bodies.

Real sockets throughout: a worker process under a low open-file limit, raw HTTP written byte by
byte where a client library would refuse to send it, and the simulator's counts as the proof that
nothing was triggered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airbyte_fleet.errors import ConfigError
from airbyte_fleet.service import ServeOptions, check_bind
from airbyte_fleet.service.responses import json_response
from conftest import SimFactory

from .support import TOKEN, Served, serve_env, serve_process, until, worker

pytestmark = pytest.mark.anyio

linux_only = pytest.mark.skipif(
    sys.platform != "linux", reason="reads /proc and sets another process's limit"
)


# --------------------------------------------------------------------------- raw HTTP


async def exchange(url: str, request: bytes, within: float = 10.0) -> tuple[int, dict[str, Any]]:
    """Send *request* as is on a new connection; the status and JSON body of the answer."""
    host, _, port = url.removeprefix("http://").rpartition(":")
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(within):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body) if body else {}


def post(
    path: str, body: bytes, *, content_type: str = "application/json", **headers: str
) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name.replace('_', '-')}: {value}" for name, value in headers.items()),
    ]
    return "\r\n".join(lines).encode() + b"\r\n\r\n" + body


def half_open(address: tuple[str, int], count: int) -> list[socket.socket]:
    """*count* connections that never finish a request: half say nothing, half send the start
    of one and stop, as a slow (or hostile) client does."""
    sockets = []
    for i in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(address)  # completes in the kernel's backlog, accepted or not
        if i % 2:
            # The handshake may still be under way; the kernel sends this once it is done.
            with contextlib.suppress(OSError):
                sock.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        sockets.append(sock)
    return sockets


async def healthz_within(served: Served, bound: float) -> float:
    """Seconds until /healthz answers 200 (fails past *bound*)."""
    started = time.monotonic()
    status, body = await exchange(
        served.url,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        within=bound,
    )
    assert (status, body) == (200, {"status": "ok"})
    return time.monotonic() - started


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


# --------------------------------------------------------------------------- 10.5 slow clients


def _fd_limit_256() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@linux_only
async def test_silent_connections_cannot_exhaust_descriptors_or_block_healthz(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    env = serve_env(root, AIRBYTE_FLEET_HEADER_TIMEOUT="5")
    async with serve_process(env, tmp_path / "state", preexec_fn=_fd_limit_256) as served:
        clients = half_open(served.address, 300)
        try:
            # 300 silent clients against a worker allowed 256 descriptors: it accepts up to its
            # cap, below the limit, and each newcomer takes the slot of the oldest client that
            # has not sent a request head; /healthz is answered long before any header timeout.
            took = await healthz_within(served, bound=20.0)
            assert open_fds(served.process.pid) < 256
            # Every silent client is cut off, the last ones by the header timeout.
            await until(lambda: all(_closed_by_peer(s) for s in clients), within=20.0)
        finally:
            for sock in clients:
                sock.close()
    assert took < 4.0  # less than the header timeout: no waiting for silent clients to go
    err = served.err_text()
    assert served.process.returncode == 0
    assert "Too many open files" not in err
    assert "Traceback" not in err
    assert len(err.splitlines()) < 10, err[:2000]


async def test_at_the_cap_a_silent_client_yields_and_a_busy_one_keeps_its_slot(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    async with worker(root, tmp_path, token=None, max_clients=3, header_timeout=60) as (
        running,
        _,
    ):
        host, _, port = running.url.removeprefix("http://").rpartition(":")
        # Two clients with a request under way: the head is in (the worker says go on), the
        # body still to come.
        body = b'{"unknown": 1}'
        busy = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(post("/runs", body, Expect="100-continue").removesuffix(body))
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 ")
            busy.append((reader, writer))
        # Silent clients fill the last slot one after the other, each pushing out the one before.
        silent = half_open((host, int(port)), 5)
        try:
            status, _ = await exchange(
                running.url,
                b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            assert status == 200
            await until(lambda: all(_closed_by_peer(s) for s in silent), within=10.0)
        finally:
            for sock in silent:
                sock.close()
        for reader, writer in busy:
            writer.write(body)
            async with asyncio.timeout(10):
                answer = await reader.read()
            writer.close()
            assert answer.startswith(b"HTTP/1.1 422 "), answer[:200]
    assert sim.count("POST", "/jobs") == 0


def _closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True  # reset


def _lower_limit_of(pid: int, soft: int) -> None:
    _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))


@linux_only
async def test_running_out_of_descriptors_is_logged_once_and_recovered_from(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    env = serve_env(root, AIRBYTE_FLEET_HEADER_TIMEOUT="30")
    async with serve_process(env, tmp_path / "state", preexec_fn=_fd_limit_256) as served:
        pid = served.process.pid
        # Something else took the descriptors the cap counted on: only 4 are left.
        _lower_limit_of(pid, open_fds(pid) + 4)
        clients = half_open(served.address, 60)
        try:
            await until(lambda: "out_of_file_descriptors" in served.err_text(), within=10.0)
            # Accepting is retried several times a second meanwhile: still one line.
            retries_done = time.monotonic() + 1.0
            await until(lambda: time.monotonic() > retries_done, within=5.0)
            assert served.err_text().count("out_of_file_descriptors") == 1
        finally:
            for sock in clients:
                sock.close()
        # The clients are gone, their descriptors are free: the worker serves again at once.
        took = await healthz_within(served, bound=10.0)
    err = served.err_text()
    assert err.count("out_of_file_descriptors") == 1
    assert "Traceback" not in err
    assert len(err.splitlines()) < 10, err[:2000]
    assert took < 10.0


async def test_a_body_that_does_not_arrive_in_time_is_refused_with_408(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=2)
    async with worker(root, tmp_path, token=None, body_timeout=0.5, header_timeout=0.5) as (
        running,
        _,
    ):
        host, _, port = running.url.removeprefix("http://").rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps({"selection": {"all": True}}).encode()
        # The headers promise a body, and only its first half ever comes.
        request = post("/runs", body)
        writer.write(request[: len(request) - len(body) // 2])
        await writer.drain()
        started = time.monotonic()
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 408 ")
        assert b"did not arrive within 0.5 s" in answer
        assert time.monotonic() - started < 8

        # Headers that never end: the connection is closed, nothing is answered.
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: appl")
        await writer.drain()
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        writer.close()
    assert sim.count("POST", "/jobs") == 0


# --------------------------------------------------------------------------- 10.6 cross-site


async def test_web_pages_cannot_trigger_or_cancel_runs_of_a_tokenless_worker(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3)
    async with worker(root, tmp_path, token=None) as (running, api):
        body = {"selection": {"all": True}}
        raw = json.dumps(body).encode()
        # A form post or a no-cors fetch: text/plain, the only types a page may send freely.
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            answer = await api.call(
                "POST", "/runs", data=raw, headers={"Content-Type": content_type}
            )
            assert answer.status == 415, answer
            assert "Content-Type: application/json" in answer.body["error"]
        bare = await exchange(running.url, post("/runs", b"", content_type="text/plain"))
        assert bare[0] == 415
        # Declared JSON, but sent by a page of another origin (or a browser that says so).
        for headers in (
            {"Origin": "http://evil.example"},
            {"Origin": "null"},
            {"Origin": running.url.replace("127.0.0.1", "localhost")},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site", "Origin": running.url},
        ):
            answer = await api.call("POST", "/runs", body=body, headers=headers)
            assert answer.status == 403, (headers, answer)
            assert "web pages of other sites" in answer.body["error"]
        # A page whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends requests that
        # look same-origin; a worker without a token answers only loopback names.
        port = running.url.rsplit(":", 1)[1]
        for method, path in (("POST", "/runs"), ("GET", "/runs"), ("GET", "/healthz")):
            rebound = await api.call(
                method,
                path,
                body=body if method == "POST" else None,
                headers={"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"},
            )
            assert rebound.status == 403, (method, path, rebound)
            assert "AIRBYTE_FLEET_API_TOKEN" in rebound.body["error"]
        assert sim.count("POST", "/jobs") == 0
        assert (await api.call("GET", "/runs")).body["runs"] == []

        # The worker's own origin, and scripts (no Origin at all), are served.
        own = await api.call(
            "POST",
            "/runs",
            body=body,
            headers={"Origin": running.url, "Sec-Fetch-Site": "same-origin"},
        )
        assert own.status == 202, own
        run_id = own.body["run_id"]
        cancel = await api.call(
            "POST", f"/runs/{run_id}/cancel", headers={"Origin": "http://evil.example"}
        )
        assert cancel.status == 403
        result = await api.finished(run_id)
        assert result["outcome"] == "succeeded"  # the foreign cancel changed nothing
    assert sim.count("POST", "/jobs") == 3
    assert sim.count("DELETE", "/jobs/{jobId}") == 0


async def test_a_worker_with_a_token_answers_any_host_name(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    _, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (running, api):
        port = running.url.rsplit(":", 1)[1]
        answer = await api.call("GET", "/runs", headers={"Host": f"fleet.example:{port}"})
        assert answer.status == 200
        foreign = await api.call(
            "POST", "/runs", body={"selection": {"all": True}}, headers={"Origin": "http://x.y"}
        )
        assert foreign.status == 403


# --------------------------------------------------------------------------- 10.7 header bytes


async def test_bad_bytes_in_the_authorization_header_are_a_401(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=1)
    async with worker(root, tmp_path) as (running, _):
        for value in (
            b"Bearer \xff\xfe\xfd",
            "Bearer tökén-0123456789".encode(),
            b"Bearer " + TOKEN.encode() + b"\xe9",
            b"\xc3\x28 " + TOKEN.encode(),
            b"Bearer \xed\xa0\x80",
        ):
            request = post("/runs", b'{"selection": {"all": true}}', Authorization="")
            request = request.replace(b"Authorization: ", b"Authorization: " + value)
            status, body = await exchange(running.url, request)
            assert status == 401, (value, body)
            assert body["error"] == "The bearer token is not the one this worker was started with."
    assert sim.count("POST", "/jobs") == 0


@pytest.mark.parametrize(
    ("host", "token", "says"),
    [
        ("0.0.0.0", "tökén-0123456789abcdef", "must be printable ASCII with no spaces"),
        ("127.0.0.1", "with space-0123456789", "must be printable ASCII with no spaces"),
        ("127.0.0.1", "tab\there-0123456789", "must be printable ASCII with no spaces"),
        ("0.0.0.0", "fifteen-chars-1", "shorter than 16 characters for an API on a reachable"),
        ("fleet.example.com", "Short-1", "shorter than 16 characters for an API on a reachable"),
        ("app.localhost", "Short-1", "shorter than 16 characters for an API on a reachable"),
        ("127.0.0.1", "ab3", "shorter than 4 characters;"),
    ],
)
def test_a_token_unfit_for_the_bind_refuses_to_start(host: str, token: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_bind(ServeOptions(host=host, api_token=token))
    message = caught.value.message
    assert says in message
    assert message.startswith("AIRBYTE_FLEET_API_TOKEN ")
    assert message.endswith("'openssl rand -hex 32'.")
    assert token not in message


def test_tokens_fit_for_the_bind_are_accepted() -> None:
    check_bind(ServeOptions(host="0.0.0.0", api_token="sixteen-chars-16"))
    check_bind(ServeOptions(host="::1", api_token="abcd"))
    check_bind(ServeOptions(host="localhost", api_token="!#$%&'()*+,-./~"))


# --------------------------------------------------------------------------- 10.8 bad bodies


async def test_deep_or_unencodable_bodies_are_refused_and_trigger_nothing(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=2)
    async with worker(root, tmp_path) as (_, api):
        for raw in (
            b"[" * 30_000,
            b'{"a":' * 5000,
            b'{"selection": {"names": ' + b"[" * 5000 + b"]" * 5000 + b"}}",
            # A lone surrogate, JSON-escaped and as the bytes some encoders write for it.
            b'{"selection": {"names": ["\\ud800"]}}',
            b'{"selection": {"tags": ["a\\udfff"]}}',
            b'{"selection": {"groups": ["\\ud800x"]}}',
            b'{"selection": {"names": ["\xed\xa0\x80"]}}',
            b'{"options": {"timeout": NaN}}',
        ):
            answer = await api.call("POST", "/runs", data=raw)
            assert answer.status == 400, (raw[:60], answer)
            assert answer.body["error"].startswith("The request body is not JSON (")
            assert answer.body["error"].endswith("); send a JSON object.")
        # Deep, but within what is parsed: answered field by field.
        nested = {"selection": {"names": json.loads("[" * 150 + "]" * 150)}}
        answer = await api.call("POST", "/runs", body=nested)
        assert answer.status == 422, answer
        # Bad bytes elsewhere than the body are no 500 either.
        assert (await api.call("GET", "/runs?limit=%ED%A0%80")).status == 422
        assert (await api.call("GET", "/runs/%ED%A0%80")).status == 404
        assert (await api.call("GET", "/runs/%ED%A0%80/events")).status == 404
        missing = await api.call("POST", "/runs/%ED%A0%80/cancel")
        assert missing.status == 404
        nowhere = await api.call("GET", "/%ED%A0%80", check=False)
        assert nowhere.status == 404
    assert sim.count("POST", "/jobs") == 0


async def test_field_errors_never_echo_what_was_sent(make_sim: SimFactory, tmp_path: Path) -> None:
    sim, root = await make_sim(connections=1)
    secret = "pasted-Secret-4711"
    async with worker(root, tmp_path) as (_, api):
        answer = await api.call(
            "POST",
            "/runs",
            body={
                "selection": {"connections": [f"x{secret}"], "names": [{"k": secret}]},
                "options": {"timeout": secret, "poll_interval": -3, "job_type": secret},
            },
        )
        assert answer.status == 422
        assert secret not in answer.text
        assert "-3" not in answer.text
        by_loc = {tuple(e["loc"]): e["msg"] for e in answer.body["errors"]}
        assert by_loc[("options", "timeout")].startswith("the value is not a duration")
        assert by_loc[("selection", "connections")] == "the value is not a UUID"
        assert "'sync'" in by_loc[("options", "job_type")]  # what is expected is still said
    assert sim.count("POST", "/jobs") == 0


def test_an_answer_holding_undecodable_text_is_still_json() -> None:
    # Header bytes that are not UTF-8 reach the code as lone surrogates; an answer quoting one
    # must not fail (a 500) for want of an encoding.
    response = json_response({"error": "no run 'a\udc80b'"}, 404)
    assert response.status == 404
    assert isinstance(response.body, bytes)
    assert json.loads(response.body) == {"error": "no run 'a\udc80b'"}
