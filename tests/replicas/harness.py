"""Real processes for the replica tests: the simulator, ``serve`` replicas and ``run`` commands,
each a subprocess whose output goes to files; a TCP proxy in front of PostgreSQL that a test cuts
and restores; and the reads of the shared database a test checks its counts against.

Every process is started through a :class:`Fleet`, which kills whatever is still running when its
block is left, whether the test passed or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psycopg

from conftest import client_for

__all__ = [
    "SECRET",
    "TERMINAL",
    "TOKEN",
    "Fleet",
    "Proc",
    "Replica",
    "Sim",
    "TcpProxy",
    "fatal_lines",
    "intents",
    "journal_runs",
    "leases",
    "live_owners",
    "overlapping_jobs",
    "owner_pid",
    "schedule_fires",
    "unaccounted_jobs",
    "until",
]

SECRET = "replica-Secret-97531-qrst"
TOKEN = "replica-Token-0123456789-abcdef"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


# --------------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """One subprocess; stdout and stderr go to files, so no pipe fills while nobody reads it."""

    name: str
    process: asyncio.subprocess.Process
    out: Path
    err: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr (other lines, if any, are left out)."""
        events = []
        for line in self.stderr().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    events.append(json.loads(line))
        return events

    async def wait(self, within: float) -> int:
        async with asyncio.timeout(within):
            return await self.process.wait()

    async def kill(self) -> None:
        """SIGKILL, as a crash or an OOM killer would: no handler runs."""
        if self.alive:
            self.process.kill()
        await self.process.wait()

    async def term(self, within: float = 60.0) -> int:
        """SIGTERM, then SIGKILL if it has not ended within *within* seconds."""
        if self.alive:
            self.process.send_signal(signal.SIGTERM)
        try:
            return await self.wait(within)
        except TimeoutError:
            await self.kill()
            raise AssertionError(f"{self.name} did not stop within {within}s of SIGTERM") from None

    def stray_lines(self) -> list[str]:
        """Lines on stderr that are not JSON objects (under ``--log-format json`` every line,
        the last sentence included, is one)."""
        stray = []
        for line in self.stderr().splitlines():
            if not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict):
                stray.append(line)
        return stray

    def assert_no_traceback(self) -> None:
        assert "Traceback" not in self.stderr(), f"{self.name}:\n{self.stderr()[-4000:]}"


@dataclass
class Sim:
    """``airbyte-fleet simulate`` in its own process, steered and counted over its control routes."""

    proc: Proc
    url: str
    session: aiohttp.ClientSession

    async def stats(self, *, jobs: bool = True) -> dict[str, Any]:
        query = "" if jobs else "?jobs=false"
        async with self.session.get(f"{self.url}/_simulator/stats{query}") as r:
            assert r.status == 200, await r.text()
            stats: dict[str, Any] = await r.json()
            return stats

    async def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = (await self.stats())["jobs"]
        return jobs

    async def posts(self) -> int:
        """``POST /jobs`` requests received (a refused one counts: it was an attempt)."""
        stats = await self.stats(jobs=False)
        return int(stats["requests"].get("POST /jobs", 0))

    async def connection_ids(self) -> list[str]:
        """Every connection, in the simulator's order, read through the project's own client."""
        client = client_for(self.url, client_secret=SECRET)
        async with client:
            return [c.connection_id for c in await client.list_connections()]


@dataclass
class Replica:
    """One ``airbyte-fleet serve`` process and its HTTP API."""

    proc: Proc
    url: str
    session: aiohttp.ClientSession

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    async def submit(self, selection: Mapping[str, Any], **options: Any) -> str:
        body = {"selection": dict(selection), "options": options}
        async with self.session.post(f"{self.url}/runs", json=body, headers=self._headers()) as r:
            text = await r.text()
            assert r.status == 202, f"{r.status} {text}"
            run_id: str = json.loads(text)["run_id"]
            return run_id

    async def status(self, run_id: str) -> dict[str, Any]:
        async with self.session.get(f"{self.url}/runs/{run_id}", headers=self._headers()) as r:
            text = await r.text()
            assert r.status == 200, f"GET /runs/{run_id} from {self.proc.name}: {r.status} {text}"
            status: dict[str, Any] = json.loads(text)
            return status

    async def owner(self, run_id: str) -> str | None:
        owner: str | None = (await self.status(run_id)).get("owner")
        return owner


class Fleet:
    """Starts the processes of one test and kills every one still running when the block ends.

    ``async with Fleet(tmp_path) as fleet:``; each process writes ``NAME.out`` and ``NAME.err`` in
    *workdir*, so a failing test leaves what every process said next to its state.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []
        self._names: Counter[str] = Counter()
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use the Fleet as `async with`"
        return self._session

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            for proc in self.procs:
                if proc.alive:
                    with contextlib.suppress(ProcessLookupError):
                        proc.process.kill()
            for proc in self.procs:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.process.wait(), 10)
        finally:
            if self._session is not None:
                await self._session.close()

    # -- starting processes --------------------------------------------------------------------

    async def spawn(
        self, name: str, args: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None
    ) -> Proc:
        """``python -m airbyte_fleet ARGS``; *name* gets a number when used before."""
        return await self._spawn(self._unique(name), args, env=env, cwd=cwd)

    def _unique(self, name: str) -> str:
        self._names[name] += 1
        count = self._names[name]
        return name if count == 1 else f"{name}-{count}"

    async def _spawn(
        self, name: str, args: Sequence[str], *, env: Mapping[str, str], cwd: Path | None
    ) -> Proc:
        out = self.workdir / f"{name}.out"
        err = self.workdir / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "airbyte_fleet",
                *args,
                env=dict(env),
                cwd=cwd or self.workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        proc = Proc(name, process, out, err)
        self.procs.append(proc)
        return proc

    async def listening(self, proc: Proc, within: float = 30.0) -> str:
        """The URL *proc* prints on its ``listening on URL`` line."""
        deadline = time.monotonic() + within
        while True:
            text = proc.stdout()
            if "listening on " in text:
                return text.split("listening on ", 1)[1].split()[0]
            if not proc.alive:
                raise AssertionError(f"{proc.name} ended before listening:\n{proc.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{proc.name} not listening after {within}s:\n{proc.stderr()}")
            await asyncio.sleep(0.05)

    def env(self, sim: Sim | None, **extra: str) -> dict[str, str]:
        """A clean environment (no AIRBYTE_* from the caller's shell) against *sim*."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
        if sim is not None:
            env.update(
                AIRBYTE_BASE_URL=sim.url,
                AIRBYTE_CLIENT_ID="sim-client",
                AIRBYTE_CLIENT_SECRET=SECRET,
            )
        env.update(extra)
        return env

    async def simulator(
        self,
        *,
        connections: int,
        sync_seconds: tuple[float, float],
        seed: int = 1,
        workspaces: int = 2,
    ) -> Sim:
        """A simulator whose syncs all succeed at the first attempt, in a process of its own."""
        low, high = sync_seconds
        proc = await self.spawn(
            "simulator",
            [
                "simulate",
                "--port",
                "0",
                "--connections",
                str(connections),
                "--workspaces",
                str(workspaces),
                "--sync-seconds",
                f"{low}:{high}",
                "--failure-rate",
                "0",
                "--incomplete-rate",
                "0",
                "--seed",
                str(seed),
                "--client-secret",
                SECRET,
            ],
            env=self.env(None),
        )
        return Sim(proc, await self.listening(proc), self.session)

    async def replica(
        self,
        sim: Sim,
        *,
        database_url: str | None,
        lease: str | None = None,
        config: Path | None = None,
        max_runs: int | None = None,
        args: Sequence[str] = (),
        name: str = "replica",
    ) -> Replica:
        """``airbyte-fleet serve --port 0`` with its own state directory, on *database_url*."""
        name = self._unique(name)
        state_dir = self.workdir / f"{name}.state"
        argv = ["serve", "--port", "0", "--state-dir", str(state_dir)]
        if database_url is not None:
            argv += ["--database-url", database_url]
        if lease is not None:
            argv += ["--lease", lease]
        if config is not None:
            argv += ["--config", str(config)]
        if max_runs is not None:
            argv += ["--max-runs", str(max_runs)]
        argv += ["--log-format", "json", *args]
        env = self.env(sim, AIRBYTE_FLEET_API_TOKEN=TOKEN)
        proc = await self._spawn(name, argv, env=env, cwd=None)
        return Replica(proc, await self.listening(proc), self.session)

    async def cli(self, sim: Sim, args: Sequence[str], *, cwd: Path, name: str = "run") -> Proc:
        """``airbyte-fleet ARGS`` in *cwd* (a working directory of its own, as a new container)."""
        _make_dir(cwd)
        return await self.spawn(name, args, env=self.env(sim), cwd=cwd)


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


async def until(check: Any, within: float, what: str, every: float = 0.1) -> Any:
    """Poll *check* (sync or async, no arguments) until it returns something truthy; that value."""
    deadline = time.monotonic() + within
    while True:
        got = check()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(every)


def fatal_lines(proc: Proc) -> list[dict[str, Any]]:
    """The ``fatal`` log lines: the one sentence a failed command ends with."""
    return [e for e in proc.log_events() if e.get("event") == "fatal"]


# ------------------------------------------------------------------------------ proxy


class TcpProxy:
    """A TCP hop in front of PostgreSQL: :meth:`cut` drops every connection through it and
    refuses new ones (as a network partition would, from the client's side) until
    :meth:`restore`."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = upstream
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 5432
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.is_cut = False
        self.connections = 0
        # Connections cut while open, and connections refused while cut: what the cut touched.
        self.dropped = 0
        self.refused = 0

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self._drop()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        """*upstream* with its host and port replaced by the proxy's."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        parts = urlsplit(self._upstream)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> None:
        self.is_cut = True
        self.dropped += self._drop()

    def restore(self) -> None:
        self.is_cut = False

    def _drop(self) -> int:
        # Two writers a connection: the client's side and PostgreSQL's.
        count = len(self._writers) // 2
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        return count

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


# ------------------------------------------------------------------------ the shared database


def _rows(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        return list(conn.execute(query, params).fetchall())


def leases(url: str) -> dict[str, tuple[str, datetime]]:
    """Every ``run_leases`` row, live or not: run id -> (owner, lease_until)."""
    return {run_id: (owner, until) for run_id, owner, until in _rows(url, _LEASES)}


_LEASES = "SELECT run_id, owner, lease_until FROM run_leases"


def live_owners(url: str) -> set[str]:
    """The owners of every lease that has not expired (by the database's clock)."""
    return {
        owner for (owner,) in _rows(url, "SELECT owner FROM run_leases WHERE lease_until > now()")
    }


def owner_pid(owner: str) -> int:
    """The process id in an owner string ``<hostname>:<pid>:<6 hex>``."""
    return int(owner.rsplit(":", 2)[1])


def schedule_fires(url: str, schedule: str) -> dict[datetime, str]:
    """Tick -> the run it fired, for *schedule*."""
    rows = _rows(url, "SELECT tick, run_id FROM schedule_fires WHERE schedule = %s", schedule)
    return {tick: run_id for tick, run_id in rows}


def journal_runs(url: str) -> dict[str, tuple[datetime | None, str | None]]:
    """Every run the journal holds: run id -> (finished_at, outcome)."""
    rows = _rows(url, "SELECT run_id, finished_at, outcome FROM runs")
    return {run_id: (finished, outcome) for run_id, finished, outcome in rows}


def intents(url: str) -> dict[str, list[datetime]]:
    """Connection -> when each ``sync_triggering`` intent was journaled (any run)."""
    out: dict[str, list[datetime]] = defaultdict(list)
    for connection_id, data in _rows(
        url, "SELECT connection_id, data FROM events WHERE kind = 'sync_triggering'"
    ):
        event = data if isinstance(data, dict) else json.loads(data)
        out[connection_id].append(datetime.fromisoformat(event["at"]))
    return dict(out)


# ------------------------------------------------------------------------------ job checks


def _instant(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def overlapping_jobs(jobs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Connections with two jobs whose [start, last update] spans overlap (whole seconds, as the
    simulator reports them: a job may start in the second the previous one ended)."""
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for job in jobs:
        start = _instant(job["startTime"])
        end = _instant(job["lastUpdatedAt"]) if "lastUpdatedAt" in job else float("inf")
        spans[job["connectionId"]].append((start, end))
    bad = []
    for connection_id, items in spans.items():
        items.sort()
        if any(later[0] < earlier[1] for earlier, later in itertools.pairwise(items)):
            bad.append(connection_id)
    return bad


def unaccounted_jobs(
    jobs: Iterable[Mapping[str, Any]], results: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The simulator's jobs that no run's result names (in a sync's ``job_id`` or history):
    each one is a trigger nobody followed, a duplicate."""
    named: set[int] = set()
    for result in results:
        for sync in result["syncs"]:
            if sync.get("job_id") is not None:
                named.add(int(sync["job_id"]))
            named.update(int(a["job_id"]) for a in sync.get("history", []) if a.get("job_id"))
    return [dict(job) for job in jobs if int(job["jobId"]) not in named]
