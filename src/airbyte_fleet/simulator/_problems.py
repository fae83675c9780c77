"""Error bodies as Airbyte's public API writes them (api-problems.yaml), plus JSON replies."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web

__all__ = [
    "ProblemError",
    "bad_request",
    "error_id_body",
    "invalid_api_key",
    "json_response",
    "problem",
    "resource_not_found",
    "state_conflict",
    "try_again_later",
    "unprocessable_entity",
]

_ERRORS = "https://reference.airbyte.com/reference/errors"


def json_response(
    status: int, payload: object, headers: dict[str, str] | None = None
) -> web.Response:
    # Airbyte writes problems as plain application/json too, not application/problem+json.
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def problem(status: int, type_: str, title: str, detail: str, data: Any) -> dict[str, Any]:
    # documentationUrl is left out rather than sent as null: api-problems.yaml types it as a
    # non-nullable string, and clients must cope with it missing either way.
    return {"status": status, "type": type_, "title": title, "detail": detail, "data": data}


def bad_request(message: str) -> dict[str, Any]:
    return problem(
        400,
        f"{_ERRORS}#bad-request",
        "bad-request",
        "The request could not be understood by the server due to malformed syntax.",
        {"message": message},
    )


def invalid_api_key(message: str) -> dict[str, Any]:
    return problem(
        401,
        f"{_ERRORS}#invalid-api-key",
        "invalid-api-key",
        "The API key in the Authorization header is invalid.",
        {"message": message},
    )


def resource_not_found(resource_type: str, resource_id: str) -> dict[str, Any]:
    return problem(
        404,
        f"{_ERRORS}#resource-not-found",
        "resource-not-found",
        "The requested resource could not be found.",
        {"resourceType": resource_type, "resourceId": resource_id},
    )


def state_conflict(message: str = "Could not fulfill request") -> dict[str, Any]:
    return problem(
        409,
        f"{_ERRORS}#409-state-conflict",
        "state-conflict",
        "State conflict",
        {"message": message},
    )


def try_again_later(message: str) -> dict[str, Any]:
    return problem(
        409,
        f"{_ERRORS}#try-again-later",
        "try-again-later",
        "Please try again later.",
        {"message": message},
    )


def unprocessable_entity(message: str) -> dict[str, Any]:
    return problem(
        422,
        f"{_ERRORS}#unprocessable-entity",
        "unprocessable-entity",
        "The body of the request was not understood",
        {"message": message},
    )


def error_id_body() -> dict[str, str]:
    """The body of Airbyte's uncaught-exception and bad-client-credentials handlers."""
    return {"errorId": str(uuid.uuid4())}


class ProblemError(Exception):
    """Raised by handlers to answer with a JSON error body."""

    def __init__(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers

    def response(self) -> web.Response:
        return json_response(self.status, self.body, self.headers)
