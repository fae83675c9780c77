"""The OpenAPI 3.1 description of the worker's API, served at ``/openapi.json``.

The request and result schemas are generated from the same pydantic models that validate and
build them (:class:`Selection`, :class:`RunOptions`, :class:`RunResult`), so the document cannot
drift from the code on those; the tests check every response of a running worker against it.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, get_args

from pydantic.json_schema import models_json_schema

from airbyte_fleet._version import __version__
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.engine.result import RunResult
from airbyte_fleet.runner import SessionState

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"
_DURATIONS = ("poll_interval", "timeout", "deadline", "retry_backoff")
_STATES = list(get_args(SessionState))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _model_schemas() -> dict[str, Any]:
    _, top = models_json_schema(
        [(Selection, "validation"), (RunOptions, "validation"), (RunResult, "serialization")],
        ref_template=_REF,
    )
    schemas: dict[str, Any] = top["$defs"]
    options = schemas["RunOptions"]
    for name in _DURATIONS:
        # pydantic describes the parsed value (seconds); requests may also use text like "45m".
        prop = options["properties"][name]
        duration = {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "examples": ["45m", "1h30m", "90s", "250ms"]},
            ]
        }
        if name == "deadline":
            duration["anyOf"].append({"type": "null"})
        options["properties"][name] = {
            key: value for key, value in prop.items() if key in ("title", "description", "default")
        } | duration
    options["description"] = (
        "Run options; each one left out comes from the worker's environment "
        "(AIRBYTE_FLEET_<OPTION>), its config file's [run] table, then the default shown."
    )
    return schemas


_SYNC_EVENT_KINDS = [
    "run_started",
    "sync_triggering",
    "sync_triggered",
    "sync_adopted",
    "sync_status_changed",
    "sync_retrying",
    "sync_detached",
    "sync_succeeded",
    "sync_failed",
    "sync_timed_out",
    "sync_cancelled",
    "sync_skipped",
    "run_finished",
]


def _components() -> dict[str, Any]:
    schemas = _model_schemas()
    run_id = {"type": "string", "description": "the run's id, as in the journal"}
    state = {"type": "string", "enum": _STATES}
    schemas |= {
        "RunRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "selection": _ref("Selection")
                | {"description": "empty or left out: the config file's [selection]"},
                "options": _ref("RunOptions"),
            },
        },
        "RunAccepted": {
            "type": "object",
            "required": ["run_id", "state"],
            "properties": {
                "run_id": run_id,
                "state": state,
                "warnings": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "parts of the selection that matched nothing",
                },
            },
        },
        "RunStatus": {
            "type": "object",
            "required": ["run_id", "state", "result"],
            "properties": {
                "run_id": run_id,
                "state": state,
                "result": _nullable(_ref("RunResult"))
                | {"description": "the run's result once it has finished; null until then"},
            },
        },
        "RunListItem": {
            "type": "object",
            "required": ["run_id", "state", "total", "counts"],
            "properties": {
                "run_id": run_id,
                "state": state,
                "started_at": _nullable({"type": "string", "format": "date-time"}),
                "finished_at": _nullable({"type": "string", "format": "date-time"}),
                "outcome": _nullable({"type": "string"}),
                "total": {"type": "integer", "minimum": 0},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "RunList": {
            "type": "object",
            "required": ["runs", "limit", "offset"],
            "properties": {
                "runs": {"type": "array", "items": _ref("RunListItem")},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            },
        },
        "FieldError": {
            "type": "object",
            "required": ["loc", "msg", "type"],
            "properties": {
                "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                "msg": {"type": "string"},
                "type": {"type": "string"},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "one sentence naming the fix"},
                "errors": {"type": "array", "items": _ref("FieldError")},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": {"type": "string", "enum": ["ok"]}},
        },
        "Readiness": {
            "type": "object",
            "required": ["ready"],
            "properties": {
                "ready": {"type": "boolean"},
                "reason": {"type": "string", "description": "why not, in one sentence"},
            },
        },
    }
    return {
        "schemas": schemas,
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "parameters": {
            "RunId": {
                "name": "run_id",
                "in": "path",
                "required": True,
                "schema": {"type": "string"},
            }
        },
        "responses": {
            "Unauthorized": _error("no bearer token, or not the worker's"),
            "NotFound": _error("no such run"),
        },
    }


def _ref_response(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _paths() -> dict[str, Any]:
    unauthorized = _ref_response("Unauthorized")
    not_found = _ref_response("NotFound")
    invalid = _error("the request is invalid; `errors` lists each field")
    run_param = [{"$ref": "#/components/parameters/RunId"}]
    return {
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "The process is up",
                "security": [],
                "responses": {"200": _json(_ref("Health"), "up")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "ready",
                "summary": "Airbyte is reachable and accepts the worker's credentials",
                "responses": {
                    "200": _json(_ref("Readiness"), "ready"),
                    "401": unauthorized,
                    "503": _json(_ref("Readiness"), "not ready; `reason` says why"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "the Prometheus text exposition format",
                        "content": {
                            "text/plain": {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    },
                    "503": _error("metrics are not available in this worker"),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {
                    "200": _json({"type": "object"}, "the OpenAPI 3.1 description"),
                    "401": unauthorized,
                },
            }
        },
        "/runs": {
            "post": {
                "operationId": "submitRun",
                "summary": "Plan a run and queue it",
                "description": "Selections are resolved against Airbyte before the run is "
                "accepted, so unknown ids or a selection matching nothing are refused at once. "
                "A connection that another run of this worker is already syncing is not "
                "triggered twice: the run adopts (or skips, or fails) it by `if_running`.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("RunRequest")}},
                },
                "responses": {
                    "202": _json(_ref("RunAccepted"), "accepted; queued or already running"),
                    "400": _error("the body is not JSON"),
                    "401": unauthorized,
                    "413": _error("the body is too large"),
                    "422": invalid,
                    "503": _error(
                        "Airbyte is unreachable or refuses the credentials, the worker is "
                        "shutting down, or it cannot record the run in its state directory"
                    ),
                },
            },
            "get": {
                "operationId": "listRuns",
                "summary": "Recent runs, newest first",
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                    },
                    {
                        "name": "offset",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 0, "default": 0},
                    },
                ],
                "responses": {
                    "200": _json(_ref("RunList"), "one page of runs"),
                    "401": unauthorized,
                    "422": invalid,
                },
            },
        },
        "/runs/{run_id}": {
            "parameters": run_param,
            "get": {
                "operationId": "getRun",
                "summary": "A run's state, and its result once finished",
                "responses": {
                    "200": _json(_ref("RunStatus"), "the run"),
                    "401": unauthorized,
                    "404": not_found,
                },
            },
        },
        "/runs/{run_id}/events": {
            "parameters": run_param,
            "get": {
                "operationId": "runEvents",
                "summary": "The run's events as Server-Sent Events",
                "description": "Replays the journal, then follows the run live; ends after "
                "`run_finished`. Each message's `id` is the event's sequence number in the "
                "run, its `event` the kind (" + ", ".join(_SYNC_EVENT_KINDS) + ") and its "
                "`data` the event as JSON, as the log line shows it. Reconnect with "
                "`Last-Event-ID` to carry on after the last message received.",
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": unauthorized,
                    "404": not_found,
                    "422": invalid,
                },
            },
        },
        "/runs/{run_id}/cancel": {
            "parameters": run_param,
            "post": {
                "operationId": "cancelRun",
                "summary": "Cancel the run's jobs in Airbyte",
                "description": "A queued run ends at once with nothing triggered; a running "
                "one cancels its jobs in flight (a job another run still follows is left "
                "running) and ends `interrupted`. Follow the events to see it end.",
                "responses": {
                    "202": _json(_ref("RunStatus"), "cancelling"),
                    "401": unauthorized,
                    "404": not_found,
                    "409": _error("the run has already finished, or another process runs it"),
                },
            },
        },
    }


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "airbyte-fleet worker",
            "version": __version__,
            "description": "Trigger many Airbyte syncs at once, follow every job, stream its "
            "events and get one result per run.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": _components(),
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy: callers may change theirs (e.g. add a server URL) without touching others."""
    return copy.deepcopy(_document())
