"""Library logging (issue 12): a program embedding airbyte-fleet gets its lines as records of the
standard ``logging`` module under ``airbyte_fleet``, silent until it configures logging, never on
stdout, with structlog's global configuration (the host's) left alone; the CLI's lines stay as
they were."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import anyio
import pytest
import stamina.instrumentation
import structlog
from aiohttp import web
from stamina.instrumentation import RetryDetails

from airbyte_fleet import run_syncs_blocking
from airbyte_fleet._logging import configure_logging, get_logger, reset_logging
from airbyte_fleet._redact import register_secret
from airbyte_fleet._stdlib_logging import quiet_stamina_for_own_retries
from airbyte_fleet.api import ServerError
from airbyte_fleet.simulator import JobScript
from conftest import SimFactory, misbehaving_proxy

# Every character some escaper rewrites: a backslash, a quote, a space, a slash, non-ASCII.
SECRET = 'lib\\rary"se cret/ö€😀'
ROOT = "airbyte_fleet"


def _spellings(secret: str) -> list[str]:
    """The secret as text shows it: raw, repr'd, JSON-escaped, URL-encoded (quotes left off)."""
    return [
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret),
    ]


class Records(logging.Handler):
    """Every record that reaches the ``airbyte_fleet`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self) -> list[str]:
        return [fields(r)["event"] for r in self.records]

    def named(self, event: str) -> list[logging.LogRecord]:
        return [r for r in self.records if fields(r)["event"] == event]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = record.__dict__["airbyte_fleet"]
    return found


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    # Overrides conftest's: these tests are about the library's own mode, the default.
    reset_logging()
    yield
    structlog.reset_defaults()
    reset_logging()


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger(ROOT)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture
def airbyte_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The API reads the environment and ./config/airbyte-fleet.toml: none of either but ours.
    for key in list(os.environ):
        if key.startswith(("AIRBYTE_", "USE_SERVER_AUTH")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIRBYTE_CLIENT_ID", "sim-client")
    monkeypatch.setenv("AIRBYTE_CLIENT_SECRET", SECRET)


async def _run(monkeypatch: pytest.MonkeyPatch, base_url: str) -> Any:
    monkeypatch.setenv("AIRBYTE_BASE_URL", base_url)
    return await anyio.to_thread.run_sync(
        lambda: run_syncs_blocking({"all": True}, {"poll_interval": "50ms"})
    )


# ------------------------------------------------------------------- a host program's view

# A host that embeds the library: the simulator on a thread of its own (with faults, so the
# client retries through stamina), then one run through the API. It reports on a file: its
# stdout must stay empty.
HOST = textwrap.dedent(
    """
    import asyncio, json, logging, os, sys, threading
    from airbyte_fleet.simulator import JobScript, Simulator, SimulatorOptions

    if sys.argv[1] == "debug":
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    secret = os.environ["AIRBYTE_CLIENT_SECRET"]
    sim = Simulator(SimulatorOptions(
        connections=3, sync_seconds=(0.05, 0.1), failure_rate=0.0, incomplete_rate=0.0,
        client_secret=secret, token_failures=2, rate_429=0.2, seed=3,
    ))
    started, box = threading.Event(), {}

    async def serve():
        box["loop"], box["stop"] = asyncio.get_running_loop(), asyncio.Event()
        os.environ["AIRBYTE_BASE_URL"] = await sim.start("127.0.0.1", 0)
        # A failed sync: its record is an error, which Python would print by itself.
        sim.script(sim.connections[0]["connectionId"], JobScript(seconds=0.05, final="failed"))
        started.set()
        await box["stop"].wait()
        await sim.stop()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    assert started.wait(30)
    from airbyte_fleet import run_syncs_blocking
    result = run_syncs_blocking({"all": True}, {"poll_interval": "50ms"})
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(30)
    faults = [e.fault for e in sim.exchanges if e.fault]
    with open(sys.argv[2], "w") as report:
        json.dump({"counts": dict(result.counts), "faults": faults}, report)
    """
)


def _host(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[bytes], dict[str, Any]]:
    script = tmp_path / "host.py"
    script.write_text(HOST)
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env |= {
        "AIRBYTE_CLIENT_ID": "sim-client",
        "AIRBYTE_CLIENT_SECRET": SECRET,
        # Real retries (no testing mode here), without the waits.
        "AIRBYTE_RETRY_WAIT_INITIAL": "0",
        "AIRBYTE_RETRY_WAIT_MAX": "0",
        "AIRBYTE_RETRY_WAIT_JITTER": "0",
        "PYTHONIOENCODING": "utf-8",
    }
    done = subprocess.run(
        [sys.executable, str(script), mode, str(report)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    shown: dict[str, Any] = json.loads(report.read_text())
    # The run went through retries (stamina's path) and a failed sync, as intended.
    assert shown["faults"].count("token_failure") == 2
    assert "429" in shown["faults"]
    assert shown["counts"]["failed"] == 1
    assert shown["counts"]["succeeded"] == 2
    return done, shown


@pytest.mark.slow
def test_a_host_that_configures_no_logging_sees_nothing(tmp_path: Path) -> None:
    done, _ = _host(tmp_path, "quiet")
    assert done.stdout == b""
    assert done.stderr == b""


@pytest.mark.slow
def test_a_host_that_configures_logging_gets_the_records_on_its_handler(tmp_path: Path) -> None:
    done, _ = _host(tmp_path, "debug")
    assert done.stdout == b""
    err = done.stderr.decode()
    for line in ("run_started", "sync_failed", "sync_succeeded", "run_finished"):
        assert f":airbyte_fleet.run:{line} run_id=" in err
    assert ":airbyte_fleet.auth:token_refreshed " in err  # debug, as asked
    assert ":airbyte_fleet.api:airbyte_retry " in err
    assert not [form for form in _spellings(SECRET) if form in err]


# ----------------------------------------------------------------------- in-process records


@pytest.mark.anyio
async def test_a_run_through_the_api_is_seen_on_a_stdlib_handler(
    make_sim: SimFactory, records: Records, airbyte_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    failing = sim.connections[0]["connectionId"]
    sim.script(failing, JobScript(seconds=0.05, final="failed"))
    result = await _run(monkeypatch, root)

    events = records.events()
    assert "run_started" in events
    assert events.count("run_finished") == 1
    finals = [r for r in records.records if fields(r)["event"] in ("sync_succeeded", "sync_failed")]
    assert sorted(fields(r)["connection_id"] for r in finals) == sorted(
        c["connectionId"] for c in sim.connections
    )
    (failed,) = records.named("sync_failed")
    assert failed.levelno == logging.ERROR
    assert failed.name == "airbyte_fleet.run"
    succeeded = records.named("sync_succeeded")[0]
    data = fields(succeeded)
    assert data["run_id"] == result.run_id
    assert isinstance(data["job_id"], int)
    assert data["level"] == "info"
    assert data["timestamp"].endswith("Z")
    # The message reads as one logfmt line in a task log.
    message = succeeded.getMessage()
    assert message.startswith(f"sync_succeeded run_id={result.run_id} ")
    assert f" connection_id={data['connection_id']} " in message
    assert f" job_id={data['job_id']} " in message
    # Debug lines stay out at INFO.
    assert all(r.levelno >= logging.INFO for r in records.records)
    assert "token_refreshed" not in events


@pytest.mark.anyio
async def test_debug_records_only_at_debug(
    make_sim: SimFactory, records: Records, airbyte_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = await make_sim(connections=1, client_secret=SECRET)
    logging.getLogger(ROOT).setLevel(logging.DEBUG)
    await _run(monkeypatch, root)
    (refreshed,) = records.named("token_refreshed")
    assert refreshed.levelno == logging.DEBUG
    assert refreshed.name == "airbyte_fleet.auth"
    assert fields(refreshed)["refreshes"] == 1


@pytest.mark.anyio
async def test_a_secret_echoed_by_airbyte_is_masked_in_every_record(
    make_sim: SimFactory, records: Records, airbyte_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = await make_sim(connections=2, client_secret=SECRET)
    echoed: dict[int, str] = {}

    async def before(request: web.Request) -> None:
        if request.path.endswith("/applications/token") and len(echoed) < 2:
            echoed[id(request)] = await request.text()

    def rewrite(request: web.Request, _: str) -> web.Response | None:
        # A server's error page quoting the body it got: the client secret, JSON-escaped.
        body = echoed.get(id(request))
        if body is None:
            return None
        return web.json_response({"message": f"could not handle {body}"}, status=500)

    async with misbehaving_proxy(root, rewrite, before=before) as proxied:
        result = await _run(monkeypatch, proxied)
    assert result.ok
    # The echo was logged, once per try (a loaded machine may add a retry of its own).
    retries = [r for r in records.named("airbyte_retry") if "client_secret" in fields(r)["reason"]]
    assert len(retries) == 2
    assert all("***" in fields(r)["reason"] for r in retries)
    # A value the per-field masking does not look into (a list) is masked in the message too.
    get_logger("airbyte_fleet.test").warning("nested", values=[SECRET, {"s": SECRET}])
    for record in records.records:
        shown = record.getMessage() + json.dumps(fields(record), ensure_ascii=False, default=str)
        assert not [form for form in _spellings(SECRET) if form in shown], record.getMessage()


@pytest.mark.anyio
async def test_the_hosts_structlog_configuration_is_left_alone(
    make_sim: SimFactory, records: Records, airbyte_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, root = await make_sim(connections=2, client_secret=SECRET)
    reached: list[dict[str, Any]] = []

    def host_processor(_: Any, __: str, event: Any) -> Any:
        reached.append(dict(event))
        raise structlog.DropEvent

    structlog.configure(
        processors=[host_processor],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    before = {
        key: list(v) if isinstance(v, list) else v for key, v in structlog.get_config().items()
    }
    await _run(monkeypatch, root)
    after = {
        key: list(v) if isinstance(v, list) else v for key, v in structlog.get_config().items()
    }
    assert after == before
    assert reached == []
    assert "run_executing" in records.events()


# -------------------------------------------------------------------------- the logger itself


def test_a_record_names_the_line_that_logged_it(records: Records) -> None:
    log = get_logger("airbyte_fleet.test")
    log.info("plain", n=1)
    log.log(logging.WARNING, "by_level", n=2)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("crashed", n=3)
    assert [r.funcName for r in records.records] == [
        "test_a_record_names_the_line_that_logged_it"
    ] * 3
    assert {r.pathname for r in records.records} == {__file__}
    _, by_level, crashed = records.records
    assert (by_level.levelno, fields(by_level)["level"]) == (logging.WARNING, "warning")
    # An exception is one line among the fields, never a traceback.
    assert (crashed.levelno, fields(crashed)["level"]) == (logging.ERROR, "error")
    assert crashed.exc_info is None
    assert fields(crashed)["exception"] == "ValueError('boom')"
    assert "exc_info" not in fields(crashed)


def test_a_disabled_level_renders_nothing(records: Records) -> None:
    class Unrenderable:
        def __str__(self) -> str:
            raise AssertionError("rendered")

        __repr__ = __str__

    log = get_logger("airbyte_fleet.test")
    log.debug("hot_path", value=Unrenderable())  # the handler's logger is at INFO
    assert records.records == []


def test_context_variables_and_values_that_could_forge_a_line(records: Records) -> None:
    structlog.contextvars.bind_contextvars(run_id="r-1")
    try:
        get_logger("airbyte_fleet.test").info(
            "named", name='two\nlines \x1b[31m"red"', empty="", flag=True, none=None, n=1.5
        )
    finally:
        structlog.contextvars.clear_contextvars()
    (record,) = records.records
    assert fields(record)["run_id"] == "r-1"
    assert record.getMessage() == (
        'named name="two\\nlines \\x1b[31m\\"red\\"" empty="" flag=true none= n=1.5 run_id=r-1'
    )


def test_a_secret_in_fields_is_masked_as_on_the_cli(records: Records) -> None:
    assert register_secret(SECRET)
    sink = io.StringIO()
    log = get_logger("airbyte_fleet.test")
    log.warning("leak", body=json.dumps({"client_secret": SECRET}), error=ValueError(SECRET))
    configure_logging("json", stream=sink)
    log.warning("leak", body=json.dumps({"client_secret": SECRET}), error=ValueError(SECRET))
    cli_line = json.loads(sink.getvalue())
    library = fields(records.records[0])
    assert library["body"] == cli_line["body"]
    assert library["error"] == cli_line["error"]
    assert "***" in library["body"]


def test_the_cli_mode_applies_to_loggers_made_before_it(records: Records) -> None:
    log = get_logger("airbyte_fleet.test")  # as modules do, at import
    sink = io.StringIO()
    configure_logging("json", stream=sink)
    log.info("after_configure", n=1)
    (line,) = [json.loads(text) for text in sink.getvalue().splitlines()]
    assert line["event"] == "after_configure"
    assert line["n"] == 1
    assert records.records == []


def test_the_library_installs_a_null_handler() -> None:
    handlers = logging.getLogger(ROOT).handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)


# ------------------------------------------------------------------------------- stamina


@pytest.fixture
def stamina_hooks() -> Iterator[None]:
    saved = stamina.instrumentation.get_on_retry_hooks()
    yield
    stamina.instrumentation.set_on_retry_hooks(saved)


def _details(name: str, cause: Exception) -> RetryDetails:
    return RetryDetails(
        name=name, args=(), kwargs={}, retry_num=1, wait_for=0.0, waited_so_far=0.0, caused_by=cause
    )


def test_stamina_defaults_stop_logging_only_the_clients_retries(stamina_hooks: None) -> None:
    stamina.instrumentation.set_on_retry_hooks(None)  # stamina's defaults, as in a fresh process
    quiet_stamina_for_own_retries()
    ours = _details("<context block>", ServerError("Airbyte answered 503.", status=503))
    theirs = _details("host.fetch", ValueError("host's own"))
    with structlog.testing.capture_logs() as seen:
        for hook in stamina.instrumentation.get_on_retry_hooks():
            hook(ours)
            hook(theirs)
    assert [(e["event"], e["callable"]) for e in seen] == [
        ("stamina.retry_scheduled", "host.fetch")
    ]


def test_stamina_hooks_the_host_chose_are_left_alone(stamina_hooks: None) -> None:
    def host_hook(details: RetryDetails) -> None:
        return None

    for chosen in ([host_hook], []):
        stamina.instrumentation.set_on_retry_hooks(chosen)
        quiet_stamina_for_own_retries()
        assert stamina.instrumentation.get_on_retry_hooks() == tuple(chosen)
