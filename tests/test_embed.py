"""The Python API for embedding (run_syncs, run_syncs_blocking), against the simulator."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from airbyte_fleet import (
    AirbyteSettings,
    ConfigError,
    Event,
    ResultBuilder,
    RunOptions,
    RunResult,
    Selection,
    run_syncs,
    run_syncs_blocking,
)
from airbyte_fleet.simulator import JobScript
from conftest import SimFactory

pytestmark = pytest.mark.anyio

SECRET = "embed-secret-1234"


def _settings(root: str) -> AirbyteSettings:
    return AirbyteSettings(base_url=root, client_id="sim-client", client_secret=SECRET)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The API reads the environment and ./config/airbyte-fleet.toml as the CLI does: each test
    # starts from none of either, in a folder of its own.
    for key in list(os.environ):
        if key.startswith(("AIRBYTE_", "USE_SERVER_AUTH")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _airbyte_env(monkeypatch: pytest.MonkeyPatch, root: str) -> None:
    # The variables of Paradime's integration page, as written there.
    monkeypatch.setenv("AIRBYTE_BASE_URL", root)
    monkeypatch.setenv("AIRBYTE_CLIENT_ID", "sim-client")
    monkeypatch.setenv("AIRBYTE_CLIENT_SECRET", SECRET)


class _Triggered:
    """A sink that says when *count* jobs exist, so a test can stop the run mid-flight. Sinks
    are called on the run's own thread: the test's loop hears of it through call_soon_threadsafe.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.jobs: list[int] = []
        self.reached = anyio.Event()
        self.kinds: list[str] = []
        self._loop = asyncio.get_running_loop()

    def __call__(self, event: Event) -> None:
        self.kinds.append(event.kind)
        job_id = getattr(event, "job_id", None)
        if event.kind == "sync_triggered" and isinstance(job_id, int):
            self.jobs.append(job_id)
            if len(self.jobs) == self.count:
                self._loop.call_soon_threadsafe(self.reached.set)


# ----------------------------------------------------------------------------- results


async def test_the_run_has_its_own_thread_and_loop(make_sim: SimFactory) -> None:
    """Whatever the caller's loop does (a cancellation, an exception from a signal handler, a
    blocked sink) reaches only the await, never a task of the run."""
    import threading

    _sim, root = await make_sim(connections=2, client_secret=SECRET)
    seen: set[tuple[int, bool]] = set()

    def where(event: Event) -> None:
        seen.add((threading.get_ident(), event.kind == "run_started"))

    await run_syncs(
        {"all": True}, {"poll_interval": "20ms"}, settings=_settings(root), sinks=(where,)
    )
    assert {thread for thread, _ in seen} != {threading.get_ident()}
    assert len({thread for thread, _ in seen}) == 1


async def test_run_syncs_returns_one_result(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=6, client_secret=SECRET)
    failing = sim.connections[0]["connectionId"]
    sim.script(failing, JobScript(seconds=0.05, final="failed"))
    seen: list[str] = []
    result = await run_syncs(
        {"all": True},
        {"poll_interval": "20ms", "max_concurrency": 3},
        settings=_settings(root),
        sinks=(lambda event: seen.append(event.kind),),
    )
    assert isinstance(result, RunResult)
    assert result.outcome == "failed"
    assert result.counts["failed"] == 1
    assert result.counts["succeeded"] == 5
    assert [s.connection_id for s in result.failures] == [failing]
    assert result.summary.startswith(f"Run {result.run_id} failed: 6 syncs (5 succeeded, 1 failed)")
    assert sim.connections[0]["name"] in result.summary
    assert seen[0] == "run_started"
    assert seen[-1] == "run_finished"


async def test_blocking_wrapper_for_callers_without_a_loop(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, client_secret=SECRET)
    ids = [c["connectionId"] for c in sim.connections]
    result = await anyio.to_thread.run_sync(
        lambda: run_syncs_blocking(
            Selection(connections=ids), RunOptions(poll_interval=0.02), settings=_settings(root)
        )
    )
    assert result.ok
    assert [s.connection_id for s in result.syncs] == ids


async def test_blocking_inside_a_running_event_loop_works(make_sim: SimFactory) -> None:
    """A Jupyter cell or an async asset calling the blocking form: the run gets a loop of its
    own on another thread (this loop waits, blocked, as documented)."""
    sim, root = await make_sim(connections=3, client_secret=SECRET)

    def in_a_loop_of_its_own() -> RunResult:
        async def caller() -> RunResult:
            asyncio.get_running_loop()  # we are inside a running loop here
            return run_syncs_blocking(
                {"all": True}, {"poll_interval": "20ms"}, settings=_settings(root)
            )

        return asyncio.run(caller())

    # The simulator serves from this test's loop, so the caller's loop runs on another thread.
    result = await anyio.to_thread.run_sync(in_a_loop_of_its_own)
    assert result.ok
    assert result.counts["succeeded"] == 3
    assert sim.count("POST", "/jobs") == 3


# ----------------------------------------------------------------------------- interrupts


async def test_cancelling_run_syncs_cancels_every_job_within_the_grace(
    make_sim: SimFactory,
) -> None:
    sim, root = await make_sim(connections=10, client_secret=SECRET, sync_seconds=(600, 600))
    triggered = _Triggered(10)
    builder = ResultBuilder()
    task = asyncio.ensure_future(
        run_syncs(
            {"all": True},
            {"poll_interval": "50ms", "grace": "5s"},
            settings=_settings(root),
            sinks=(triggered, builder),
        )
    )
    with anyio.fail_after(10):
        await triggered.reached.wait()
    assert {j["status"] for j in sim.jobs} <= {"pending", "running"}
    began = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    took = time.monotonic() - began
    assert took < 5, f"the stop took {took:.1f} s, past its 5 s grace"
    assert [j["status"] for j in sim.jobs] == ["cancelled"] * 10
    assert sim.count("POST", "/jobs") == 10
    assert builder.result.outcome == "interrupted"
    assert builder.result.counts["cancelled"] == 10
    notes = getattr(caught.value, "__notes__", [])
    assert any("10 job(s) cancelled" in note for note in notes), notes


async def test_wait_for_timeout_cancels_the_jobs_too(make_sim: SimFactory) -> None:
    """The issue's own case: asyncio.wait_for(run_syncs(...), 3) left every job running."""
    sim, root = await make_sim(connections=4, client_secret=SECRET, sync_seconds=(600, 600))
    triggered = _Triggered(4)

    async def bounded() -> RunResult:
        return await asyncio.wait_for(
            run_syncs(
                {"all": True},
                {"poll_interval": "50ms"},
                settings=_settings(root),
                sinks=(triggered,),
            ),
            timeout=60,
        )

    task = asyncio.ensure_future(bounded())
    with anyio.fail_after(10):
        await triggered.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [j["status"] for j in sim.jobs] == ["cancelled"] * 4


async def test_an_anyio_cancel_scope_around_run_syncs_cancels_the_jobs(
    make_sim: SimFactory,
) -> None:
    """anyio cancels level-triggered (Prefect's flow timeouts do so): every await inside the
    cancelled scope is cancelled again, and the stop must still finish its cancels."""
    sim, root = await make_sim(connections=4, client_secret=SECRET, sync_seconds=(600, 600))
    triggered = _Triggered(4)
    scope = anyio.CancelScope()

    async def caller() -> None:
        with scope:
            await run_syncs(
                {"all": True},
                {"poll_interval": "50ms"},
                settings=_settings(root),
                sinks=(triggered,),
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        with anyio.fail_after(10):
            await triggered.reached.wait()
        scope.cancel()
    assert scope.cancelled_caught
    assert [j["status"] for j in sim.jobs] == ["cancelled"] * 4


async def test_detach_leaves_the_jobs_running_and_says_so(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET, sync_seconds=(600, 600))
    triggered = _Triggered(3)
    builder = ResultBuilder()
    task = asyncio.ensure_future(
        run_syncs(
            {"all": True},
            {"poll_interval": "50ms", "on_interrupt": "detach"},
            settings=_settings(root),
            sinks=(triggered, builder),
        )
    )
    with anyio.fail_after(10):
        await triggered.reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    assert {j["status"] for j in sim.jobs} <= {"pending", "running"}
    assert sim.count("DELETE", "/jobs/{jobId}") == 0
    result = builder.result
    assert result.outcome == "interrupted"
    for sync in result.syncs:
        assert sync.job_id in triggered.jobs
        assert sync.error is not None
        # Python callers are told the Python way, and offered no CLI resume they cannot use.
        assert "left running in Airbyte (on_interrupt='detach')" in sync.error
        assert "if_running='adopt'" in sync.error
        assert "--" not in sync.error
    notes = " ".join(getattr(caught.value, "__notes__", []))
    assert "3 left running in Airbyte" in notes


_INTERRUPTED_SCRIPT = textwrap.dedent(
    """
    import signal, sys
    from airbyte_fleet import run_syncs_blocking

    # As a supervisor's SIGTERM often becomes SystemExit (Airflow and others install such a handler).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def announce(event):
        if event.kind == "sync_triggered":
            print(event.job_id, file=sys.stderr, flush=True)

    try:
        run_syncs_blocking({"all": True}, {"poll_interval": "50ms", "grace": "10s"},
                           sinks=(announce,))
    except (KeyboardInterrupt, SystemExit) as exc:
        print(type(exc).__name__, *getattr(exc, "__notes__", []), sep="\\n", file=sys.stderr)
        sys.exit(130 if isinstance(exc, KeyboardInterrupt) else exc.code)
    sys.exit(0)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signal_name", "raised", "code"),
    [("SIGINT", "KeyboardInterrupt", 130), ("SIGTERM", "SystemExit", 143)],
)
async def test_an_interrupt_in_blocking_cancels_the_jobs(
    make_sim: SimFactory,
    monkeypatch: pytest.MonkeyPatch,
    signal_name: str,
    raised: str,
    code: int,
) -> None:
    """A real signal to a real process inside run_syncs_blocking (Ctrl-C, Dagster stopping a
    step, a supervisor's SIGTERM): the jobs are cancelled, then the exception reaches the
    caller, whose code decides the exit."""
    sim, root = await make_sim(connections=6, client_secret=SECRET, sync_seconds=(600, 600))
    _airbyte_env(monkeypatch, root)
    process = await anyio.open_process(
        [sys.executable, "-c", _INTERRUPTED_SCRIPT], env=dict(os.environ)
    )
    assert process.stderr is not None
    seen = b""
    with anyio.fail_after(20):
        while seen.count(b"\n") < 6:
            seen += await process.stderr.receive()
    assert [j["status"] for j in sim.jobs].count("cancelled") == 0
    process.send_signal(getattr(signal, signal_name))
    with anyio.fail_after(20):
        async for chunk in process.stderr:
            seen += chunk
        exit_code = await process.wait()
    text = seen.decode()
    assert exit_code == code, text
    assert raised in text
    assert "6 job(s) cancelled" in text
    assert "Traceback" not in text
    assert [j["status"] for j in sim.jobs] == ["cancelled"] * 6


_ABANDONED_SCRIPT = textwrap.dedent(
    """
    import asyncio, signal, sys
    from airbyte_fleet import run_syncs

    def host_interrupt(*_):
        raise RuntimeError("the host stops the step")

    # As Dagster stops an async step: an exception from a signal handler, raised wherever the
    # loop happens to be (mostly its selector), after which the loop is left as it is.
    signal.signal(signal.SIGUSR1, host_interrupt)

    def announce(event):
        if event.kind == "sync_triggered":
            print(event.job_id, file=sys.stderr, flush=True)

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(
            run_syncs({"all": True}, {"poll_interval": "50ms", "grace": "10s"}, sinks=(announce,))
        )
    except RuntimeError as exc:
        print("host:", exc, file=sys.stderr, flush=True)
        sys.exit(3)
    """
)


@pytest.mark.slow
async def test_a_run_its_caller_abandons_is_stopped_before_the_program_exits(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim, root = await make_sim(connections=4, client_secret=SECRET, sync_seconds=(600, 600))
    _airbyte_env(monkeypatch, root)
    process = await anyio.open_process(
        [sys.executable, "-c", _ABANDONED_SCRIPT], env=dict(os.environ)
    )
    assert process.stderr is not None
    seen = b""
    with anyio.fail_after(20):
        while seen.count(b"\n") < 4:
            seen += await process.stderr.receive()
    process.send_signal(signal.SIGUSR1)
    with anyio.fail_after(20):
        async for chunk in process.stderr:
            seen += chunk
        exit_code = await process.wait()
    assert exit_code == 3, seen.decode()
    assert [j["status"] for j in sim.jobs] == ["cancelled"] * 4


# ----------------------------------------------------------------------------- settings


async def test_settings_come_from_the_environment_and_the_file_like_the_cli(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    _airbyte_env(monkeypatch, root)
    first = sim.connections[0]["connectionId"]
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "airbyte-fleet.toml").write_text(
        f'[selection]\nconnections = ["{first}"]\n\n[run]\nretries = 2\npoll_interval = "1s"\n'
    )
    monkeypatch.setenv("AIRBYTE_FLEET_POLL_INTERVAL", "30ms")
    monkeypatch.setenv("AIRBYTE_FLEET_MAX_CONCURRENCY", "7")
    options: dict[str, object] = {}

    def started(event: Event) -> None:
        if event.kind == "run_started":
            options.update(getattr(event, "options", {}))

    # The caller's options win over the environment, which wins over the file's [run].
    result = await run_syncs(options={"max_concurrency": 2}, sinks=(started,))
    assert [s.connection_id for s in result.syncs] == [first]  # the file's [selection]
    assert options["poll_interval"] == 0.03  # AIRBYTE_FLEET_POLL_INTERVAL over the file
    assert options["retries"] == 2  # the file's [run]
    assert options["max_concurrency"] == 2  # the argument over AIRBYTE_FLEET_MAX_CONCURRENCY


async def test_a_model_passes_only_the_fields_it_was_given(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sim, root = await make_sim(connections=1, client_secret=SECRET)
    _airbyte_env(monkeypatch, root)
    monkeypatch.setenv("AIRBYTE_FLEET_RETRIES", "3")
    options: dict[str, object] = {}

    def started(event: Event) -> None:
        if event.kind == "run_started":
            options.update(getattr(event, "options", {}))

    await run_syncs({"all": True}, RunOptions(poll_interval="PT0.02S"), sinks=(started,))
    assert options["retries"] == 3  # RunOptions' default does not hide the variable
    assert options["poll_interval"] == 0.02


async def test_config_argument_names_the_file(
    make_sim: SimFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=4, client_secret=SECRET)
    _airbyte_env(monkeypatch, root)
    ids = [c["connectionId"] for c in sim.connections]
    path = tmp_path / "fleet.toml"
    path.write_text(f'[groups.raw]\nconnections = ["{ids[1]}", "{ids[2]}"]\n')
    result = await run_syncs(
        {"groups": ["raw", "extra"]},
        {"poll_interval": "20ms"},
        config=path,
        groups={"extra": {"connections": [ids[3]]}},
    )
    assert sorted(s.connection_id for s in result.syncs) == sorted(ids[1:])


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("selection", "options", "message"),
    [
        (
            {"tag": ["nightly"]},
            None,
            "Unknown key 'tag' in the selection argument (did you mean 'tags'?)",
        ),
        (
            {"connections": ["not-a-uuid"]},
            None,
            "Key connections=['not-a-uuid'] in the selection argument is invalid",
        ),
        ({"all": True}, {"timeout": "forever"}, "Key timeout='forever' in the options argument"),
        ({"all": True}, {"on_interrupt": "ignore"}, "Key on_interrupt='ignore' in the options"),
        ({"all": True}, {"retry": 2}, "Unknown key 'retry' in the options argument"),
        (None, None, "Nothing selected; pass 'connections', 'names', 'tags'"),
        (
            {"connections": ["00000000-0000-4000-8000-00000000abcd"]},
            None,
            "check selection['connections']",
        ),
    ],
)
async def test_bad_input_is_one_config_error_naming_the_python_argument(
    make_sim: SimFactory,
    selection: dict[str, object] | None,
    options: dict[str, object] | None,
    message: str,
) -> None:
    sim, root = await make_sim(connections=2, client_secret=SECRET)
    with pytest.raises(ConfigError) as caught:
        await run_syncs(selection, options, settings=_settings(root))  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert "--" not in str(caught.value)  # no flag the Python caller cannot pass
    assert sim.count("POST", "/jobs") == 0


def test_models_built_directly_raise_config_error_too() -> None:
    with pytest.raises(ConfigError, match="Unknown key 'tag' given to Selection"):
        Selection(tag=["x"])  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="Key grace=-1 given to RunOptions is invalid"):
        RunOptions(grace=-1)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [
        ("45m", 2700.0),
        ("1h30m", 5400.0),
        (90, 90.0),
        ("2.5", 2.5),
        ("PT45M", 2700.0),
        ("pt45m", 2700.0),
        ("P1DT2H", 93600.0),
        ("PT0.5S", 0.5),
        ("PT1H30M15S", 5415.0),
    ],
)
def test_durations_take_seconds_text_and_iso_8601(given: str | int, seconds: float) -> None:
    assert RunOptions(timeout=given).timeout == seconds


@pytest.mark.parametrize("given", ["P1M", "P", "PT", "P1DT", "PT-5M", "PT1.5M", "P1Y"])
def test_iso_forms_without_a_fixed_length_are_refused(given: str) -> None:
    with pytest.raises(ConfigError, match="is not a duration"):
        RunOptions(timeout=given)


def test_missing_credentials_are_one_sentence_naming_the_variables() -> None:
    # Nothing in the environment, no file: the same sentence the CLI says, before any request.
    with pytest.raises(ConfigError, match="set AIRBYTE_CLIENT_ID and AIRBYTE_CLIENT_SECRET"):
        run_syncs_blocking({"all": True})


def test_the_api_reference_documents_every_field() -> None:
    """docs/python-api.md lists each field of the models the API takes and returns."""
    from airbyte_fleet import AttemptRecord, SyncResult

    text = (Path(__file__).parent.parent / "docs" / "python-api.md").read_text()
    for model in (Selection, RunOptions):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} is not in the table"
    for model in (RunResult, SyncResult, AttemptRecord):
        for name in model.model_fields:
            assert f"`{name}`" in text, f"{model.__name__}.{name} is not documented"
