"""The OpenAPI 3.2 description of the worker's API, served at ``/openapi.json``.

The request, query, result and event schemas are generated from the same models that validate
and build them (:class:`Selection`, :class:`RunOptions`, :class:`PageQuery`, :class:`RunResult`
and every event class), so the document cannot drift from the code on those. The tests check
every answer of a running worker against it, and schemathesis fuzzes it
(``tests/service/test_contract.py``): what the document refuses, the worker refuses too.

3.2 because of the event stream: its ``itemSchema`` describes each message, which 3.1 cannot say.

Longer than 500 lines on purpose: it is one document, written route by route in the order a reader
of ``/openapi.json`` meets them; split across files, a route's answers would stand apart from it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
from typing import Any, get_args

from pydantic import TypeAdapter
from pydantic.json_schema import models_json_schema

from airbyte_fleet._version import __version__
from airbyte_fleet.engine.options import ISO_DURATION_PATTERN, RunOptions, Selection
from airbyte_fleet.engine.result import RunResult
from airbyte_fleet.journal.codec import event_kinds
from airbyte_fleet.runner import SessionState
from airbyte_fleet.service.session_cookie import COOKIE_NAME

__all__ = ["LAST_EVENT_ID_PATTERN", "openapi_document"]

_REF = "#/components/schemas/{model}"
_DURATIONS = ("poll_interval", "timeout", "deadline", "retry_backoff", "grace")
_STATES = list(get_args(SessionState))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


# Durations as text (options.parse_duration): a number of seconds, or amounts with units. It
# also takes capitals and spaces, which the document leaves out.
_NUMBER = r"[0-9]+(\.[0-9]+)?"
_UNIT = "(ms|s|m|h|d)"
_DURATION = f"^({_NUMBER}|({_NUMBER}{_UNIT})+)$"
# The same with some digit other than 0 in it, for the options that must be above zero.
_NONZERO = r"([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)"
_POSITIVE_DURATION = f"^({_NONZERO}|({_NUMBER}{_UNIT})*{_NONZERO}{_UNIT}({_NUMBER}{_UNIT})*)$"
# List fields (options.StrList) take one text too, and null for none; each text is split at
# commas, blanks dropped. A UUID list's texts hold UUIDs (written the common way) and nothing else.
_UUID_LISTS = ("connections", "workspaces")
_UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_UUIDS = rf"^[\s,]*({_UUID}\s*(,[\s,]*{_UUID}\s*)*)?[\s,]*$"


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
        number = next((b for b in prop.get("anyOf", []) if b.get("type") == "number"), prop)
        above_zero = "gt" in number or "exclusiveMinimum" in number
        bound = {"exclusiveMinimum": 0} if above_zero else {"minimum": 0}
        duration = {
            "anyOf": [
                {"type": "number"} | bound,
                {
                    "type": "string",
                    "pattern": _POSITIVE_DURATION if above_zero else _DURATION,
                    "examples": ["45m", "1h30m", "90s", "250ms"],
                },
                # ISO 8601 as Airbyte writes it; above zero means some digit other than 0.
                {"type": "string", "pattern": ISO_DURATION_PATTERN, "examples": ["PT45M"]}
                | ({"allOf": [{"pattern": "[1-9]"}]} if above_zero else {}),
            ]
        }
        if "anyOf" in prop:
            duration["anyOf"].append({"type": "null"})
        options["properties"][name] = {
            key: value for key, value in prop.items() if key in ("title", "description", "default")
        } | duration
    options["description"] = (
        "Run options; each one left out comes from the worker's environment "
        "(AIRBYTE_FLEET_<OPTION>), its config file's [run] table, then the default shown."
    )
    selection = schemas["Selection"]["properties"]
    for name, prop in selection.items():
        if prop.get("type") != "array":
            continue
        text = {"type": "string"} | ({"pattern": _UUIDS} if name in _UUID_LISTS else {})
        selection[name] = {
            key: value for key, value in prop.items() if key not in ("type", "items")
        }
        selection[name]["anyOf"] = [
            {"type": "array", "items": text},
            text | {"description": "one or more, separated by commas"},
            {"type": "null"},
        ]
    return schemas


# What ``GET /runs/{run_id}/events`` accepts as ``Last-Event-ID``. HTTP strips the spaces around
# a header's value before anyone reads it; empty means the same as leaving the header out.
LAST_EVENT_ID_PATTERN = "^[0-9]{0,18}$"


def _event_schemas() -> dict[str, Any]:
    """One schema per event kind for an SSE message's ``data``: what :meth:`Event.to_dict`
    writes, generated from the event classes (fields kept out of log lines are left out, and so
    is every field whose value is None)."""
    schemas: dict[str, Any] = {}
    for kind, cls in sorted(event_kinds().items()):
        hidden = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("log", True)}
        schema = TypeAdapter(cls).json_schema(mode="serialization", ref_template=_REF)
        schema.pop("$defs", None)
        properties = {"event": {"const": kind}}
        for name, prop in schema["properties"].items():
            if name not in hidden:
                properties[name] = _never_null(prop)
        if "$ref" in json.dumps(properties):
            raise RuntimeError(f"event {kind} refers to another schema; describe it here")
        schemas[cls.__name__] = {
            "type": "object",
            "description": f"`{kind}`"
            + (f": {schema['description']}" if "description" in schema else ""),
            "required": ["event", *(n for n in schema.get("required", []) if n not in hidden)],
            "properties": properties,
        }
    return schemas


def _never_null(prop: dict[str, Any]) -> dict[str, Any]:
    """*prop* without its ``null`` branch: ``to_dict`` leaves a None value out instead."""
    prop = {k: v for k, v in prop.items() if k != "title" and not (k == "default" and v is None)}
    branches = prop.pop("anyOf", None)
    if branches is None:
        return prop
    kept = [b for b in branches if b != {"type": "null"}]
    return prop | (kept[0] if len(kept) == 1 else {"anyOf": kept})


def _query_parameters() -> list[dict[str, Any]]:
    # Imported here: the routes serve this document, so they import this module first.
    from airbyte_fleet.service.routes import PageQuery

    parameters = []
    for name, prop in PageQuery.model_json_schema()["properties"].items():
        parameter: dict[str, Any] = {"name": name, "in": "query"}
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameter["schema"] = {k: v for k, v in prop.items() if k not in ("title", "description")}
        parameters.append(parameter)
    return parameters


def _components() -> dict[str, Any]:
    schemas = _model_schemas()
    events = _event_schemas()
    clash = set(events) & set(schemas)
    if clash:
        raise RuntimeError(f"event schemas named like model schemas: {sorted(clash)}")
    schemas |= events
    run_id = {"type": "string", "description": "the run's id, as in the journal"}
    state = {"type": "string", "enum": _STATES}
    schemas |= {
        "RunRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "selection": _ref("Selection")
                | {
                    "description": "empty or left out: the worker's config file's [selection] "
                    "(without one, the run is refused with a 422)"
                },
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
                "error": _nullable({"type": "string"})
                | {
                    "description": "why the worker could not record the run (its journal "
                    "failed mid-run, or its record was damaged before it started); else null"
                },
                "owner": _nullable({"type": "string"})
                | {
                    "description": "the worker replica holding the run's lease now "
                    "(host:pid:tag); null when the run is finished or nobody holds it (queued, "
                    "or its holder died and its lease has not expired yet)"
                },
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
                "error": _nullable({"type": "string"})
                | {
                    "description": "why the worker could not record the run (its journal "
                    "failed mid-run, or its record was damaged before it started); else null"
                },
                "submitted_by": _nullable({"type": "string"})
                | {"description": "the schedule that submitted the run; null: the API"},
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
        "Event": {
            "description": "One event as the log line shows it; `event` is its kind.",
            "oneOf": [_ref(name) for name in events],
        },
        "EventMessage": {
            "type": "object",
            "description": "One Server-Sent Events message: an event of the run.",
            "required": ["id", "event", "data"],
            "properties": {
                "id": {
                    "type": "string",
                    "pattern": "^[0-9]{1,18}$",
                    "description": "the event's sequence number in the run's journal",
                },
                "event": {"type": "string", "enum": sorted(event_kinds())},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": _ref("Event"),
                },
            },
        },
    }
    schemas |= _browser_schemas()
    return {
        "schemas": schemas,
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {
                "type": "apiKey",
                "in": "cookie",
                "name": COOKIE_NAME,
                "description": "what POST /login sets; a request that changes something and "
                "carries only the cookie must come from the worker's own page (Origin)",
            },
        },
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
            "JournalUnreadable": _error(
                "the worker's journal cannot be read: damaged (`error` names the file and what "
                "to do), or its disk is failing"
            ),
            "Forbidden": _error(
                "sent by a web page of another site (to an operation that changes something), "
                "or addressed to a name that is not loopback (a worker without a token)"
            ),
        },
    }


def _ref_response(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/responses/{name}"}


def _refusing_web_pages(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation may answer 403 (``service/origin.py``)."""
    for item in paths.values():
        for key, operation in item.items():
            if key != "parameters":
                operation["responses"]["403"] = _ref_response("Forbidden")
    return paths


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
                "description": "Answers at once, without a token, from the latest check of "
                "Airbyte (made in the background when the last one is a few seconds old; the "
                "first request after a start waits for it, briefly).",
                "security": [],
                "responses": {
                    "200": _json(_ref("Readiness"), "ready"),
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
                    "200": _json({"type": "object"}, "the OpenAPI 3.2 description"),
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
                    "400": _error("the body is empty or not JSON (`{}` asks for the defaults)"),
                    "401": unauthorized,
                    "408": _error("the body did not arrive within the worker's body timeout"),
                    "413": _error("the body is too large"),
                    "415": _error("the body is not declared `Content-Type: application/json`"),
                    "422": _error(
                        "the request is invalid (`errors` lists each field), or its selection "
                        "cannot be planned: it names connections or groups Airbyte or the config "
                        "file do not have, selects nothing (empty, with no [selection] in the "
                        "worker's config file) or matches no connection"
                    ),
                    "503": _error(
                        "Airbyte is unreachable or refuses the credentials, the worker is "
                        "shutting down, or it cannot record the run in its state directory"
                    ),
                },
            },
            "get": {
                "operationId": "listRuns",
                "summary": "Recent runs, newest first",
                "parameters": _query_parameters(),
                "responses": {
                    "200": _json(_ref("RunList"), "one page of runs"),
                    "401": unauthorized,
                    "422": _error(
                        "a parameter is out of range, or not one of these; `errors` lists each"
                    ),
                    "503": _ref_response("JournalUnreadable"),
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
                    "503": _ref_response("JournalUnreadable"),
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
                "run, its `event` the kind and its `data` the event as JSON, as the log line "
                "shows it (`EventMessage`). Reconnect with `Last-Event-ID` to carry on after "
                "the last message received.",
                "parameters": [
                    {
                        "name": "Last-Event-ID",
                        "in": "header",
                        "description": "the `id` of the last message received; empty or left "
                        "out: from the run's first event",
                        "schema": {"type": "string", "pattern": LAST_EVENT_ID_PATTERN},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "the event stream",
                        "content": {"text/event-stream": {"itemSchema": _ref("EventMessage")}},
                    },
                    "401": unauthorized,
                    "404": not_found,
                    "422": invalid,
                    "503": _ref_response("JournalUnreadable"),
                },
            },
        },
        "/runs/{run_id}/report.html": {
            "parameters": run_param,
            "get": {
                "operationId": "runReport",
                "summary": "The run's report: one self-contained HTML page",
                "description": "The run's header, a timeline (one bar per sync from its first "
                "trigger to its end, the time the concurrency limit held it back drawn apart, a "
                "mark per retry) and a table of its syncs, as `airbyte-fleet runs show RUN_ID "
                "--html` writes it; no script, nothing fetched. A run still going shows what "
                "is known so far.",
                "responses": {
                    "200": {
                        "description": "the report",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    },
                    "401": unauthorized,
                    "404": not_found,
                    "503": _ref_response("JournalUnreadable"),
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
                    "503": _ref_response("JournalUnreadable"),
                },
            },
        },
    }


def _browser_schemas() -> dict[str, Any]:
    """What the web page (``/ui``) asks of the API besides runs: logging in, the schedules and the
    config file's groups."""
    return {
        "Login": {
            "type": "object",
            "additionalProperties": False,
            "required": ["token"],
            "properties": {
                "token": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 4096,
                    "description": "the worker's API token (AIRBYTE_FLEET_API_TOKEN)",
                }
            },
        },
        "LoggedIn": {
            "type": "object",
            "required": ["expires_in"],
            "properties": {
                "expires_in": {
                    "type": "integer",
                    "description": "seconds until the session cookie expires",
                }
            },
        },
        "ScheduleItem": {
            "type": "object",
            "required": ["name", "enabled", "cron", "timezone", "next", "selection", "request"],
            "properties": {
                "name": {"type": "string"},
                "enabled": {"type": "boolean"},
                "cron": {"type": "string"},
                "timezone": {"type": "string"},
                "next": {
                    "type": "array",
                    "items": {"type": "string", "format": "date-time"},
                    "description": "the next fire times, in the schedule's zone (none when "
                    "disabled)",
                },
                "last_tick": _nullable({"type": "string", "format": "date-time"}),
                "run_id": _nullable({"type": "string"})
                | {"description": "the last run the schedule submitted"},
                "running": {"type": "boolean"},
                "outcome": _nullable({"type": "string"})
                | {"description": "the last run's outcome once it has finished"},
                "selection": {"type": "string", "description": "what it selects, in short"},
                "request": _ref("RunRequest")
                | {"description": "a POST /runs body that runs what the schedule runs, now"},
            },
        },
        "ScheduleList": {
            "type": "object",
            "required": ["schedules"],
            "properties": {"schedules": {"type": "array", "items": _ref("ScheduleItem")}},
        },
        "GroupList": {
            "type": "object",
            "required": ["groups"],
            "properties": {
                "groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "selection"],
                        "properties": {
                            "name": {"type": "string"},
                            "selection": {"type": "string", "description": "what it selects"},
                        },
                    },
                }
            },
        },
    }


def _browser_paths() -> dict[str, Any]:
    unauthorized = _ref_response("Unauthorized")
    return {
        "/login": {
            "post": {
                "operationId": "login",
                "summary": "Exchange the API token for a browser's session cookie",
                "description": "Sets an `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the "
                "page is on https) that authenticates the API and its event streams; its value "
                "is not the token.",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("Login")}},
                },
                "responses": {
                    "200": _json(_ref("LoggedIn"), "logged in; the cookie is set"),
                    "400": _error("the body is empty or not JSON"),
                    "401": _error("not this worker's token"),
                    "408": _error("the body did not arrive within the worker's body timeout"),
                    "409": _error("the worker has no token: nothing to log in with"),
                    "413": _error("the body is too large"),
                    "415": _error("the body is not declared `Content-Type: application/json`"),
                    "422": _error("the request is invalid; `errors` lists each field"),
                },
            }
        },
        "/logout": {
            "post": {
                "operationId": "logout",
                "summary": "End the browser's session",
                "security": [],
                "responses": {"204": {"description": "logged out; the cookie is cleared"}},
            }
        },
        "/schedules": {
            "get": {
                "operationId": "listSchedules",
                "summary": "The config file's schedules: next fire times, last run and outcome",
                "responses": {
                    "200": _json(_ref("ScheduleList"), "every schedule"),
                    "401": unauthorized,
                    "503": _ref_response("JournalUnreadable"),
                },
            }
        },
        "/groups": {
            "get": {
                "operationId": "listGroups",
                "summary": "The config file's groups, which a run's selection can name",
                "responses": {
                    "200": _json(_ref("GroupList"), "every group"),
                    "401": unauthorized,
                },
            }
        },
    }


@functools.cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.2.0",
        "info": {
            "title": "airbyte-fleet worker",
            "version": __version__,
            "description": "Trigger many Airbyte syncs at once, follow every job, stream its "
            "events and get one result per run.",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": _refusing_web_pages(_paths() | _browser_paths()),
        "components": _components(),
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy: callers may change theirs (e.g. add a server URL) without touching others."""
    return copy.deepcopy(_document())
