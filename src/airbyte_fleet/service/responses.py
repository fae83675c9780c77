"""JSON answers of the worker's API: every body passes the secret filter on its way out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from airbyte_fleet._redact import redact

__all__ = ["dumps", "error_response", "json_response"]

JSON_TYPE = "application/json"


def dumps(data: Any) -> str:
    """*data* as compact JSON on one line (line breaks are escaped), secrets masked."""
    # Defence in depth: a secret that slipped into an error text or a result is still masked.
    return redact(json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str))


def json_response(
    data: Any, status: int = 200, *, headers: Mapping[str, str] | None = None
) -> web.Response:
    # A lone surrogate (from bytes that were not UTF-8) cannot be encoded: it is written as
    # JSON's own escape for it (\udc80) instead of failing the answer.
    body = dumps(data).encode("utf-8", "backslashreplace")
    return web.Response(
        body=body, status=status, content_type=JSON_TYPE, charset="utf-8", headers=headers
    )


def error_response(
    status: int, message: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> web.Response:
    """The API's error shape: ``{"error": one sentence, ...extra}``."""
    return json_response({"error": message, **extra}, status, headers=headers)
