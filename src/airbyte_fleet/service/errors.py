"""Every error of the worker's API as its HTTP answer, in one place.

Handlers and middlewares only raise. :func:`problems`, the outermost middleware, turns what they
raise into the JSON answer the way starlette's exception handlers do: the answer registered for the
nearest class in the exception's MRO wins (``functools.singledispatch`` does that lookup). So every
error status and text of the API is in this file, the one place the OpenAPI document must agree
with; an exception nobody registered is a 500 that logs the error and shows no traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ValidationError

from airbyte_fleet._logging import get_logger
from airbyte_fleet.api import AirbyteError
from airbyte_fleet.coordination import CoordinationError
from airbyte_fleet.engine.plan import PlanError
from airbyte_fleet.journal import JournalDamagedError, JournalError
from airbyte_fleet.service.responses import error_response
from airbyte_fleet.service.runs import RunConflictError, RunNotFoundError, ShuttingDownError

__all__ = [
    "BodyTooLargeError",
    "BodyTooSlowError",
    "CrossSiteError",
    "InvalidRequestError",
    "LoginRefusedError",
    "LoginRequiredError",
    "MetricsUnavailableError",
    "NotJSONError",
    "NotLoopbackError",
    "RunNotRecordedError",
    "UnauthenticatedError",
    "UnsupportedMediaTypeError",
    "field_errors",
    "problems",
    "request_as",
]

log = get_logger("airbyte_fleet.service")

M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------------------- the API's own errors


class InvalidRequestError(Exception):
    """The body, query or a header fails validation; *errors* are ``{"loc", "msg", "type"}``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


class NotJSONError(Exception):
    """The request body cannot be parsed as JSON; *reason* says where (never what it holds)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsupportedMediaTypeError(Exception):
    """A body that is not declared ``application/json``: a web page can send other types
    to any address without asking first."""


class BodyTooSlowError(Exception):
    """The body did not arrive within the worker's body timeout."""

    def __init__(self, timeout: float) -> None:
        super().__init__(f"body not read within {timeout:g} s")
        self.timeout = timeout


class CrossSiteError(Exception):
    """A request that changes something, sent by a web page of another origin."""


class NotLoopbackError(Exception):
    """A request to a worker without a token, addressed to a name that is not loopback (a page
    whose own name was made to resolve to this machine: DNS rebinding)."""


class BodyTooLargeError(Exception):
    """The declared body length is above the worker's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"body above {limit} bytes")
        self.limit = limit


class UnauthenticatedError(Exception):
    """No bearer token (*missing*), or not the worker's."""

    def __init__(self, *, missing: bool) -> None:
        super().__init__("no bearer token" if missing else "wrong bearer token")
        self.missing = missing


class LoginRequiredError(Exception):
    """A page of the web UI asked for without credentials; *next* is its path and query, quoted
    for a query string."""

    def __init__(self, next_path: str) -> None:
        super().__init__("login required")
        self.next_path = next_path


class LoginRefusedError(Exception):
    """``POST /login`` with a token that is not the worker's (or a worker that has none)."""

    def __init__(self, *, no_token: bool = False) -> None:
        super().__init__("no token to log in with" if no_token else "wrong token")
        self.no_token = no_token


class MetricsUnavailableError(Exception):
    """The worker was built without a metrics exporter."""


class RunNotRecordedError(Exception):
    """The state directory refused the new run (the cause is chained); nothing was triggered.

    Raised only where a run is recorded: elsewhere a failing disk is a plain 500.
    """


def field_errors(exc: ValidationError, loc: Sequence[str | int] = ()) -> list[dict[str, Any]]:
    """pydantic's errors as ``{"loc", "msg", "type"}``, each ``loc`` under *loc*; the offending
    input is never echoed, as it may be large or be a secret pasted into the wrong field: a
    message that quotes it (``'soon' is not a duration``) says "the value" instead."""
    return [
        {
            "loc": [*loc, *error["loc"]],
            "msg": _unquoted(str(error["msg"]).removeprefix("Value error, "), error["input"]),
            "type": error["type"],
        }
        for error in exc.errors(include_url=False)
    ]


def _unquoted(message: str, given: Any) -> str:
    """*message* with each value of *given* it quotes replaced by "the value". (Messages quote
    what they show; a bare word is left alone, as it is more likely the message's own.)"""
    spellings: set[str] = set()
    for value in _leaves(given):
        text = str(value)
        if text:
            spellings |= {repr(text), f"'{text}'", f'"{text}"', f"`{text}`"}
    for spelling in sorted(spellings, key=len, reverse=True):
        message = message.replace(spelling, "the value")
    return message


def _leaves(given: Any) -> Iterator[str | int | float]:
    """The scalars in *given* (a JSON value), without recursion: a body may nest deep."""
    stack = [given]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif isinstance(value, str | int | float) and not isinstance(value, bool):
            yield value


def request_as(
    model: type[M],
    data: Any,
    *,
    loc: Sequence[str | int] = (),
    context: Any = None,
    strict: bool | None = None,
) -> M:
    """The request's *data* (body, query) as *model*, or :class:`InvalidRequestError` listing
    every field that is wrong (where the CLI and config files say one sentence, the API answers
    with all of them, each under its ``loc``). *strict* for a JSON body: its values have JSON's
    own types, so ``0`` is not ``false`` nor ``"5"`` a number (a query's values are all text)."""
    try:
        return model.model_validate(data, context=context, strict=strict)
    except ValidationError as exc:
        raise InvalidRequestError(field_errors(exc, loc)) from None


# --------------------------------------------------------------------------- the answers


@functools.singledispatch
def answer(exc: Exception, request: web.Request) -> web.Response:
    log.error("request_failed", method=request.method, path=request.path, error=repr(exc))
    return error_response(500, "The worker failed on this request; its log has the details.")


@answer.register
def _aiohttp(exc: web.HTTPException, request: web.Request) -> web.Response:
    # aiohttp's own refusals (no route, wrong method, body too large while read), as JSON.
    message = {
        404: f"There is no route {request.method} {request.path}; see /openapi.json.",
        405: f"{request.path} does not accept {request.method}; see /openapi.json.",
        413: "The request body is too large.",
    }.get(exc.status, exc.reason)
    headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
    return error_response(exc.status, message, headers=headers)


@answer.register
def _invalid(exc: InvalidRequestError, request: web.Request) -> web.Response:
    return error_response(422, "The request is invalid.", errors=exc.errors)


@answer.register
def _not_json(exc: NotJSONError, request: web.Request) -> web.Response:
    return error_response(400, f"The request body is not JSON ({exc.reason}); send a JSON object.")


@answer.register
def _not_json_type(exc: UnsupportedMediaTypeError, request: web.Request) -> web.Response:
    return error_response(
        415, "The request body must be JSON; send it with 'Content-Type: application/json'."
    )


@answer.register
def _too_slow(exc: BodyTooSlowError, request: web.Request) -> web.Response:
    response = error_response(
        408, f"The request body did not arrive within {exc.timeout:g} s; send it again."
    )
    # The rest of the body may still be on its way: nothing else can follow on this connection.
    response.force_close()
    return response


@answer.register
def _cross_site(exc: CrossSiteError, request: web.Request) -> web.Response:
    return error_response(
        403,
        "The worker refuses requests that web pages of other sites send; call it from a "
        "script or the command line.",
    )


@answer.register
def _not_loopback(exc: NotLoopbackError, request: web.Request) -> web.Response:
    return error_response(
        403,
        "A worker without an API token answers only requests addressed to 127.0.0.1, ::1 or "
        "localhost; use one of those, or start it with AIRBYTE_FLEET_API_TOKEN set.",
    )


@answer.register
def _too_large(exc: BodyTooLargeError, request: web.Request) -> web.Response:
    return error_response(413, f"The request body is larger than {exc.limit} bytes.")


@answer.register
def _unauthenticated(exc: UnauthenticatedError, request: web.Request) -> web.Response:
    return error_response(
        401,
        "This API needs a bearer token; send 'Authorization: Bearer <token>' with the value of "
        "AIRBYTE_FLEET_API_TOKEN."
        if exc.missing
        else "The bearer token is not the one this worker was started with.",
        headers={"WWW-Authenticate": 'Bearer realm="airbyte-fleet"'},
    )


@answer.register
def _login_required(exc: LoginRequiredError, request: web.Request) -> web.Response:
    # A browser follows this to the login form, which comes back here once logged in.
    return error_response(
        303,
        "This page needs a login; open /ui/login.",
        headers={"Location": f"/ui/login?next={exc.next_path}"},
    )


@answer.register
def _login_refused(exc: LoginRefusedError, request: web.Request) -> web.Response:
    if exc.no_token:
        return error_response(
            409, "This worker has no API token, so there is nothing to log in with; open /ui."
        )
    return error_response(
        401, "That is not this worker's token; paste the value of AIRBYTE_FLEET_API_TOKEN."
    )


@answer.register
def _no_metrics(exc: MetricsUnavailableError, request: web.Request) -> web.Response:
    return error_response(503, "Metrics are not available in this worker.")


@answer.register
def _no_run(exc: RunNotFoundError, request: web.Request) -> web.Response:
    run_id = exc.args[0] if exc.args else request.match_info.get("run_id", "")
    return error_response(404, f"There is no run {run_id!r}; GET /runs lists the runs.")


@answer.register
def _conflict(exc: RunConflictError, request: web.Request) -> web.Response:
    return error_response(409, str(exc))


@answer.register
def _shutting_down(exc: ShuttingDownError, request: web.Request) -> web.Response:
    return error_response(503, "The worker is shutting down; submit the run again later.")


@answer.register
def _unplannable(exc: PlanError, request: web.Request) -> web.Response:
    return error_response(422, exc.message)


@answer.register
def _airbyte(exc: AirbyteError, request: web.Request) -> web.Response:
    # Nothing was triggered: Airbyte could not resolve the selection (unreachable, or it refuses
    # the worker's credentials), which the caller can only wait out.
    return error_response(503, exc.message)


@answer.register
def _not_recorded(exc: RunNotRecordedError, request: web.Request) -> web.Response:
    log.error("run_not_recorded", error=str(exc.__cause__ or exc))
    return error_response(503, "The worker cannot record the run in its state directory.")


@answer.register
def _journal(exc: JournalError, request: web.Request) -> web.Response:
    # The journal cannot be read: damaged (one sentence naming the file and what to do), or its
    # disk failing, which may pass.
    log.error("journal_unreadable", path=request.path, error=str(exc))
    if isinstance(exc, JournalDamagedError):
        return error_response(503, str(exc))
    return error_response(503, f"The worker cannot read its journal ({exc}); try again later.")


@answer.register
def _coordination(exc: CoordinationError, request: web.Request) -> web.Response:
    # The database the replicas share (leases, the queue) does not answer: it may come back.
    log.error("store_unreachable", path=request.path, error=exc.message)
    return error_response(
        503, f"The worker cannot reach its store ({exc.message}); try again later."
    )


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer whatever the handler (or an inner middleware) raises; see the module's doc."""
    try:
        return await handler(request)
    except ConnectionResetError:
        raise  # the client went away: nobody is left to answer
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return answer(exc, request)
    except Exception as exc:
        return answer(exc, request)
