"""Job and Connection: light records read leniently from Airbyte's JSON."""

from __future__ import annotations

import dataclasses
import gc
import json
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from airbyte_fleet.api import Connection, Job, Page, Tag

CONNECTION_ID = "6a7d1e9c-3f2b-4c8e-9d5a-1b2c3d4e5f60"
WORKSPACE_ID = "0f1e2d3c-4b5a-4968-8776-655443322110"


def _job_json(job_id: int, status: str = "running", **extra: Any) -> str:
    return json.dumps(
        {
            "jobId": job_id,
            "status": status,
            "jobType": "sync",
            "startTime": "2026-05-09T07:35:25Z",
            "connectionId": CONNECTION_ID,
            "duration": "PT1M12S",
            "bytesSynced": 123_456_789 + job_id,
            "rowsSynced": 1_234_567 + job_id,
            **extra,
        }
    )


def _connection_json(i: int) -> str:
    return json.dumps(
        {
            "connectionId": f"{i:08d}-3f2b-4c8e-9d5a-1b2c3d4e5f60",
            "name": f"Postgres → Snowflake {i:03d}",
            "sourceId": "ed2f89d9-4a2f-40aa-b3c6-4af775a89294",
            "destinationId": "ea90a8f0-d66b-429e-aa8a-c4ba05805975",
            "workspaceId": WORKSPACE_ID,
            "status": "active",
            "schedule": {"scheduleType": "basic", "basicTiming": "Every 24 HOURS"},
            "configurations": {"streams": [{"name": "users", "syncMode": "full_refresh"}]},
            "createdAt": 1715471756,
            "tags": [{"tagId": "t1", "workspaceId": WORKSPACE_ID, "name": "hourly", "color": "1"}],
        }
    )


def test_a_job_keeps_what_a_runner_reads() -> None:
    job = Job.from_api(json.loads(_job_json(7, "succeeded", lastUpdatedAt="2026-05-09T07:36Z")))
    assert job == Job(
        job_id=7,
        status="succeeded",
        job_type="sync",
        connection_id=CONNECTION_ID,
        start_time=datetime(2026, 5, 9, 7, 35, 25, tzinfo=UTC),
        last_updated_at=datetime(2026, 5, 9, 7, 36, tzinfo=UTC),
        rows_synced=1_234_574,
        bytes_synced=123_456_796,
    )
    assert job.is_terminal
    assert job.is_known_status
    assert not hasattr(job, "duration")  # not read by anything: not kept
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = "running"  # type: ignore[misc]


def test_jobs_are_equal_by_value() -> None:
    # The watcher compares a fresh copy with the one it holds to see whether anything changed.
    first, again = (Job.from_api(json.loads(_job_json(7))) for _ in range(2))
    assert first == again
    assert hash(first) == hash(again)
    assert first != Job.from_api(json.loads(_job_json(7, rowsSynced=1)))
    assert first != Job.from_api(json.loads(_job_json(7, "incomplete")))


def test_a_job_is_read_leniently() -> None:
    job = Job.from_api(
        {
            "jobId": "12",
            "status": "paused_by_admin",
            "startTime": "2023-03-25T01:30:50",  # naive: Java's OffsetDateTime means UTC
            "lastUpdatedAt": "yesterday",
            "rowsSynced": "42",
            "bytesSynced": True,
            "jobType": None,
            "somethingNew": {"nested": 1},
        }
    )
    assert job.job_id == 12
    assert job.status == "paused_by_admin"
    assert not job.is_known_status
    assert not job.is_terminal
    assert job.job_type == "sync"
    assert job.connection_id == ""
    assert job.start_time == datetime(2023, 3, 25, 1, 30, 50, tzinfo=UTC)
    assert job.last_updated_at is None
    assert job.rows_synced == 42
    assert job.bytes_synced is None
    offset = Job.from_api({"jobId": 1, "status": "running", "startTime": "2023-03-25T03:30+02:00"})
    assert offset.start_time == datetime(2023, 3, 25, 3, 30, tzinfo=timezone(timedelta(hours=2)))
    epoch = Job.from_api({"jobId": 1, "status": "running", "startTime": 1679707850})
    assert epoch.start_time == datetime(2023, 3, 25, 1, 30, 50, tzinfo=UTC)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ([], "not a job"),
        ({"status": "running"}, "needs jobId and status"),
        ({"jobId": 1}, "needs jobId and status"),
        ({"jobId": "one", "status": "running"}, "jobId is not an integer"),
        ({"jobId": True, "status": "running"}, "jobId is not an integer"),
        ({"jobId": 1, "status": 3}, "status is not a string"),
        ({"jobId": 1, "status": "running", "connectionId": 5}, "connectionId is not a string"),
    ],
)
def test_what_is_not_a_job(body: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Job.from_api(body)


def test_repeated_strings_are_shared() -> None:
    connection = Connection.from_api(json.loads(_connection_json(1)))
    jobs = [
        Job.from_api(json.loads(_job_json(i, connectionId=connection.connection_id)))
        for i in range(3)
    ]
    first = jobs[0]
    for job in jobs[1:]:
        assert job.status is first.status
        assert job.job_type is first.job_type
        assert job.start_time is first.start_time
    # A job names its connection with the very string the connection holds.
    assert all(job.connection_id is connection.connection_id for job in jobs)
    other = Connection.from_api(json.loads(_connection_json(2)))
    assert other.workspace_id is connection.workspace_id
    assert other.tags[0] is connection.tags[0]


def test_a_connection_keeps_what_a_runner_reads() -> None:
    connection = Connection.from_api(json.loads(_connection_json(3)))
    assert connection == Connection(
        connection_id="00000003-3f2b-4c8e-9d5a-1b2c3d4e5f60",
        name="Postgres → Snowflake 003",
        workspace_id=WORKSPACE_ID,
        status="active",
        tags=("hourly",),
        schedule_type="basic",
    )
    assert connection.is_active
    assert connection.tag_names == ("hourly",)
    bare = Connection.from_api(
        {"connectionId": "c", "status": "inactive", "tags": ["a", {"name": "b"}, {"x": 1}, 3]}
    )
    assert bare == Connection(connection_id="c", status="inactive", tags=("a", "b"))
    assert not bare.is_active
    tagged = Connection.from_api({"connectionId": "c", "tags": [Tag(name="x")], "schedule": "cron"})
    assert (tagged.tags, tagged.schedule_type) == (("x",), "cron")
    with pytest.raises(ValueError, match="needs a connectionId"):
        Connection.from_api({"name": "x"})
    with pytest.raises(ValueError, match="tags is not a list"):
        Connection.from_api({"connectionId": "c", "tags": "a,b"})


def test_a_page_is_read_item_by_item() -> None:
    page = Page.from_api(
        {"data": [{"jobId": 1, "status": "running"}], "next": "http://internal/jobs?offset=100"},
        Job.from_api,
    )
    assert page.data == (Job(job_id=1, status="running"),)
    assert page.next == "http://internal/jobs?offset=100"
    assert page.previous is None
    assert Page.from_api({}, Job.from_api).data == ()
    with pytest.raises(ValueError, match="data is not a list"):
        Page.from_api({"data": {"jobId": 1}}, Job.from_api)


def _bytes_each(texts: list[str], parse: Any) -> float:
    """Bytes of live Python each parsed object keeps, read from JSON text as the client does."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [parse(json.loads(text)) for text in texts]
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return (used - len(kept) * 8) / len(kept)


def test_records_stay_light() -> None:
    """The pydantic models these replaced kept 1,470 bytes a job and 1,777 a connection."""
    connections = _bytes_each([_connection_json(i) for i in range(2000)], Connection.from_api)
    jobs = _bytes_each([_job_json(i) for i in range(2000)], Job.from_api)
    # A connection: the record, its id, its name (2 bytes a character: the arrow) and tags.
    assert connections < 400
    # A job: the record and its three integers; the strings and the start time are shared.
    assert jobs < 250
