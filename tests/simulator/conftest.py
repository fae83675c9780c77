"""Fixtures for the simulator tests: a raw aiohttp client over loopback and spec checks.

Every 2xx JSON body and every problem body the simulator sends during a test is checked at
teardown against the official schemas (an independent check; it shares nothing with the
project's own spec validator or client). ``spec_files`` finds the schema files; without them the
checks are off and the session says so once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jsonschema
import pytest
import yaml

from airbyte_fleet.simulator import Exchange, FakeClock, Simulator, SimulatorOptions
from spec_files import spec_source

PUBLIC = "/api/public/v1"
LEGACY = "/v1"

_RESPONSE_SCHEMAS = {
    ("GET", "/jobs"): "JobsResponse",
    ("POST", "/jobs"): "JobResponse",
    ("GET", "/jobs/{jobId}"): "JobResponse",
    ("DELETE", "/jobs/{jobId}"): "JobResponse",
    ("GET", "/connections"): "ConnectionsResponse",
    ("GET", "/connections/{connectionId}"): "ConnectionResponse",
    ("GET", "/workspaces"): "WorkspacesResponse",
    ("POST", "/applications/token"): "PublicAccessTokenResponse",
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _load(name: str) -> dict[str, Any]:
    directory = spec_source().directory
    assert directory is not None
    with (directory / name).open("rb") as handle:
        data: dict[str, Any] = yaml.load(
            handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        )
    return data


@dataclass
class Schemas:
    """Component schemas of the spec files, with a strict (no unknown fields) check."""

    sdk: dict[str, Any]
    api: dict[str, Any]
    problems: dict[str, Any]
    problem_by_title: dict[str, str] = field(default_factory=dict)
    _validators: dict[tuple[int, str], Any] = field(default_factory=dict)

    def _resolve(self, root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = root["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def _unknown_fields(self, root: dict[str, Any], node: Any, value: Any, path: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        node = self._resolve(root, node)
        found: list[str] = []
        if isinstance(value, dict):
            props: dict[str, Any] = {}
            for part in [node, *[self._resolve(root, p) for p in node.get("allOf", [])]]:
                props.update(part.get("properties", {}))
            if props:
                found += [f"{path}.{key}" for key in value if key not in props]
                for key, sub in value.items():
                    found += self._unknown_fields(root, props.get(key), sub, f"{path}.{key}")
        elif isinstance(value, list) and "items" in node:
            for index, item in enumerate(value):
                found += self._unknown_fields(root, node["items"], item, f"{path}[{index}]")
        return found

    def check(self, root: dict[str, Any], name: str, instance: Any) -> list[str]:
        validator = self._validators.get((id(root), name))
        if validator is None:
            schema = {"$ref": f"#/components/schemas/{name}", "components": root["components"]}
            validator = self._validators[(id(root), name)] = jsonschema.Draft202012Validator(schema)
        errors = [f"{name}: {e.json_path}: {e.message}" for e in validator.iter_errors(instance)]
        unknown = self._unknown_fields(
            root, {"$ref": f"#/components/schemas/{name}"}, instance, "$"
        )
        return errors + [f"{name}: field not in the spec: {path}" for path in unknown]

    def check_exchange(self, exchange: Exchange) -> list[str]:
        if exchange.status == 0 or exchange.route is None:
            return []
        if exchange.fault not in (None, "slow_post"):
            return []  # broken on purpose (garbled body, status outside the enum, ...)
        ctype = exchange.response_headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            return []
        if ctype != "application/json":
            return [f"content-type is {ctype!r}"]
        body = json.loads(exchange.response_body)
        if exchange.status == 200:
            name = _RESPONSE_SCHEMAS[(exchange.method, exchange.route)]
            root = self.api if exchange.route == "/applications/token" else self.sdk
            return self.check(root, name, body)
        if isinstance(body, dict) and "title" in body:
            name = self.problem_by_title[body["title"]]
            problems = self.check(self.problems, name, body)
            defaults = self._problem_defaults(name)
            problems += [
                f"{name}.{key} is {body.get(key)!r}, the spec's constant is {want!r}"
                for key, want in defaults.items()
                if body.get(key) != want
            ]
            return problems
        return []

    def _problem_defaults(self, name: str) -> dict[str, Any]:
        schema = self.problems["components"]["schemas"][name]
        defaults: dict[str, Any] = {}
        for part in schema.get("allOf", []):
            for key, prop in part.get("properties", {}).items():
                if "default" in prop:
                    defaults[key] = prop["default"]
        return defaults


@pytest.fixture(scope="session")
def schemas() -> Schemas | None:
    if not spec_source().found:
        return None
    problems = _load("api-problems.current.yaml")
    result = Schemas(
        sdk=_load("public-api-v1.current.api_sdk.yaml"),
        api=_load("public-api-v1.current.api.yaml"),
        problems=problems,
    )
    for name, schema in problems["components"]["schemas"].items():
        for part in schema.get("allOf", []):
            title = part.get("properties", {}).get("title", {}).get("default")
            if title:
                result.problem_by_title.setdefault(title, name)
    return result


@dataclass
class Reply:
    status: int
    headers: Any
    body: Any
    raw: bytes


@dataclass
class Api:
    """A simulator plus a raw aiohttp session aimed at one prefix."""

    sim: Simulator
    root: str
    session: aiohttp.ClientSession
    clock: FakeClock
    prefix: str = PUBLIC
    token: str | None = None

    def url(self, path: str, prefix: str | None = None) -> str:
        return f"{self.root}{self.prefix if prefix is None else prefix}{path}"

    def auth_headers(self) -> dict[str, str]:
        if self.sim.options.auth != "client_credentials":
            return {}
        if self.token is None:
            self.token = self.sim.issue_token()
        return {"Authorization": f"Bearer {self.token}"}

    async def call(
        self,
        method: str,
        path: str,
        *,
        prefix: str | None = None,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Reply:
        sent = {**(self.auth_headers() if auth else {}), **(headers or {})}
        async with self.session.request(
            method, self.url(path, prefix), headers=sent, **kwargs
        ) as response:
            raw = await response.read()
            body: Any = raw.decode("utf-8", "replace")
            if response.content_type == "application/json":
                try:
                    body = json.loads(raw)
                except ValueError:  # a deliberately garbled body: tests look at ``raw``
                    body = None
            return Reply(response.status, response.headers, body, raw)

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("POST", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> Reply:
        return await self.call("DELETE", path, **kwargs)

    def connection_ids(self) -> list[str]:
        return [c["connectionId"] for c in self.sim.connections]


StartApi = Callable[..., Awaitable[Api]]


@pytest.fixture
async def start(schemas: Schemas | None) -> AsyncIterator[StartApi]:
    """``await start(**options)`` runs a simulator on a FakeClock and returns an ``Api``."""
    stack = AsyncExitStack()
    started: list[Simulator] = []

    async def _start(clock: FakeClock | None = None, **options: Any) -> Api:
        clock = clock or FakeClock()
        sim = Simulator(SimulatorOptions(**options), clock=clock)
        root = await stack.enter_async_context(sim.serve())
        session = await stack.enter_async_context(aiohttp.ClientSession())
        started.append(sim)
        return Api(sim=sim, root=root, session=session, clock=clock)

    async with stack:
        yield _start
    if schemas is None:
        return
    problems = [p for sim in started for e in sim.exchanges for p in schemas.check_exchange(e)]
    assert not problems, "schema violations:\n" + "\n".join(problems[:20])
