"""Helpers for the worker's end-to-end tests: start it on a free loopback port against a simulator,
talk HTTP to it, and check every answer against the worker's own OpenAPI description."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from airbyte_fleet.config import AirbyteSettings
from airbyte_fleet.service import Running, ServeOptions, launch
from airbyte_fleet.service.openapi import openapi_document
from airbyte_fleet.settings_file import FileConfig

TOKEN = "test-Api-Token-0123456789-abcdef"
# Quick runs: the simulator's syncs take a fraction of a second.
FAST_RUN: dict[str, Any] = {"poll_interval": 0.05, "retry_backoff": 0}


def _text(data: bytes, **parameters: str) -> str:
    return data.decode(parameters.get("charset", "utf-8"))


@functools.cache
def spec() -> OpenAPI:
    # openapi-core decodes only the media types it knows; these bodies are text too.
    config = Config(
        extra_media_type_deserializers={
            "text/event-stream": _text,
            "application/openmetrics-text": _text,
        }
    )
    return OpenAPI.from_dict(openapi_document(), config=config)


@dataclass(frozen=True)
class Sse:
    id: int
    event: str
    data: dict[str, Any]


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]
    text: str


@dataclass
class Api:
    """An HTTP client for one worker; every response is checked against /openapi.json."""

    base: str
    session: aiohttp.ClientSession
    token: str | None = TOKEN
    checked: list[str] = field(default_factory=list)

    def _headers(self, token: str | None, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
        token: str | None = None,
        check: bool = True,
    ) -> Answer:
        """*auth* False: no Authorization header; *token*: send this one instead of the right one;
        *check* False: a path the OpenAPI document does not describe (it cannot check it)."""
        sent = self._headers(token or (self.token if auth else None), headers)
        if body is not None:
            data = json.dumps(body).encode()
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        async with self.session.request(method, self.base + path, data=data, headers=sent) as r:
            raw = await r.read()
            answer = Answer(r.status, None, dict(r.headers), raw.decode("utf-8", "replace"))
        if answer.headers.get("Content-Type", "").startswith("application/json"):
            answer.body = json.loads(raw)
        if check:
            self.conform(method, path, sent, data, answer)
        return answer

    def conform(
        self, method: str, path: str, headers: dict[str, str], data: bytes | None, answer: Answer
    ) -> None:
        """The answer is one the OpenAPI document allows for this request."""
        url = urlsplit(path)
        if self.token is None:
            # A worker without a token serves the same document, minus the token check.
            headers = {"Authorization": "Bearer -"} | headers
        request = MockRequest(
            self.base,
            method,
            url.path,
            args=dict(_query(url.query)),
            headers=headers,
            data=data,
            content_type=headers.get("Content-Type", "application/json"),
        )
        content_type = answer.headers.get("Content-Type", "")
        response = MockResponse(
            answer.text.encode(),
            status_code=answer.status,
            headers=answer.headers,
            content_type=content_type,
        )
        if answer.status < 300:
            # What the worker accepted, the document must accept too.
            spec().validate_request(request)
        spec().validate_response(request, response)
        self.checked.append(f"{method} {url.path} {answer.status}")

    async def submit(self, selection: dict[str, Any], **options: Any) -> str:
        answer = await self.call("POST", "/runs", body={"selection": selection, "options": options})
        assert answer.status == 202, answer
        run_id: str = answer.body["run_id"]
        return run_id

    async def events(
        self,
        run_id: str,
        *,
        last_event_id: int | None = None,
        until: Callable[[Sse], bool] | None = None,
        within: float = 20.0,
    ) -> list[Sse]:
        """The run's SSE stream to its end (or until *until* says stop), parsed."""
        headers = self._headers(self.token, None)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        out: list[Sse] = []
        lines: list[str] = []
        async with asyncio.timeout(within):
            async with self.session.get(f"{self.base}/runs/{run_id}/events", headers=headers) as r:
                assert r.status == 200, await r.text()
                assert r.headers["Content-Type"].startswith("text/event-stream")
                fields: dict[str, str] = {}
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    lines.append(line)
                    if not line:
                        if "data" in fields:
                            item = Sse(
                                int(fields["id"]), fields["event"], json.loads(fields["data"])
                            )
                            out.append(item)
                            if until is not None and until(item):
                                break
                        fields = {}
                        continue
                    if line.startswith(":"):
                        continue
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                answer = Answer(r.status, None, dict(r.headers), "\n".join(lines))
        self.conform("GET", f"/runs/{run_id}/events", headers, None, answer)
        return out

    async def finished(self, run_id: str, within: float = 20.0) -> dict[str, Any]:
        """GET the run until it has finished; its result."""
        async with asyncio.timeout(within):
            while True:
                answer = await self.call("GET", f"/runs/{run_id}")
                assert answer.status == 200, answer
                if answer.body["state"] == "finished":
                    result: dict[str, Any] = answer.body["result"]
                    return result
                await asyncio.sleep(0.05)


def _query(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True)


def settings_for(root: str, *, client_secret: str = "sim-secret") -> AirbyteSettings:
    return AirbyteSettings(
        base_url=root + "/api/public/v1", client_id="sim-client", client_secret=client_secret
    )


@contextlib.asynccontextmanager
async def worker(
    root: str,
    state_dir: Path,
    *,
    token: str | None = TOKEN,
    run: dict[str, Any] | None = None,
    file: FileConfig | None = None,
    client_secret: str = "sim-secret",
    **serve: Any,
) -> AsyncIterator[tuple[Running, Api]]:
    """A worker on a free loopback port; leaving the block shuts it down by its policy."""
    options = ServeOptions(
        host="127.0.0.1",
        port=0,
        state_dir=state_dir,
        api_token=token,
        **({"grace": 5.0} | serve),
    )
    config = file or FileConfig(run=FAST_RUN | (run or {}))
    # The session outlives the worker: a stream still open while it shuts down sees its end.
    async with (
        aiohttp.ClientSession() as session,
        launch(
            options,
            settings=settings_for(root, client_secret=client_secret),
            file=config,
            environ={},
        ) as running,
    ):
        yield running, Api(running.url, session, token)


class Crashable:
    """A worker held by a task of its own, so a test can kill it mid-run like a crash would."""

    def __init__(self, root: str, state_dir: Path, **kwargs: Any) -> None:
        self._args = (root, state_dir)
        self._kwargs = kwargs
        self._up: asyncio.Future[tuple[Running, Api]] = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._hold())

    async def _hold(self) -> None:
        try:
            async with worker(*self._args, **self._kwargs) as pair:
                self._up.set_result(pair)
                await asyncio.Event().wait()
        except BaseException as exc:
            if not self._up.done():
                self._up.set_exception(exc)
            raise

    async def up(self) -> tuple[Running, Api]:
        return await self._up

    async def crash(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def until(check: Callable[[], bool | Awaitable[bool]], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while True:
            got = check()
            if not isinstance(got, bool):
                got = await got
            if got:
                return
            await asyncio.sleep(0.02)


@dataclass
class Served:
    """``airbyte-fleet serve`` as a subprocess: its URL, and its stderr in a file (a pipe nobody
    drains would block the worker once full)."""

    process: asyncio.subprocess.Process
    url: str
    stderr: Path

    @property
    def address(self) -> tuple[str, int]:
        host, _, port = self.url.removeprefix("http://").rpartition(":")
        return host.strip("[]"), int(port)

    def err_text(self) -> str:
        return self.stderr.read_text(errors="replace")


def serve_env(root: str, **extra: str) -> dict[str, str]:
    """The environment of a worker process against the simulator at *root*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root, AIRBYTE_CLIENT_ID="sim-client", AIRBYTE_CLIENT_SECRET="sim-secret"
    )
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def serve_process(
    env: Mapping[str, str],
    state_dir: Path,
    *args: str,
    preexec_fn: Callable[[], None] | None = None,
    within: float = 30.0,
) -> AsyncIterator[Served]:
    """``airbyte-fleet serve --port 0`` until it says where it listens; SIGTERM on leaving (kill
    if it does not stop)."""
    stderr = state_dir.with_name(state_dir.name + ".stderr")
    with stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "airbyte_fleet",
            "serve",
            "--port",
            "0",
            "--state-dir",
            str(state_dir),
            *args,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=err,
            preexec_fn=preexec_fn,
        )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(within):
            line = (await process.stdout.readline()).decode()
        assert "listening on " in line, stderr.read_text(errors="replace")
        yield Served(process, line.split("listening on ", 1)[1].split()[0], stderr)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(within):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
