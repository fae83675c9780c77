"""The generated starting data: workspaces, their tags and connections, all from one seed.

Everything is drawn from one ``random.Random(seed)`` in a fixed order and nothing reads the wall
clock, so the same options give byte-identical workspaces and connections on every run; tests
and demos can rely on ids and names. Jobs are not seeded here: they come from requests.
"""

from __future__ import annotations

import random
import uuid
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


@dataclass(frozen=True)
class SeedData:
    """Public JSON views: ``WorkspaceResponse`` and ``ConnectionResponse`` objects, in order."""

    workspaces: list[dict[str, Any]]
    connections: list[dict[str, Any]]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def generate(options: SimulatorOptions) -> SeedData:
    """The workspaces and connections of ``options``; the last ``inactive_connections`` are
    ``inactive``, and connections go round the workspaces in turn."""
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
    connections = [
        _connection(rng, index, workspaces, tags, inactive=index >= first_inactive)
        for index in range(options.connections)
    ]
    return SeedData(workspaces=workspaces, connections=connections)


def _connection(
    rng: random.Random,
    index: int,
    workspaces: list[dict[str, Any]],
    tags: dict[str, list[dict[str, str]]],
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
        stream: dict[str, Any] = {"name": name, "syncMode": mode}
        if source in ("Postgres", "MySQL"):
            stream["namespace"] = "public"
        if mode.startswith("incremental"):
            stream["cursorField"] = ["updated_at"]
        if mode == "incremental_deduped_history":
            stream["primaryKey"] = [["id"]]
        streams.append(stream)
    return {
        "connectionId": _uuid(rng),
        "name": f"{source} → {destination} {index + 1:03d}",
        "sourceId": _uuid(rng),
        "destinationId": _uuid(rng),
        "workspaceId": workspace_id,
        "status": "inactive" if inactive else "active",
        "schedule": dict(rng.choice(_SCHEDULES)),
        "nonBreakingSchemaUpdatesBehavior": "ignore",
        "namespaceDefinition": "destination",
        "configurations": {"streams": streams},
        "createdAt": _CONNECTIONS_EPOCH + rng.randrange(180 * 86_400),
        "tags": [dict(tag) for tag in chosen_tags],
    }
