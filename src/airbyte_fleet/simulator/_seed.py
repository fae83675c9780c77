"""The generated starting data: workspaces, their tags and connections, all from one seed.

Everything is drawn from one ``random.Random(seed)`` in a fixed order and nothing reads the wall
clock, so the same options give byte-identical workspaces and connections on every run; tests
and demos can rely on ids and names. Jobs are not seeded here: they come from requests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ._options import SimulatorOptions

__all__ = ["SeedData", "generate"]

# A fixed epoch for generated connection createdAt values, so a seed gives identical data
# whatever the wall clock says.
_CONNECTIONS_EPOCH = 1_700_000_000

_SOURCES = (
    "Postgres",
    "MySQL",
    "Stripe",
    "Salesforce",
    "HubSpot",
    "Google Sheets",
    "Shopify",
    "Zendesk Support",
    "GitHub",
    "Facebook Marketing",
    "MongoDb",
    "Jira",
)
_DESTINATIONS = (
    "Snowflake",
    "BigQuery",
    "Redshift",
    "Postgres",
    "S3",
    "Databricks Lakehouse",
    "DuckDB",
    "MotherDuck",
)
_WORKSPACE_NAMES = (
    "Acme Analytics",
    "Globex Data",
    "Initech BI",
    "Umbrella Ops",
    "Stark Growth",
    "Wayne Finance",
)
_TAGS = (
    ("nightly", "3B82F6"),
    ("hourly", "10B981"),
    ("finance", "F59E0B"),
    ("marketing", "EC4899"),
)
_STREAMS = (
    "users",
    "orders",
    "invoices",
    "events",
    "accounts",
    "products",
    "subscriptions",
    "tickets",
)
_SYNC_MODES = ("full_refresh_overwrite", "incremental_append", "incremental_deduped_history")
_SCHEDULES: tuple[dict[str, str], ...] = (
    {"scheduleType": "manual"},
    {"scheduleType": "manual"},
    {"scheduleType": "cron", "cronExpression": "0 0 2 * * ?"},
    {"scheduleType": "cron", "cronExpression": "0 15 * * * ?"},
    {"scheduleType": "basic", "basicTiming": "Every 24 HOURS"},
)


# RFC 4122 variant (10xx) and version 4, as uuid.UUID(version=4) sets them.
_UUID_CLEAR = ~((0xC000 << 48) | (0xF000 << 64))
_UUID_SET = (0x8000 << 48) | (4 << 76)


@dataclass(frozen=True)
class SeedData:
    """Public JSON views: ``WorkspaceResponse`` and ``ConnectionResponse`` objects, in order."""

    workspaces: list[dict[str, Any]]
    connections: list[dict[str, Any]]


def _uuid(rng: random.Random) -> str:
    # What str(uuid.UUID(int=..., version=4)) gives, without building the object: a third of
    # the time of seeding 100,000 connections went there.
    value = rng.getrandbits(128)
    value = (value & _UUID_CLEAR) | _UUID_SET
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def generate(options: SimulatorOptions) -> SeedData:
    """The workspaces and connections of ``options``; the last ``inactive_connections`` are
    ``inactive``, and connections go round the workspaces in turn.

    Connections share their unchanging parts (tags, schedules, streams): 100,000 of them would
    otherwise hold 2.5 KB of small dicts each. Only a connection's ``status`` is ever changed
    in place.
    """
    rng = random.Random(options.seed)
    workspaces: list[dict[str, Any]] = []
    tags: dict[str, list[dict[str, str]]] = {}
    for index in range(options.workspaces):
        workspace_id = _uuid(rng)
        base = _WORKSPACE_NAMES[index % len(_WORKSPACE_NAMES)]
        round_ = index // len(_WORKSPACE_NAMES)
        workspaces.append(
            {
                "workspaceId": workspace_id,
                "name": base if round_ == 0 else f"{base} {round_ + 1}",
                "dataResidency": "auto",
                "notifications": {
                    "failure": {"email": {"enabled": True}, "webhook": {"enabled": False}},
                    "success": {"email": {"enabled": False}, "webhook": {"enabled": False}},
                    "connectionUpdate": {"email": {"enabled": True}},
                    "connectionUpdateActionRequired": {"email": {"enabled": True}},
                    "syncDisabled": {"email": {"enabled": True}},
                    "syncDisabledWarning": {"email": {"enabled": True}},
                },
            }
        )
        tags[workspace_id] = [
            {"tagId": _uuid(rng), "workspaceId": workspace_id, "name": name, "color": color}
            for name, color in _TAGS
        ]
    first_inactive = options.connections - options.inactive_connections
    streams: dict[tuple[str, str, bool], dict[str, Any]] = {}
    connections = [
        _connection(rng, index, workspaces, tags, streams, inactive=index >= first_inactive)
        for index in range(options.connections)
    ]
    return SeedData(workspaces=workspaces, connections=connections)


def _connection(
    rng: random.Random,
    index: int,
    workspaces: list[dict[str, Any]],
    tags: dict[str, list[dict[str, str]]],
    shared_streams: dict[tuple[str, str, bool], dict[str, Any]],
    *,
    inactive: bool,
) -> dict[str, Any]:
    workspace = workspaces[index % len(workspaces)]
    workspace_id = str(workspace["workspaceId"])
    source = rng.choice(_SOURCES)
    destination = rng.choice(_DESTINATIONS)
    chosen_tags = rng.sample(tags[workspace_id], rng.randint(0, 2))
    streams: list[dict[str, Any]] = []
    for name in rng.sample(_STREAMS, rng.randint(1, 4)):
        mode = rng.choice(_SYNC_MODES)
        key = (name, mode, source in ("Postgres", "MySQL"))
        stream = shared_streams.get(key)
        if stream is None:
            stream = {"name": name, "syncMode": mode}
            if key[2]:
                stream["namespace"] = "public"
            if mode.startswith("incremental"):
                stream["cursorField"] = ["updated_at"]
            if mode == "incremental_deduped_history":
                stream["primaryKey"] = [["id"]]
            shared_streams[key] = stream
        streams.append(stream)
    return {
        "connectionId": _uuid(rng),
        "name": f"{source} → {destination} {index + 1:03d}",
        "sourceId": _uuid(rng),
        "destinationId": _uuid(rng),
        "workspaceId": workspace_id,
        "status": "inactive" if inactive else "active",
        "schedule": rng.choice(_SCHEDULES),
        "nonBreakingSchemaUpdatesBehavior": "ignore",
        "namespaceDefinition": "destination",
        "configurations": {"streams": streams},
        "createdAt": _CONNECTIONS_EPOCH + rng.randrange(180 * 86_400),
        "tags": chosen_tags,
    }
