"""The spec validator itself: it must pass conforming exchanges and flag broken ones."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
import pytest
from openapi_core import OpenAPI

from airbyte_fleet.simulator import FAULT_KINDS as SIMULATOR_FAULT_KINDS
from airbyte_fleet.simulator import FakeClock, JobScript
from conftest import SimFactory
from spec_files import spec_source
from spec_validation import (
    CONTROL_PREFIX,
    FAULT_KINDS,
    FAULT_STATUSES,
    KEPT_OPERATIONS,
    LOAD_SECONDS,
    SPECS_MISSING,
    VALID_RESPONSE_FAULTS,
    SpecValidationError,
    SpecValidator,
    assert_exchanges_valid,
    describe_exchange,
    get_validator,
)

if not spec_source().found:
    pytest.skip(SPECS_MISSING, allow_module_level=True)

CLOUD = "/v1"
OSS = "/api/public/v1"
PREFIXES = [CLOUD, OSS]

CONNECTION_ID = "e735894a-e773-4938-969f-45f53957b75b"
WORKSPACE_ID = "18dccc91-0ab1-4f72-9ed7-0b8fc27c5826"
SOURCE_ID = "95e66a59-8045-4307-9678-63bc3c9b8c93"
DESTINATION_ID = "e478de0d-a3a0-475c-b019-25f7dd29e281"
ERROR_ID = "0c0a2ad5-39b1-4f4f-a8a4-2d3c1b2e7f10"
BEARER = {"authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln"}
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class FakeExchange:
    """Same attributes as the simulator's Exchange."""

    method: str
    path: str
    route: str | None
    prefix: str = CLOUD
    query: str = ""
    request_headers: dict[str, str] = field(default_factory=lambda: dict(BEARER))
    request_body: bytes = b""
    status: int = 200
    response_headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    response_body: bytes = b""
    at: float = 0.0
    fault: str | None = None


def dump(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def job(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "jobId": 4711,
        "status": "running",
        "jobType": "sync",
        "startTime": "2023-03-25T01:30:50Z",
        "connectionId": CONNECTION_ID,
    }
    body.update(overrides)
    return body


def get_job(prefix: str = CLOUD, body: Any = None, **kwargs: Any) -> FakeExchange:
    exchange = FakeExchange(
        "GET",
        f"{prefix}/jobs/4711",
        "/jobs/{jobId}",
        prefix=prefix,
        response_body=dump(job() if body is None else body),
    )
    return replace(exchange, **kwargs)


def create_job(
    prefix: str = CLOUD, request: Any = None, status: int = 200, response: Any = None
) -> FakeExchange:
    return FakeExchange(
        "POST",
        f"{prefix}/jobs",
        "/jobs",
        prefix=prefix,
        request_headers={**BEARER, **JSON},
        request_body=dump(
            {"connectionId": CONNECTION_ID, "jobType": "sync"} if request is None else request
        ),
        status=status,
        response_body=dump(job(status="pending") if response is None else response),
    )


def token(
    body: bytes, content_type: str = "application/json", status: int = 200, response: Any = None
) -> FakeExchange:
    return FakeExchange(
        "POST",
        f"{OSS}/applications/token",
        "/applications/token",
        prefix=OSS,
        request_headers={"content-type": content_type},
        request_body=body,
        status=status,
        response_body=dump(
            {"access_token": "eyJ.e30.sig", "token_type": "Bearer", "expires_in": 900}
            if response is None
            else response
        ),
    )


def try_again_later(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": 409,
        "type": "https://reference.airbyte.com/reference/errors#try-again-later",
        "title": "try-again-later",
        "detail": "Please try again later.",
        "data": {"message": f"A sync is already running for: {CONNECTION_ID}"},
    }
    body.update(overrides)
    return body


@pytest.fixture(scope="module")
def validator() -> SpecValidator:
    return get_validator()


def assert_flags(validator: SpecValidator, exchange: FakeExchange, *needles: str) -> list[str]:
    problems = validator.validate(exchange)
    assert problems, f"expected a violation for {exchange}"
    # Match against the message only, not the "METHOD path?query -> status" label.
    text = "\n".join(problem.partition(" -> ")[2].partition(": ")[2] for problem in problems)
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text}"
    return problems


# ---------------------------------------------------------------- loading and caching


def test_get_validator_is_cached_for_the_session() -> None:
    first = get_validator()
    started = time.perf_counter()
    second = get_validator()
    elapsed = time.perf_counter() - started
    assert second is first
    assert elapsed < 0.01
    assert LOAD_SECONDS["get_validator"] < 10  # cold ~3 s, warm disk cache ~0.01 s


def test_pruned_spec_keeps_only_our_operations_and_passes_the_spec_check(
    validator: SpecValidator,
) -> None:
    sdk = validator.bundle.sdk
    assert set(sdk["paths"]) == set(KEPT_OPERATIONS)
    assert set(sdk["paths"]["/connections"]) == {"get"}
    assert set(sdk["components"]["securitySchemes"]) == {
        "bearerAuth",
        "basicAuth",
        "clientCredentials",
    }
    assert len(json.dumps(sdk)) < 100_000  # from 3.3 MB of YAML
    OpenAPI.from_dict(sdk)  # openapi-spec-validator accepts the pruned spec


# ---------------------------------------------------------------- JobResponse


@pytest.mark.parametrize("prefix", PREFIXES)
def test_valid_job_response_passes(validator: SpecValidator, prefix: str) -> None:
    assert validator.validate(get_job(prefix)) == []
    finished = job(
        status="succeeded",
        lastUpdatedAt="2023-03-25T01:35:50Z",
        duration="PT5M",
        bytesSynced=1024,
        rowsSynced=10,
    )
    assert validator.validate(get_job(prefix, finished)) == []
    cancel = replace(get_job(prefix, job(status="cancelled")), method="DELETE")
    assert validator.validate(cancel) == []


def test_job_response_missing_start_time_fails(validator: SpecValidator) -> None:
    body = job()
    del body["startTime"]
    assert_flags(validator, get_job(OSS, body), "'startTime' is a required property")


def test_job_id_as_string_fails(validator: SpecValidator) -> None:
    assert_flags(validator, get_job(CLOUD, job(jobId="4711")), "$.jobId", "not of type 'integer'")


@pytest.mark.parametrize("status", ["done", "RUNNING", "error"])
def test_unknown_job_status_from_simulator_fails(validator: SpecValidator, status: str) -> None:
    assert_flags(validator, get_job(CLOUD, job(status=status)), "$.status", "is not one of")


def test_capitalised_uuid_format_is_enforced(validator: SpecValidator) -> None:
    # JobResponse.connectionId is `format: UUID`, which openapi-schema-validator does not know.
    assert_flags(validator, get_job(CLOUD, job(connectionId="not-a-uuid")), "is not a 'UUID'")


def test_null_instead_of_an_absent_field_fails(validator: SpecValidator) -> None:
    assert_flags(validator, get_job(CLOUD, job(status="pending", duration=None)), "omit the field")


def test_property_the_spec_does_not_define_fails(validator: SpecValidator) -> None:
    assert_flags(validator, get_job(CLOUD, job(attempts=[])), "'attempts' was unexpected")


def test_wrong_response_content_type_fails(validator: SpecValidator) -> None:
    exchange = replace(get_job(), response_headers={"content-type": "text/html"})
    assert_flags(validator, exchange, "text/html")


# ---------------------------------------------------------------- requests


@pytest.mark.parametrize("prefix", PREFIXES)
def test_create_job_request_passes(validator: SpecValidator, prefix: str) -> None:
    assert validator.validate(create_job(prefix)) == []


def test_create_job_missing_job_type_fails(validator: SpecValidator) -> None:
    exchange = create_job(request={"connectionId": CONNECTION_ID})
    assert_flags(validator, exchange, "request:", "'jobType' is a required property")


def test_create_job_with_unknown_job_type_fails(validator: SpecValidator) -> None:
    exchange = create_job(request={"connectionId": CONNECTION_ID, "jobType": "resync"})
    assert_flags(validator, exchange, "request:", "$.jobType")


@pytest.mark.parametrize(
    "headers",
    [
        BEARER,
        {"authorization": "Basic " + base64.b64encode(b"airbyte:password").decode()},
    ],
    ids=["bearer", "basic"],
)
def test_bearer_or_basic_satisfies_security(
    validator: SpecValidator, headers: dict[str, str]
) -> None:
    assert validator.validate(replace(get_job(OSS), request_headers=headers)) == []


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Token abc"}, {"authorization": "Bearer"}, {"x-api-key": "abc"}],
    ids=["none", "unknown-scheme", "empty-bearer", "api-key-header"],
)
def test_request_without_accepted_authorization_fails(
    validator: SpecValidator, headers: dict[str, str]
) -> None:
    assert_flags(validator, replace(get_job(CLOUD), request_headers=headers), "request:")


def test_health_needs_no_authorization(validator: SpecValidator) -> None:
    for prefix in ["", CLOUD, OSS]:
        exchange = FakeExchange(
            "GET",
            f"{prefix}/health",
            "/health",
            prefix=prefix,
            request_headers={},
            response_headers={"content-type": "text/plain"},
            response_body=b"Successful operation",
        )
        assert validator.validate(exchange) == []


def list_jobs(query: str, prefix: str = CLOUD) -> FakeExchange:
    return FakeExchange(
        "GET",
        f"{prefix}/jobs",
        "/jobs",
        prefix=prefix,
        query=query,
        response_body=dump({"next": "", "previous": "", "data": [job()]}),
    )


def test_repeated_array_query_parameters_pass(validator: SpecValidator) -> None:
    query = (
        f"workspaceIds={WORKSPACE_ID}&workspaceIds={CONNECTION_ID}&status=running&jobType=sync"
        "&limit=100&offset=0&orderBy=updatedAt%7CDESC&updatedAtStart=2023-06-22T16%3A15%3A00Z"
    )
    assert validator.validate(list_jobs(query, OSS)) == []


def test_comma_joined_array_query_parameter_is_flagged(validator: SpecValidator) -> None:
    exchange = list_jobs(f"workspaceIds={WORKSPACE_ID},{CONNECTION_ID}")
    assert_flags(validator, exchange, "comma-joined", "workspaceIds")


@pytest.mark.parametrize(
    ("query", "needle"),
    [
        ("limit=101", "maximum of 100"),
        ("limit=0", "minimum of 1"),
        ("status=done", "Invalid query parameter: status"),
        ("createdAtStart=1687450500000", "date-time"),
        ("workspaceId=" + WORKSPACE_ID, "not defined by the spec"),
        ("limit=5&limit=6", "sent 2 times"),
        ("connectionId=abc", "UUID"),
    ],
)
def test_bad_query_parameters_are_flagged(
    validator: SpecValidator, query: str, needle: str
) -> None:
    assert_flags(validator, list_jobs(query), needle)


def test_non_json_boolean_query_value_is_flagged(validator: SpecValidator) -> None:
    exchange = FakeExchange(
        "GET",
        f"{CLOUD}/workspaces",
        "/workspaces",
        query="includeDeleted=yes",
        response_body=dump({"data": []}),
    )
    assert_flags(validator, exchange, "must be 'true' or 'false'")


def test_path_parameter_is_checked(validator: SpecValidator) -> None:
    exchange = FakeExchange(
        "GET", f"{OSS}/jobs/abc", "/jobs/{jobId}", prefix=OSS, response_body=dump(job())
    )
    assert_flags(validator, exchange, "Path parameter error: jobId")


# ---------------------------------------------------------------- token endpoint


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (dump({"client_id": "id", "client_secret": "secret"}), "application/json"),
        (
            dump({"client_id": "id", "client_secret": "s", "grant-type": "client_credentials"}),
            "application/json",
        ),
        (
            dump({"client_id": "id", "client_secret": "s", "grant_type": "client_credentials"}),
            "application/json; charset=utf-8",
        ),
        (
            b"grant_type=client_credentials&client_id=id&client_secret=secret",
            "application/x-www-form-urlencoded",
        ),
    ],
    ids=["json-no-grant", "json-grant-hyphen", "json-grant-underscore", "form-sdk"],
)
def test_token_requests_pass(validator: SpecValidator, body: bytes, content_type: str) -> None:
    assert validator.validate(token(body, content_type)) == []


@pytest.mark.parametrize(
    ("body", "content_type", "needle"),
    [
        (dump({"client_id": "id"}), "application/json", "'client_secret' is a required"),
        (dump({"client_id": "id", "client_secret": 7}), "application/json", "not of type"),
        (
            dump({"client_id": "i", "client_secret": "s", "grant_type": "password"}),
            "application/json",
            "client_credentials",
        ),
        (b"client_id=id&client_secret=s", "text/plain", "content type"),
        (b"{not json", "application/json", "does not parse"),
    ],
)
def test_bad_token_requests_fail(
    validator: SpecValidator, body: bytes, content_type: str, needle: str
) -> None:
    assert_flags(validator, token(body, content_type), "request:", needle)


def test_token_response_missing_access_token_fails(validator: SpecValidator) -> None:
    exchange = token(
        dump({"client_id": "id", "client_secret": "secret"}),
        response={"token_type": "Bearer", "expires_in": 900},
    )
    assert_flags(validator, exchange, "response:", "'access_token' is a required property")


def test_token_response_with_lowercase_token_type_fails(validator: SpecValidator) -> None:
    exchange = token(
        dump({"client_id": "id", "client_secret": "secret"}),
        response={"access_token": "t", "token_type": "bearer", "expires_in": 900},
    )
    assert_flags(validator, exchange, "$.token_type")


def test_token_error_bodies(validator: SpecValidator) -> None:
    creds = dump({"client_id": "id", "client_secret": "wrong"})
    # Cloud/OIDC: 401 {"errorId"}; OSS simple mode: 400 KnownExceptionInfo.
    assert validator.validate(token(creds, status=401, response={"errorId": ERROR_ID})) == []
    known = {"message": "Invalid client id or token", "exceptionClassName": "BadRequestException"}
    assert validator.validate(token(creds, status=400, response=known)) == []
    assert_flags(validator, token(creds, status=401, response={"error": "nope"}), "errorId")


# ---------------------------------------------------------------- error bodies


def test_409_try_again_later_problem_passes(validator: SpecValidator) -> None:
    assert validator.validate(create_job(status=409, response=try_again_later())) == []
    state_conflict = {
        "status": 409,
        "type": "https://reference.airbyte.com/reference/errors#409-state-conflict",
        "title": "state-conflict",
        "detail": "State conflict",
        "data": {"message": "Could not fulfill request"},
    }
    assert validator.validate(create_job(OSS, status=409, response=state_conflict)) == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (try_again_later(title="conflict"), "title must be 'try-again-later'"),
        (try_again_later(data={}), "'message' is a required property"),
        (try_again_later(status=500), "status must be 409"),
        ({"message": "A sync is already running"}, "'type' is a required property"),
        (try_again_later(documentationUrl=None), "omit the field"),
        (try_again_later(extra=1), "not defined for problems"),
    ],
    ids=["title", "data", "status", "not-a-problem", "null-field", "extra-field"],
)
def test_malformed_409_problem_fails(validator: SpecValidator, body: Any, needle: str) -> None:
    assert_flags(validator, create_job(status=409, response=body), "response:", needle)


def test_documented_404_without_content_allows_empty_or_problem(validator: SpecValidator) -> None:
    exchange = FakeExchange(
        "GET",
        f"{OSS}/connections/{CONNECTION_ID}",
        "/connections/{connectionId}",
        prefix=OSS,
        status=404,
    )
    assert validator.validate(exchange) == []
    problem = {
        "status": 404,
        "type": "https://reference.airbyte.com/reference/errors#resource-not-found",
        "title": "resource-not-found",
        "detail": "The requested resource could not be found.",
        "data": {"resourceType": "connection", "resourceId": CONNECTION_ID},
    }
    assert validator.validate(replace(exchange, response_body=dump(problem))) == []
    wrong = replace(exchange, response_body=dump({**problem, "data": {"resourceType": "x"}}))
    assert_flags(validator, wrong, "resourceId")


def test_rate_limit_and_server_errors(validator: SpecValidator) -> None:
    rate_limited = get_job(status=429, body={"message": "You are being rate limited."})
    assert validator.validate(rate_limited) == []
    assert_flags(validator, replace(rate_limited, response_body=dump({"message": "slow"})), "429")
    assert validator.validate(get_job(status=500, body={"errorId": ERROR_ID})) == []
    assert validator.validate(get_job(status=503, body={"errorId": ERROR_ID})) == []
    assert_flags(validator, get_job(status=502, body={"errorId": "x"}), "uuid")
    assert_flags(validator, get_job(status=500, body=None, response_body=b""), "empty body")


def test_401_problem_and_undocumented_status(validator: SpecValidator) -> None:
    invalid_key = {
        "status": 401,
        "type": "https://reference.airbyte.com/reference/errors#invalid-api-key",
        "title": "invalid-api-key",
        "detail": "The API key in the Authorization header is invalid.",
    }
    assert validator.validate(get_job(status=401, body=invalid_key)) == []
    assert_flags(validator, get_job(status=418, body={}), "neither documented")


# ---------------------------------------------------------------- lists


def connection() -> dict[str, Any]:
    """A ConnectionResponse with exactly the schema's required fields."""
    return {
        "connectionId": CONNECTION_ID,
        "name": "Postgres-to-Bigquery",
        "sourceId": SOURCE_ID,
        "destinationId": DESTINATION_ID,
        "workspaceId": WORKSPACE_ID,
        "status": "active",
        "schedule": {"scheduleType": "manual"},
        "configurations": {},
        "createdAt": 1700000000,
        "tags": [],
    }


def test_valid_connections_page_passes(validator: SpecValidator) -> None:
    schema = validator.bundle.sdk["components"]["schemas"]["ConnectionResponse"]
    assert set(connection()) == set(schema["required"])
    page = {
        "next": f"http://localhost:8001/api/public/v1/connections?workspaceIds={WORKSPACE_ID}"
        "&includeDeleted=false&limit=2&offset=2",
        "previous": "",
        "data": [connection(), {**connection(), "status": "inactive", "name": "second"}],
    }
    exchange = FakeExchange(
        "GET",
        f"{OSS}/connections",
        "/connections",
        prefix=OSS,
        query=f"workspaceIds={WORKSPACE_ID}&includeDeleted=false&limit=2&offset=0",
        response_body=dump(page),
    )
    assert validator.validate(exchange) == []
    broken = {"data": [{**connection(), "status": "paused"}]}
    assert_flags(validator, replace(exchange, response_body=dump(broken)), "$.data[0].status")


def test_valid_workspaces_page_passes(validator: SpecValidator) -> None:
    workspace = {
        "workspaceId": WORKSPACE_ID,
        "name": "Acme",
        "dataResidency": "auto",
        "notifications": {"failure": {"email": {"enabled": True}}},
    }
    exchange = FakeExchange(
        "GET", f"{CLOUD}/workspaces", "/workspaces", response_body=dump({"data": [workspace]})
    )
    assert validator.validate(exchange) == []


# ---------------------------------------------------------------- routing and bookkeeping


def test_dropped_exchange_only_checks_the_request(validator: SpecValidator) -> None:
    dropped = get_job(OSS, status=0, response_body=b"", response_headers={})
    assert validator.validate(dropped) == []
    garbage = replace(dropped, response_body=b"<html>", response_headers={"x": "y"})
    assert validator.validate(garbage) == []
    bad_request = replace(dropped, request_headers={})
    problems = assert_flags(validator, bad_request, "request:")
    assert all("response:" not in problem for problem in problems)
    assert all(" -> dropped: request: " in problem for problem in problems)


def test_unknown_route_is_flagged_but_control_api_is_not(validator: SpecValidator) -> None:
    assert_flags(validator, FakeExchange("GET", f"{CLOUD}/jobz", None), "unknown route")
    control = FakeExchange("POST", f"{CONTROL_PREFIX}faults", None, prefix="", request_headers={})
    assert validator.validate(control) == []


def test_probe_of_a_spec_path_the_simulated_layout_does_not_serve(
    validator: SpecValidator,
) -> None:
    # A client probing /api/public/v1/health on an old standalone server (only /v1 and /health).
    probe = FakeExchange(
        "GET",
        f"{OSS}/health",
        None,
        prefix="",
        request_headers={},
        status=404,
        response_headers={"content-type": "application/json"},
        response_body=b'{"message":"Page Not Found"}',
    )
    assert validator.validate(probe) == []
    # The request is still checked ...
    bad_probe = replace(probe, path=f"{OSS}/jobs", query="limit=500")
    assert_flags(validator, bad_probe, "maximum of 100")
    # ... and a spec path answered 200 without a recorded route is a simulator bug.
    assert_flags(validator, replace(probe, status=200), "has no route")


def test_require_auth_false_accepts_anonymous_requests_only(validator: SpecValidator) -> None:
    anonymous = replace(get_job(OSS), request_headers={})
    assert validator.validate(anonymous) != []
    assert validator.validate(anonymous, require_auth=False) == []
    assert validator.validate_all([anonymous], require_auth=False) == []
    broken = replace(anonymous, request_headers={"authorization": "Bearer"})
    assert validator.validate(broken, require_auth=False) != []
    bad_query = replace(anonymous, path=f"{OSS}/jobs", route="/jobs", query="limit=0")
    assert_flags(validator, bad_query, "minimum of 1")


def test_operation_outside_the_validated_subset_is_flagged(validator: SpecValidator) -> None:
    exchange = FakeExchange(
        "PATCH", f"{CLOUD}/connections/{CONNECTION_ID}", "/connections/{connectionId}"
    )
    assert_flags(validator, exchange, "not one the validator covers")


@pytest.mark.parametrize(
    ("path", "prefix", "needle"),
    [
        ("/jobs/4711", "", "prefix ''"),
        ("/v2/jobs/4711", "/v2", "prefix '/v2'"),
        ("/v1/jobs/4711/", CLOUD, "does not match route"),
    ],
)
def test_prefix_and_path_must_fit_the_route(
    validator: SpecValidator, path: str, prefix: str, needle: str
) -> None:
    exchange = replace(get_job(), path=path, prefix=prefix)
    assert_flags(validator, exchange, needle)


def test_validate_all_labels_exchanges_and_assert_helper_raises() -> None:
    exchanges = [get_job(), get_job(CLOUD, job(jobId="x")), create_job()]
    problems = get_validator().validate_all(exchanges)
    assert len(problems) == 1
    assert problems[0].startswith("#1 GET /v1/jobs/4711 -> 200: response:")
    with pytest.raises(SpecValidationError) as info:
        assert_exchanges_valid(exchanges)
    assert info.value.problems == problems
    assert_exchanges_valid([get_job(), create_job()])


# ---------------------------------------------------------------- deliberate faults

GARBLED = b'{"jobId":4711,"status":"runn'

#: One broken-on-purpose exchange per fault kind whose response is not checked.
FAULTED: dict[str, FakeExchange] = {
    "429": get_job(status=429, body={"message": "slow down", "retryIn": 3}),
    "5xx": get_job(status=502, body=None, response_body=b"<html>Bad Gateway</html>"),
    "token_failure": token(
        dump({"client_id": "id", "client_secret": "secret"}), status=502, response=[]
    ),
    "reset": get_job(status=0, body=None, response_body=b""),
    "down": get_job(status=0, body=None, response_body=b"", response_headers={}),
    "malformed": get_job(body=None, response_body=GARBLED),
    "odd_status": get_job(body=job(status="paused_by_admin")),
}


def test_fault_kinds_match_the_simulator() -> None:
    assert set(FAULT_KINDS) == set(SIMULATOR_FAULT_KINDS)
    assert set(FAULT_STATUSES) == set(FAULT_KINDS)
    assert set(VALID_RESPONSE_FAULTS) == {"slow_post"}
    assert set(FAULTED) == FAULT_KINDS - VALID_RESPONSE_FAULTS


@pytest.mark.parametrize("fault", sorted(FAULTED))
def test_faulted_exchange_has_only_its_request_checked(
    validator: SpecValidator, fault: str
) -> None:
    exchange = replace(FAULTED[fault], fault=fault)
    assert validator.validate(exchange) == []
    # The label is part of the memo key: the same exchange unlabelled is checked in full
    # (a dropped one has no response to check either way).
    unlabelled = validator.validate(replace(exchange, fault=None))
    assert (unlabelled == []) is (exchange.status == 0)
    # The request is still checked as strictly as ever.
    problems = assert_flags(validator, replace(exchange, request_headers={}), "request:")
    assert all("response:" not in problem for problem in problems)


def test_slow_post_response_is_still_checked(validator: SpecValidator) -> None:
    slow = replace(create_job(), fault="slow_post")
    assert validator.validate(slow) == []
    broken = replace(slow, response_body=dump(job(status="paused_by_admin")))
    assert_flags(validator, broken, "response:", "$.status", "is not one of")
    assert_flags(validator, replace(slow, response_body=GARBLED), "response:")


def test_unknown_fault_label_is_flagged_and_the_response_checked(
    validator: SpecValidator,
) -> None:
    typo = replace(FAULTED["malformed"], fault="malformd")
    problems = assert_flags(validator, typo, "unknown fault label 'malformd'", "response:")
    assert len(problems) == 2


@pytest.mark.parametrize(
    ("fault", "status", "needle"),
    [
        ("429", 200, "a '429' fault cannot be answered 200"),
        ("reset", 200, "a 'reset' fault cannot be answered 200"),
        ("malformed", 0, "a 'malformed' fault cannot be answered dropped"),
        ("token_failure", 500, "cannot be answered 500"),
        ("5xx", 302, "cannot be answered 302"),
    ],
)
def test_fault_label_must_fit_the_status(
    validator: SpecValidator, fault: str, status: int, needle: str
) -> None:
    exchange = replace(get_job(), fault=fault, status=status)
    assert_flags(validator, exchange, needle)


def test_fault_shows_in_the_exchange_label(validator: SpecValidator) -> None:
    exchange = replace(FAULTED["malformed"], fault="malformed", request_headers={})
    problems = validator.validate(exchange)
    assert problems
    assert all(p.startswith("GET /v1/jobs/4711 -> 200 (fault malformed): ") for p in problems)
    assert describe_exchange(get_job()) == "GET /v1/jobs/4711 -> 200"


@pytest.mark.anyio
async def test_simulator_faults_pass_only_with_their_labels(make_sim: SimFactory) -> None:
    clock = FakeClock()
    sim, root = await make_sim(clock=clock, token_failures=1, slow_post_seconds=0.001)
    cid = sim.connections[0]["connectionId"]
    sim.script(cid, JobScript(seconds=10, pending_seconds=0, odd_status="paused_by_admin"))
    headers = {"Authorization": f"Bearer {sim.issue_token()}"}
    api = f"{root}{OSS}"
    async with aiohttp.ClientSession(headers=headers) as session:
        creds = {"client_id": "sim-client", "client_secret": "sim-secret"}
        async with session.post(f"{api}/applications/token", json=creds) as reply:
            assert reply.status == 502
        async with session.post(f"{api}/jobs", json={"connectionId": cid, "jobType": "sync"}) as r:
            job_id = (await r.json())["jobId"]
        async with session.get(f"{api}/jobs/{job_id}") as reply:
            assert (await reply.json())["status"] == "paused_by_admin"
        for fault in ("malformed_rate", "rate_429", "rate_5xx"):
            sim.faults.update({fault: 1.0})
            async with session.get(f"{api}/jobs") as reply:
                assert reply.status in (200, 429, 503)
            sim.faults.update({fault: 0.0})
        sim.faults.reset_rate = 1.0
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(f"{api}/workspaces"):
                pass
        sim.faults.reset_rate = 0.0
    labels = [e.fault for e in sim.exchanges]
    assert labels[:6] == ["token_failure", "odd_status", "odd_status", "malformed", "429", "5xx"]
    assert set(labels[6:]) == {"reset"}
    validator = get_validator()
    assert validator.validate_all(sim.exchanges) == []
    unlabelled = validator.validate_all([replace(e, fault=None) for e in sim.exchanges])
    # Without labels the garbled body and the odd statuses are violations; the 429, the
    # errorId 5xx/502 and the dropped connection are shapes the real server also produces.
    assert [p.partition(" ")[0] for p in unlabelled] == ["#1", "#2", "#3"]
    assert "paused_by_admin" in unlabelled[0]
    assert unlabelled[2].startswith(f"#3 GET {OSS}/jobs -> 200: response: ")
    assert "deserialize" in unlabelled[2]
