"""The result as light records and as a streamed document: the JSON written one sync at a time is
the model's own, byte for byte, and a run's result costs a few hundred bytes a sync."""

from __future__ import annotations

import gc
import hashlib
import json
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from airbyte_fleet._redact import register_secret
from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncAdopted,
    SyncDetached,
    SyncFailed,
    SyncRetrying,
    SyncSkipped,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTimedOut,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.engine.result import ResultBuilder, RunResult
from airbyte_fleet.service.responses import json_response
from airbyte_fleet.service.routes import _status_response
from airbyte_fleet.service.views import RunView
from airbyte_fleet.sinks.table import result_json, write_result_json

RUN = "run-2b7c"
T0 = datetime(2025, 6, 1, 8, 30, 0, tzinfo=UTC)
# Names in several scripts (the document is then 2 bytes a character in memory), and texts that a
# hand-made JSON writer gets wrong: quotes, backslashes, line breaks, control characters.
NAMES = {
    "c-ascii": "orders_pg",
    "c-cjk": "注文データ → 倉庫",
    "c-emoji": "Zahlungen 💶 “live”",
    "c-quote": 'say "hi"\\ back\nslash\ttab\x07',
    "c-skip": "Ελληνικά",
    "c-retry": "ретрай",
    "c-open": "never heard of again",
    "c-adopt": "adopted ✓",
}
ERROR = 'source said: "bad\\path"\nline 2\r\n\tend \u2028 sep'


def _at(seconds: float, tz: timezone = UTC) -> dict[str, Any]:
    return {
        "run_id": RUN,
        "at": (T0 + timedelta(seconds=seconds)).astimezone(tz),
        "elapsed_s": seconds,
    }


def _s(cid: str, **kw: Any) -> dict[str, Any]:
    return {"connection_id": cid, "connection_name": NAMES[cid], "workspace_id": "ws-ü", **kw}


def run_events(*, finished: bool = True) -> list[Event]:
    """A hand-written run with a sync of every shape the result has."""
    planned = tuple(PlannedSync(cid, name, "ws-ü") for cid, name in NAMES.items())
    events: list[Event] = [
        RunStarted(
            **_at(0), total=len(planned), job_type="sync", max_concurrency=4, planned=planned
        ),
        SyncTriggering(**_at(0.1), **_s("c-ascii")),
        SyncTriggered(**_at(0.2), **_s("c-ascii", job_id=1, status="pending")),
        SyncStatusChanged(**_at(1.25), **_s("c-ascii", job_id=1, status="running")),
        SyncSucceeded(
            **_at(10.123456),
            **_s("c-ascii", job_id=1, status="succeeded", rows_synced=10**12, bytes_synced=7),
        ),
        SyncTriggered(**_at(0.3), **_s("c-cjk", job_id=2, status="pending")),
        SyncFailed(**_at(4.5), **_s("c-cjk", job_id=2, status="failed", error=ERROR)),
        # An event in another time zone: the document writes each moment as pydantic does.
        SyncTriggered(
            **_at(0.4, timezone(timedelta(hours=5, minutes=30))), **_s("c-emoji", job_id=3)
        ),
        SyncTimedOut(**_at(99.0), **_s("c-emoji", job_id=3, status="running", error="too long")),
        SyncTriggered(**_at(0.5), **_s("c-quote", job_id=4)),
        SyncDetached(**_at(7.0), **_s("c-quote", job_id=4, error='left "running"\n')),
        SyncSkipped(**_at(0.6), **_s("c-skip"), reason='already "running"\nelsewhere'),
        SyncTriggered(**_at(1), **_s("c-retry", job_id=5, status="pending")),
        SyncRetrying(**_at(3), **_s("c-retry", job_id=5, status="failed", error="first\nfail")),
        SyncTriggered(**_at(4), **_s("c-retry", job_id=6, attempt=2, status="pending")),
        SyncRetrying(**_at(6), **_s("c-retry", job_id=6, attempt=2, error='second "fail"')),
        SyncTriggered(**_at(7), **_s("c-retry", job_id=7, attempt=3, status="pending")),
        SyncSucceeded(
            **_at(9.0000001),
            **_s("c-retry", job_id=7, attempt=3, status="succeeded", rows_synced=3),
        ),
        SyncAdopted(**_at(0.7), **_s("c-adopt", job_id=8, status="running"), reason="was running"),
        SyncSucceeded(**_at(2.0), **_s("c-adopt", job_id=8, status="succeeded")),
    ]
    if finished:
        events.append(RunFinished(**_at(100.5), outcome="failed", interrupted=True))
    return events


def _built(events: list[Event]) -> ResultBuilder:
    builder = ResultBuilder()
    for event in events:
        builder(event)
    return builder


def _model_document(result: RunResult) -> str:
    return result.model_dump_json(indent=2) + "\n"


def _pieces(write: Callable[[Callable[[str], object]], None]) -> list[str]:
    out: list[str] = []
    write(out.append)
    return out


# -- the document ---------------------------------------------------------------------------------


def test_the_hand_written_run_has_every_shape() -> None:
    result = _built(run_events()).result
    by_id = {s.connection_id: s for s in result.syncs}
    assert [s.connection_id for s in result.syncs] == list(NAMES)
    assert by_id["c-retry"].attempts == 3
    assert [a.job_id for a in by_id["c-retry"].history] == [5, 6, 7]
    assert by_id["c-retry"].history[1].error == 'second "fail"'
    assert by_id["c-adopt"].history[0].adopted is True
    assert (by_id["c-skip"].outcome, by_id["c-skip"].attempts) == ("skipped", 0)
    assert by_id["c-skip"].error == 'already "running"\nelsewhere'
    assert by_id["c-cjk"].error == ERROR
    assert by_id["c-quote"].outcome == "error"  # detached, then the run was interrupted
    assert by_id["c-open"].error == "interrupted before the sync finished"
    assert by_id["c-ascii"].duration_s == 9.923
    assert result.counts["succeeded"] == 3
    assert result.totals.rows_synced == 10**12 + 3
    assert result.outcome == "interrupted"


@pytest.mark.parametrize("source", ["builder", "model", "write_result_json"])
def test_the_streamed_document_is_the_models_byte_for_byte(source: str) -> None:
    builder = _built(run_events())
    result = builder.result
    expected = _model_document(result)
    if source == "builder":
        pieces = list(builder.iter_json())
    elif source == "model":
        pieces = list(result.iter_json())
    else:
        pieces = _pieces(lambda write: write_result_json(builder, write))
    assert "".join(pieces) == expected
    assert "".join(pieces) == result_json(result)
    # One piece per sync, plus the end: never the whole document at once.
    assert len(pieces) == len(result.syncs) + 1
    assert max(len(p) for p in pieces) < len(expected) / 3
    # And it reads back as the same result.
    assert RunResult.model_validate_json("".join(pieces)) == result


def test_a_result_of_a_model_read_back_streams_the_same() -> None:
    # What `runs show` prints: a result built from JSON, not from events.
    result = _built(run_events()).result
    again = RunResult.model_validate_json(result.model_dump_json())
    assert "".join(again.iter_json()) == _model_document(result)


@pytest.mark.parametrize("planned", [0, 1])
def test_a_run_with_no_sync_or_one_streams_the_same(planned: int) -> None:
    syncs = tuple(PlannedSync(f"c{i}", f"n{i}") for i in range(planned))
    builder = _built(
        [
            RunStarted(**_at(0), total=planned, job_type="reset", max_concurrency=1, planned=syncs),
            RunFinished(**_at(1), outcome="failed", error='journal "full"\nnow'),
        ]
    )
    assert "".join(builder.iter_json()) == _model_document(builder.result)
    assert "".join(builder.result.iter_json()) == _model_document(builder.result)


def test_an_unfinished_run_streams_what_its_result_says() -> None:
    builder = _built(run_events(finished=False))
    # Before run_finished the result lists no sync (a snapshot lists them all).
    assert builder.result.syncs == []
    assert "".join(builder.iter_json()) == _model_document(builder.result)
    snapshot = builder.snapshot()
    assert len(snapshot.syncs) == len(NAMES)
    assert "".join(snapshot.iter_json()) == _model_document(snapshot)
    assert builder.outcome == "running"


def test_the_result_is_made_once_until_the_next_event() -> None:
    events = run_events()
    builder = _built(events[:-1])
    before = builder.result
    assert builder.result is before
    builder(events[-1])
    after = builder.result
    assert after is not before
    assert after.outcome == "interrupted"
    assert builder.result is after
    # A snapshot is the caller's own: changing it changes nothing else.
    snapshot = builder.snapshot()
    snapshot.syncs[0].error = "changed"
    assert builder.result.syncs[0].error is None
    assert builder.snapshot().syncs[0].error is None


def test_no_run_no_result() -> None:
    builder = ResultBuilder()
    with pytest.raises(RuntimeError, match="no run has started"):
        _ = builder.result
    with pytest.raises(RuntimeError, match="no run has started"):
        list(builder.iter_json())


# -- memory ---------------------------------------------------------------------------------------

SYNCS = 10_000


def _large_run() -> Iterator[Event]:
    """A 10,000-sync run, each event made as the engine makes it and dropped once heard: what
    stays is what the builder keeps."""
    planned = tuple(
        PlannedSync(f"{i:08x}-5a4f-4d1e-9c3b-0f8e2a7d6c51", f"Verbindung {i} → Lager", "ws-1")
        for i in range(SYNCS)
    )
    yield RunStarted(**_at(0), total=SYNCS, job_type="sync", max_concurrency=SYNCS, planned=planned)
    for step in range(3):
        for i, sync in enumerate(planned):
            common = _s("c-ascii", job_id=10_000 + i) | {
                "connection_id": sync.connection_id,
                "connection_name": sync.connection_name,
            }
            # Statuses come from json.loads in the engine: a new text each time.
            if step == 0:
                yield SyncTriggered(**_at(1 + i / 1000), **common, status=json.loads('"pending"'))
            elif step == 1:
                yield SyncStatusChanged(**_at(5), **common, status=json.loads('"running"'))
            else:
                yield SyncSucceeded(
                    **_at(9 + i / 1000),
                    **common,
                    status=json.loads('"succeeded"'),
                    rows_synced=1000 + i,
                    bytes_synced=10**6 + i,
                )
    yield RunFinished(**_at(60), outcome="succeeded")


@pytest.fixture(scope="module")
def large_builder() -> tuple[ResultBuilder, int]:
    """The builder after a 10,000-sync run, and the bytes it holds (tracemalloc)."""
    gc.collect()
    tracemalloc.start()
    try:
        builder = ResultBuilder()
        for event in _large_run():
            builder(event)
        gc.collect()
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return builder, held


def test_a_sync_costs_a_few_hundred_bytes_in_the_builder(
    large_builder: tuple[ResultBuilder, int],
) -> None:
    builder, held = large_builder
    assert builder.outcome == "succeeded"
    # Measured 674 B a sync: its record (144) and its job's (88), its id and name (205, the name
    # 2 bytes a character), two moments (96), four numbers, its place in the index. The builder of
    # pydantic models it replaces held 3,055 B a sync on this run.
    assert held / SYNCS <= 760


def test_the_document_is_written_without_being_one_text(
    large_builder: tuple[ResultBuilder, int],
) -> None:
    builder, _ = large_builder
    digest = hashlib.sha256()
    written = 0

    def write(piece: str) -> None:
        nonlocal written
        digest.update(piece.encode())
        written += len(piece)

    gc.collect()
    tracemalloc.start()
    try:
        write_result_json(builder, write)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Measured: a peak of about 10 KB over what was held. As one text the document would be 16 MB
    # (8 million characters, 2 bytes each once "→" is in it), and pydantic's bytes of it 8 more.
    assert peak - held <= 200_000
    document = result_json(builder.result)
    assert written == len(document) > 7_000_000
    assert digest.hexdigest() == hashlib.sha256(document.encode()).hexdigest()


# -- the worker's answer --------------------------------------------------------------------------


@pytest.fixture
async def serve_view() -> AsyncIterator[Callable[[RunView, int], Any]]:
    """Serve a view as ``GET /runs/{id}`` does, on a loopback port; returns a fetcher."""
    views: dict[str, tuple[RunView, int]] = {}

    async def handler(request: web.Request) -> web.StreamResponse:
        view, status = views[request.match_info["run_id"]]
        return await _status_response(request, view, status)

    app = web.Application()
    app.router.add_get("/runs/{run_id}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    session = aiohttp.ClientSession()

    async def fetch(view: RunView, status: int = 200, method: str = "GET") -> Any:
        views[view.run_id] = (view, status)
        url = f"http://127.0.0.1:{port}/runs/{view.run_id}"
        async with session.request(method, url) as response:
            return response.status, response.headers, await response.read()

    try:
        yield fetch
    finally:
        await session.close()
        await runner.cleanup()


def _view(builder: ResultBuilder, error: str | None = None) -> RunView:
    return RunView(RUN, "finished", builder.result, error=error)


@pytest.mark.anyio
@pytest.mark.parametrize("status", [200, 202])
async def test_the_workers_answer_is_streamed_as_the_whole_would_be(
    serve_view: Callable[..., Any], status: int
) -> None:
    view = _view(_built(run_events()), error='journal "gone"')
    code, headers, body = await serve_view(view, status)
    expected = json_response(view.status())
    assert body == expected.body
    assert code == status
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    assert json.loads(body)["result"]["syncs"][1]["error"] == ERROR


@pytest.mark.anyio
async def test_the_workers_streamed_answer_masks_secrets(serve_view: Callable[..., Any]) -> None:
    secret = "sk-Very-Secret-42"
    register_secret(secret)
    events = run_events()
    builder = ResultBuilder()
    for event in events:
        builder(event)
    # A secret the result kept (in a name: the builder filters error texts on their way in).
    builder.result.syncs[0].connection_name = f"leaks {secret} here"
    view = _view(builder)
    _, _, body = await serve_view(view)
    assert secret.encode() not in body
    assert b"leaks *** here" in body
    assert body == json_response(view.status()).body


@pytest.mark.anyio
async def test_a_large_answer_goes_out_in_several_writes(
    serve_view: Callable[..., Any], large_builder: tuple[ResultBuilder, int]
) -> None:
    builder, _ = large_builder
    view = _view(builder)
    pieces = list(view.status_json())
    assert len(pieces) == SYNCS + 1
    code, headers, body = await serve_view(view)
    assert code == 200
    assert headers.get("Transfer-Encoding") == "chunked"
    assert body == json_response(view.status()).body
    head_code, _, head_body = await serve_view(view, method="HEAD")
    assert (head_code, head_body) == (200, b"")


@pytest.mark.anyio
async def test_an_answer_without_a_result_is_one_body(serve_view: Callable[..., Any]) -> None:
    view = RunView(RUN, "running")
    code, headers, body = await serve_view(view)
    assert (code, body) == (200, json_response(view.status()).body)
    assert headers["Content-Length"] == str(len(body))
