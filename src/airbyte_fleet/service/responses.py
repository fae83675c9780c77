"""JSON responses of the worker's API: every body passes the secret filter on its way out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from airbyte_fleet._redact import redact

__all__ = [
    "error_response",
    "errors_of",
    "field_errors",
    "json_response",
    "validation_response",
]

JSON_TYPE = "application/json"


def json_response(
    data: Any, status: int = 200, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    # Defence in depth: a secret that slipped into an error text or a result is still masked.
    text = redact(json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str))
    return web.Response(
        text=text, status=status, content_type=JSON_TYPE, charset="utf-8", headers=headers
    )


def error_response(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.Response:
    return json_response({"error": message, **extra}, status, headers=headers)


def field_errors(
    errors: Iterable[ErrorDetails], prefix: Sequence[str | int] = ()
) -> list[dict[str, Any]]:
    """pydantic's errors as ``{"loc", "msg", "type"}``; the offending input is never echoed, as it
    may be large or be a secret pasted into the wrong field."""
    out: list[dict[str, Any]] = []
    for error in errors:
        out.append(
            {
                "loc": [*prefix, *error["loc"]],
                "msg": str(error["msg"]).removeprefix("Value error, "),
                "type": error["type"],
            }
        )
    return out


def validation_response(
    errors: list[dict[str, Any]], message: str = "The request is invalid."
) -> web.Response:
    return error_response(422, message, errors=errors)


def errors_of(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[dict[str, Any]]:
    return field_errors(exc.errors(include_url=False, include_input=False), prefix)
