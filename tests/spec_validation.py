"""Check recorded HTTP exchanges against the official Airbyte OpenAPI specs.

Every request our client sends to the simulator and every response the simulator gives must
conform to Airbyte's spec files, found by ``spec_files`` (``../shared/airbyte-api`` beside the
checkout, ``$AIRBYTE_FLEET_SPEC_DIR`` or the pinned upstream files; see ``SOURCE.txt`` there and
``../shared/research/airbyte-api.md`` §3-§6). Tests record exchanges and call
:func:`get_validator` at teardown; any message returned by :meth:`SpecValidator.validate_all`
is a violation.

Sources of truth, by route:

* ``/health``, ``/jobs``, ``/jobs/{jobId}``, ``GET /connections``, ``GET /connections/{id}``,
  ``GET /workspaces``: ``public-api-v1.current.api_sdk.yaml`` (what the official SDK is generated
  from), validated with openapi-core. The file is 3.3 MB and openapi-core's own spec check rejects
  it (some connector config schemas are invalid), so it is pruned to the operations above plus the
  transitive closure of the ``#/components/...`` they reference, plus the security schemes.
* ``/applications/token``: not in the _sdk file; checked by hand against the
  ``ApplicationTokenRequestWithGrant`` and ``PublicAccessTokenResponse`` schemas of
  ``public-api-v1.current.api.yaml`` (that file is not loaded as a whole: it has a dangling $ref).
* Error statuses the specs do not document (401, 409, 422, 429, 5xx, ...): the problem schemas in
  ``api-problems.current.yaml``, ``{"errorId": "<uuid>"}`` and the load-shedding 429 body, as the
  research describes the real server's behaviour.

Deliberate faults: an exchange whose ``fault`` names one (see FAULT_KINDS) has only its request
checked, because its response is broken or undocumented on purpose (a garbled body, a job status
outside the enum, a dropped connection). ``slow_post`` is the exception: the answer comes late
but is a real one, so it is checked like any other. An unknown fault label is itself a violation
(a typo must not switch response checks off), and the response is then checked as usual.

Pruned specs are cached as JSON under the system temp dir, keyed by the spec files' and this
module's mtime and size, so only the first session after a change pays the YAML parse.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl, urlsplit

import pytest
import yaml
from jsonschema_path import SchemaPath
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.security.factories import SecurityProviderFactory
from openapi_core.security.providers import HttpProvider
from openapi_core.validation.request.exceptions import SecurityValidationError
from openapi_core.validation.request.validators import (
    V31RequestBodyValidator,
    V31RequestParametersValidator,
    V31RequestValidator,
)
from openapi_core.validation.response.validators import V31ResponseValidator
from openapi_core.validation.schemas import oas31_schema_validators_factory
from openapi_core.validation.schemas.datatypes import FormatValidatorsDict
from openapi_core.validation.schemas.factories import DialectSchemaValidatorsFactory
from openapi_core.validation.schemas.validators import SchemaValidator
from openapi_schema_validator import OAS30Validator, OAS31Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

from spec_files import spec_source

__all__ = [
    "CONTROL_PREFIX",
    "FAULT_KINDS",
    "FAULT_STATUSES",
    "KEPT_OPERATIONS",
    "LOAD_SECONDS",
    "SPECS_MISSING",
    "TOKEN_ROUTE",
    "VALID_RESPONSE_FAULTS",
    "ExchangeLike",
    "SpecBundle",
    "SpecValidationError",
    "SpecValidator",
    "assert_exchanges_valid",
    "build_spec_bundle",
    "describe_exchange",
    "get_validator",
    "load_spec_bundle",
]

# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

#: The skip reason of a test that needs the spec files; the full how-to is printed once, at the end.
SPECS_MISSING: Final = (
    "needs Airbyte's OpenAPI specs (the session's last line says how to get them)"
)
CACHE_DIR_ENV: Final = "AIRBYTE_FLEET_SPEC_CACHE_DIR"

SDK_SPEC_FILE: Final = "public-api-v1.current.api_sdk.yaml"
API_SPEC_FILE: Final = "public-api-v1.current.api.yaml"
PROBLEMS_SPEC_FILE: Final = "api-problems.current.yaml"
CONFIG_SPEC_FILE: Final = "config-api-internal.current.config.yaml"

#: Bump when the shape of the cached bundle changes (the module's mtime is in the key anyway).
CACHE_FORMAT: Final = 1

#: Operations of the _sdk spec that the simulator serves and this module validates.
KEPT_OPERATIONS: Final[Mapping[str, frozenset[str]]] = {
    "/health": frozenset({"get"}),
    "/jobs": frozenset({"get", "post"}),
    "/jobs/{jobId}": frozenset({"get", "delete"}),
    "/connections": frozenset({"get"}),
    "/connections/{connectionId}": frozenset({"get"}),
    "/workspaces": frozenset({"get"}),
}

TOKEN_ROUTE: Final = "/applications/token"
TOKEN_REQUEST_SCHEMA: Final = "ApplicationTokenRequestWithGrant"
TOKEN_RESPONSE_SCHEMA: Final = "PublicAccessTokenResponse"
KNOWN_EXCEPTION_INFO_SCHEMA: Final = "KnownExceptionInfo"

#: Requests under this path belong to the simulator's own control API, not to Airbyte's.
CONTROL_PREFIX: Final = "/_simulator/"
#: Cloud/standalone style and self-managed style; ``""`` (the old standalone server's root) is
#: accepted only for the routes in ROOT_PREFIX_ROUTES.
API_PREFIXES: Final = ("/v1", "/api/public/v1")
ROOT_PREFIX_ROUTES: Final = frozenset({"/health"})

#: Problem types the real server sends per status (research §6). Several means "any of them".
PROBLEMS_BY_STATUS: Final[Mapping[int, tuple[str, ...]]] = {
    400: ("BadRequestProblemResponse",),
    401: ("InvalidApiKeyProblemResponse",),
    403: ("ForbiddenProblemResponse",),
    404: ("ResourceNotFoundProblemResponse",),
    409: ("TryAgainLaterConflictProblemResponse", "StateConflictProblemResponse"),
    422: ("UnprocessableEntityProblemResponse",),
    500: ("UnexpectedProblemResponse",),
    503: ("ServiceUnavailableProblemResponse",),
}
PROBLEM_MEDIA_TYPES: Final = frozenset({"application/json", "application/problem+json"})
RATE_LIMITED_MESSAGE: Final = "You are being rate limited."

#: ``Exchange.fault`` values the simulator sets (kept in step with its FAULT_KINDS by a test),
#: each with the statuses such an answer can have (0: the connection was dropped).
FAULT_STATUSES: Final[Mapping[str, frozenset[int]]] = {
    "429": frozenset({429}),
    "5xx": frozenset(range(400, 600)),  # the configurable error_status may be any 4xx/5xx
    "token_failure": frozenset({502}),
    "reset": frozenset({0}),
    "down": frozenset({0}),
    "malformed": frozenset({200}),
    "odd_status": frozenset({200}),
    "slow_post": frozenset({200}),
}
FAULT_KINDS: Final = frozenset(FAULT_STATUSES)
#: Faults whose response is still a complete, spec-conforming answer.
VALID_RESPONSE_FAULTS: Final = frozenset({"slow_post"})

_HTTP_METHODS: Final = frozenset(
    {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
)
_UUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_MAX_MESSAGE: Final = 400

# --------------------------------------------------------------------------------------------
# The exchange shape (structural: the simulator's Exchange class is not imported)
# --------------------------------------------------------------------------------------------


class ExchangeLike(Protocol):
    """One recorded HTTP exchange, as the simulator records it (read-only view)."""

    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def route(self) -> str | None: ...
    @property
    def prefix(self) -> str: ...
    @property
    def request_headers(self) -> Mapping[str, str]: ...
    @property
    def request_body(self) -> bytes: ...
    @property
    def status(self) -> int: ...
    @property
    def response_headers(self) -> Mapping[str, str]: ...
    @property
    def response_body(self) -> bytes: ...
    @property
    def at(self) -> float: ...
    @property
    def fault(self) -> str | None: ...


class SpecValidationError(AssertionError):
    """Raised by :func:`assert_exchanges_valid`; ``problems`` holds every message."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} OpenAPI violation(s):\n" + "\n".join(self.problems))


# --------------------------------------------------------------------------------------------
# Pruning and caching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecBundle:
    """The small JSON-able subset of the spec files that the validator needs."""

    #: The _sdk spec reduced to KEPT_OPERATIONS, their component closure and security.
    sdk: dict[str, Any]
    #: ``POST /applications/token`` operation object from api.yaml.
    token_operation: dict[str, Any]
    #: ``{"components": {"schemas": ...}}`` closures, per source file.
    api_components: dict[str, Any]
    problems_components: dict[str, Any]
    config_components: dict[str, Any]
    #: Where it came from: "built" or the cache file path.
    origin: str = field(default="built", compare=False)


def _iter_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _iter_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _iter_refs(item)


def _component_closure(doc: Mapping[str, Any], roots: Iterable[Any]) -> dict[str, Any]:
    """Return ``{"components": {...}}`` with every component transitively referenced."""
    components: dict[str, dict[str, Any]] = {}
    pending = [ref for root in roots for ref in _iter_refs(root)]
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        if not ref.startswith("#/components/"):
            raise ValueError(f"unsupported $ref {ref!r} (only local #/components/ refs)")
        section, name = ref.removeprefix("#/components/").split("/", 1)
        try:
            target = doc["components"][section][name]
        except KeyError as exc:
            raise ValueError(f"dangling $ref {ref!r}") from exc
        components.setdefault(section, {})[name] = target
        pending.extend(_iter_refs(target))
    return {"components": components}


def _mark_composition_wrappers_open(schemas: dict[str, Any]) -> None:
    """Let openapi-core's "forbid unspecified additionalProperties" policy skip wrappers.

    A schema such as ``MapperConfiguration`` is ``{type: object, oneOf: [...]}`` with no
    ``properties``; under the strict policy it would reject every property its alternatives
    define. ``additionalProperties: true`` is the JSON Schema default, so adding it changes
    nothing in the spec's meaning; it only opts these wrappers out of our extra strictness
    (the alternatives themselves stay strict).
    """

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" not in node
                and "additionalProperties" not in node
                and any(key in node for key in ("oneOf", "anyOf", "allOf"))
            ):
                node["additionalProperties"] = True
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(schemas)


def _load_yaml(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as handle:
        data = yaml.load(handle, Loader=loader)  # a safe loader (CSafeLoader or SafeLoader)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return data


def _prune_sdk(doc: Mapping[str, Any]) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route, methods in KEPT_OPERATIONS.items():
        item = doc["paths"][route]
        missing = methods - item.keys()
        if missing:
            raise ValueError(f"{SDK_SPEC_FILE} lacks {sorted(missing)} on {route}")
        paths[route] = {
            key: value for key, value in item.items() if key in methods or key not in _HTTP_METHODS
        }
    components = _component_closure(doc, [paths])["components"]
    components["securitySchemes"] = doc["components"]["securitySchemes"]
    pruned: dict[str, Any] = {
        key: doc[key] for key in ("openapi", "info", "jsonSchemaDialect", "servers") if key in doc
    }
    pruned["paths"] = paths
    pruned["components"] = components
    pruned["security"] = doc.get("security", [])
    # Deep copy (JSON round trip) before editing: the parsed nodes are shared.
    pruned = json.loads(json.dumps(pruned))
    _mark_composition_wrappers_open(pruned["components"].get("schemas", {}))
    return pruned


def spec_dir() -> Path:
    """The folder of spec files; the calling test is skipped when there is none (see spec_files)."""
    source = spec_source()
    if source.directory is None:
        pytest.skip(SPECS_MISSING)
    return source.directory


def _source_files(directory: Path) -> list[Path]:
    return [
        directory / name
        for name in (SDK_SPEC_FILE, API_SPEC_FILE, PROBLEMS_SPEC_FILE, CONFIG_SPEC_FILE)
    ]


def build_spec_bundle(directory: Path | None = None) -> SpecBundle:
    """Parse the YAML specs (slow: ~2 s) and extract what the validator needs."""
    directory = directory or spec_dir()
    sdk_path, api_path, problems_path, config_path = _source_files(directory)

    sdk = _prune_sdk(_load_yaml(sdk_path))

    api = _load_yaml(api_path)
    token_operation = api["paths"][TOKEN_ROUTE]["post"]
    api_components = _component_closure(
        api,
        [
            token_operation,
            {"$ref": f"#/components/schemas/{TOKEN_REQUEST_SCHEMA}"},
            {"$ref": f"#/components/schemas/{TOKEN_RESPONSE_SCHEMA}"},
        ],
    )

    problems = _load_yaml(problems_path)
    problem_names = sorted({name for names in PROBLEMS_BY_STATUS.values() for name in names})
    problems_components = _component_closure(
        problems,
        [{"$ref": f"#/components/schemas/{name}"} for name in problem_names]
        + [{"$ref": "#/components/schemas/BaseProblemFields"}],
    )

    config = _load_yaml(config_path)
    config_components = _component_closure(
        config, [{"$ref": f"#/components/schemas/{KNOWN_EXCEPTION_INFO_SCHEMA}"}]
    )

    return SpecBundle(
        sdk=sdk,
        token_operation=json.loads(json.dumps(token_operation)),
        api_components=json.loads(json.dumps(api_components)),
        problems_components=json.loads(json.dumps(problems_components)),
        config_components=json.loads(json.dumps(config_components)),
    )


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV)
    return Path(configured) if configured else Path(tempfile.gettempdir()) / "airbyte-fleet-spec"


def _cache_key(directory: Path) -> str:
    digest = hashlib.sha256(f"format={CACHE_FORMAT}".encode())
    for path in [*_source_files(directory), Path(__file__)]:
        stat = path.stat()
        digest.update(f"|{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}".encode())
    return digest.hexdigest()[:32]


def _read_cache(path: Path) -> SpecBundle | None:
    try:
        data = json.loads(path.read_bytes())
        return SpecBundle(
            sdk=data["sdk"],
            token_operation=data["token_operation"],
            api_components=data["api_components"],
            problems_components=data["problems_components"],
            config_components=data["config_components"],
            origin=str(path),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_cache(path: Path, bundle: SpecBundle) -> None:
    payload = {
        "sdk": bundle.sdk,
        "token_operation": bundle.token_operation,
        "api_components": bundle.api_components,
        "problems_components": bundle.problems_components,
        "config_components": bundle.config_components,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Atomic publish: parallel sessions (xdist workers) may race on the same key.
        fd, tmp_name = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, separators=(",", ":"))
        os.replace(tmp_name, path)
    except OSError:
        pass  # caching is an optimisation only


def load_spec_bundle(
    directory: Path | None = None, *, use_cache: bool = True
) -> tuple[SpecBundle, bool]:
    """Return ``(bundle, from_cache)``. A cache entry only exists for a bundle that passed
    openapi-core's spec validation, so callers may skip that check when ``from_cache``."""
    directory = directory or spec_dir()
    if use_cache:
        cached = _read_cache(cache_dir() / f"{_cache_key(directory)}.json")
        if cached is not None:
            return cached, True
    return build_spec_bundle(directory), False


# --------------------------------------------------------------------------------------------
# openapi-core adapters
# --------------------------------------------------------------------------------------------


@dataclass
class _CoreRequest:
    """Implements ``openapi_core.protocols.Request``."""

    host_url: str
    path: str
    method: str
    parameters: RequestParameters
    content_type: str
    body: bytes | None


@dataclass
class _CoreResponse:
    """Implements ``openapi_core.protocols.Response``."""

    status_code: int
    data: bytes | None
    headers: Headers
    content_type: str


class _SecurityProviderFactory(SecurityProviderFactory):
    """openapi-core treats oauth2 schemes as "unsupported" and lets every request pass (with a
    warning). The _sdk spec lists ``clientCredentials`` as one alternative of the top-level
    security, which would make the whole check vacuous. A client-credentials access token is
    sent as ``Authorization: Bearer`` (RFC 6750), so check oauth2 exactly like bearer."""

    _BEARER = SchemaPath.from_dict({"type": "http", "scheme": "bearer"})

    def create(self, scheme: SchemaPath) -> Any:
        if (scheme / "type").read_str() == "oauth2":
            return HttpProvider(self._BEARER)
        return super().create(scheme)


class _CachingSchemaValidatorsFactory(DialectSchemaValidatorsFactory):
    """openapi-core builds a fresh jsonschema validator (deep-copying the format checker and
    re-resolving refs) for every schema on every call: ~7 ms per exchange. The validators are
    stateless, so build each once per (schema location, options): ~1.5 ms per exchange."""

    def __init__(self) -> None:
        base = oas31_schema_validators_factory
        super().__init__(
            base.schema_validator_cls,
            base.default_jsonschema_dialect_id,
            format_checker=base.format_checker,
        )
        self._cache: dict[tuple[object, ...], SchemaValidator] = {}

    def create(
        self,
        spec: SchemaPath,
        schema: SchemaPath,
        format_validators: FormatValidatorsDict | None = None,
        extra_format_validators: FormatValidatorsDict | None = None,
        forbid_unspecified_additional_properties: bool = False,
        enforce_properties_required: bool = False,
    ) -> SchemaValidator:
        key = (
            tuple(schema.parts),
            id(format_validators),
            id(extra_format_validators),
            forbid_unspecified_additional_properties,
            enforce_properties_required,
        )
        validator = self._cache.get(key)
        if validator is None:
            validator = super().create(
                spec,
                schema,
                format_validators,
                extra_format_validators,
                forbid_unspecified_additional_properties,
                enforce_properties_required,
            )
            self._cache[key] = validator
        return validator


def _is_uuid(value: Any) -> bool:
    return not isinstance(value, str) or _UUID_RE.fullmatch(value) is not None


#: openapi-schema-validator knows ``uuid`` but not ``UUID`` (formats are case-sensitive, and an
#: unknown format always passes); the _sdk spec spells most ids ``format: UUID``.
EXTRA_FORMATS: Final = {"UUID": _is_uuid}


# --------------------------------------------------------------------------------------------
# Message formatting
# --------------------------------------------------------------------------------------------


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _json_path(error: Any) -> str:
    parts = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part}"
        for part in getattr(error, "absolute_path", ())
    )
    return "$" + parts


def _schema_error_lines(error: Any) -> list[str]:
    message = str(getattr(error, "message", error))
    if getattr(error, "validator", None) == "type" and getattr(error, "instance", 0) is None:
        message += " (the spec has no null here: omit the field instead of sending null)"
    line = f"{_json_path(error)}: {_shorten(message)}"
    sub_errors = list(getattr(error, "context", None) or ())
    if sub_errors:
        details = "; ".join(
            f"{_json_path(sub)}: {_shorten(str(getattr(sub, 'message', sub)))}"
            for sub in sorted(sub_errors, key=lambda e: -len(list(e.absolute_path)))[:3]
        )
        line += f" [alternatives: {details}]"
    return [line]


_WRAPPER_LABELS: Final = {
    "InvalidData": "body does not match the schema",
    "InvalidRequestBody": "body does not match the schema",
    "DataValidationError": "body",
    "RequestBodyValidationError": "body",
    "InvalidSecurity": "no accepted credentials",
    "SecurityValidationError": "no accepted credentials",
}


def _describe(exc: BaseException) -> str:
    """Flatten an openapi-core error and its cause chain into one readable line.

    openapi-core wraps errors (``InvalidData`` -> ``InvalidSchemaValue`` -> jsonschema errors)
    and the wrappers repeat their cause's text; keep a short label for wrappers and list the
    individual schema errors with their JSON paths instead of the whole value's repr.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None:
        chain.append(current)
        current = current.__cause__
    parts: list[str] = []
    for item, following in zip(chain, [*chain[1:], None], strict=True):
        schema_errors = getattr(item, "schema_errors", None)
        if schema_errors is not None:
            parts.append(
                "; ".join(line for err in schema_errors for line in _schema_error_lines(err))
            )
            continue
        text = str(item)
        if following is not None and str(following) in text:
            text = _WRAPPER_LABELS.get(type(item).__name__, type(item).__name__)
        if type(item).__name__ == "SecurityNotFound":
            text = (
                "the operation requires one of the security schemes "
                f"{getattr(item, 'schemes', '?')} (Authorization: Bearer <token> or Basic)"
            )
        parts.append(text)
    return ": ".join(parts)


def describe_exchange(exchange: ExchangeLike) -> str:
    query = f"?{exchange.query}" if exchange.query else ""
    status = "dropped" if exchange.status == 0 else str(exchange.status)
    fault = f" (fault {exchange.fault})" if exchange.fault is not None else ""
    return f"{exchange.method.upper()} {exchange.path}{query} -> {status}{fault}"


_MEMO_SIZE: Final = 4096


def _memo_key(exchange: ExchangeLike) -> tuple[object, ...]:
    return (
        exchange.method,
        exchange.path,
        exchange.query,
        exchange.route,
        exchange.prefix,
        tuple(sorted(exchange.request_headers.items())),
        exchange.request_body,
        exchange.status,
        tuple(sorted(exchange.response_headers.items())),
        exchange.response_body,
        exchange.fault,
    )


def _mimetype(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


# --------------------------------------------------------------------------------------------
# The validator
# --------------------------------------------------------------------------------------------


class SpecValidator:
    """Validates recorded exchanges; see the module docstring for the rules."""

    def __init__(
        self, bundle: SpecBundle, *, check_spec: bool = True, strict_properties: bool = True
    ) -> None:
        """``check_spec`` runs openapi-spec-validator on the pruned spec (it passes, ~0.3 s).
        ``strict_properties`` additionally rejects object properties the spec does not define
        (openapi-core's ``additionalProperties`` "forbid" policy): a spec-unknown field in a
        simulator response is something the real server never sends."""
        self.bundle = bundle
        self.strict_properties = strict_properties
        self._memo: dict[tuple[object, ...], tuple[str, ...]] = {}
        if check_spec:
            spec = OpenAPI.from_dict(bundle.sdk).spec
        else:
            spec = SchemaPath.from_dict(bundle.sdk)
        self._spec = spec
        common: dict[str, Any] = {
            "schema_validators_factory": _CachingSchemaValidatorsFactory(),
            "extra_format_validators": EXTRA_FORMATS,
            "forbid_unspecified_additional_properties": strict_properties,
        }
        self._request = V31RequestValidator(
            spec, security_provider_factory=_SecurityProviderFactory(), **common
        )
        self._parameters = V31RequestParametersValidator(spec, **common)
        self._body = V31RequestBodyValidator(spec, **common)
        self._response = V31ResponseValidator(spec, **common)

        server = urlsplit(bundle.sdk["servers"][0]["url"])
        self._host_url = f"{server.scheme}://{server.netloc}"
        self._base_path = server.path.rstrip("/")
        self._route_res = {
            route: re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(route)))
            for route in [*KEPT_OPERATIONS, TOKEN_ROUTE]
        }

        self._token_request = self._token_request_validator(bundle.api_components)
        self._token_response = self._component_validator(
            OAS31Validator, bundle.api_components, TOKEN_RESPONSE_SCHEMA, strict_properties
        )
        self._known_exception = self._component_validator(
            OAS30Validator, bundle.config_components, KNOWN_EXCEPTION_INFO_SCHEMA, False
        )
        problem_schemas = bundle.problems_components["components"]["schemas"]
        self._problem_fields = frozenset(problem_schemas["BaseProblemFields"]["properties"])
        self._problems = {
            name: (
                self._component_validator(OAS30Validator, bundle.problems_components, name, False),
                self._problem_constants(problem_schemas[name]),
            )
            for names in PROBLEMS_BY_STATUS.values()
            for name in names
        }
        self._error_id = OAS31Validator(
            {
                "type": "object",
                "required": ["errorId"],
                "properties": {"errorId": {"type": "string", "format": "uuid"}},
                "additionalProperties": False,
            },
            format_checker=OAS31Validator.FORMAT_CHECKER,
        )
        self._rate_limited = OAS31Validator(
            {
                "type": "object",
                "required": ["message"],
                "properties": {"message": {"const": RATE_LIMITED_MESSAGE}},
                "additionalProperties": False,
            }
        )

    # -- construction helpers ----------------------------------------------------------------

    @staticmethod
    def _component_validator(
        validator_cls: Any, components: Mapping[str, Any], name: str, strict: bool
    ) -> Any:
        """A jsonschema validator for ``#/components/schemas/<name>`` with refs resolved
        inside ``components`` (the closure extracted from the same file)."""
        root: dict[str, Any] = {"$ref": f"#/components/schemas/{name}", **components}
        if strict:
            # 2020-12 (OAS 3.1 only): sees properties evaluated through the $ref.
            root["unevaluatedProperties"] = False
        return validator_cls(root, format_checker=validator_cls.FORMAT_CHECKER)

    def _token_request_validator(self, api_components: Mapping[str, Any]) -> Any:
        """``ApplicationTokenRequestWithGrant`` as the real server accepts it.

        The spec requires ``grant_type`` but defines the property as ``grant-type``; the server
        never reads the grant (research §3.1) and clients send ``grant_type`` (SDK, form),
        ``grant-type`` (Kestra, JSON) or nothing (Dagster). So: drop ``grant_type`` from
        ``required`` and give ``grant_type`` the same schema as ``grant-type``. ``client_id`` and
        ``client_secret`` stay required strings.
        """
        components = copy.deepcopy(dict(api_components))
        schema = components["components"]["schemas"][TOKEN_REQUEST_SCHEMA]
        schema["required"] = [name for name in schema.get("required", []) if name != "grant_type"]
        properties = schema.setdefault("properties", {})
        if "grant-type" in properties:
            properties.setdefault("grant_type", properties["grant-type"])
        return self._component_validator(
            OAS31Validator, components, TOKEN_REQUEST_SCHEMA, self.strict_properties
        )

    @staticmethod
    def _problem_constants(schema: Mapping[str, Any]) -> dict[str, Any]:
        """api-problems.yaml: '"default" values in ProblemResponse objects are considered
        constants for a given problem type'. Collect them from the inline allOf parts."""
        constants: dict[str, Any] = {}
        for part in schema.get("allOf", []):
            if "$ref" in part:
                continue
            for prop, prop_schema in part.get("properties", {}).items():
                if isinstance(prop_schema, dict) and "default" in prop_schema:
                    constants[prop] = prop_schema["default"]
        return constants

    # -- public API ---------------------------------------------------------------------------

    def validate(self, exchange: ExchangeLike, *, require_auth: bool = True) -> list[str]:
        """Return human-readable violations for one exchange (empty when it conforms).

        ``require_auth=False`` is for a simulator running without auth (an OSS server with
        ``API_AUTHORIZATION_ENABLED=false``, research §3.3): a request with *no* Authorization
        header is then accepted where the spec requires security. A header that is present
        must still be a well-formed Bearer or Basic credential.
        """
        if exchange.path.startswith(CONTROL_PREFIX):
            return []
        key = (require_auth, *_memo_key(exchange))
        problems = self._memo.get(key)
        if problems is None:
            # Pollers repeat identical exchanges; openapi-core costs ~2-30 ms per exchange.
            problems = tuple(self._validate(exchange, require_auth))
            if len(self._memo) >= _MEMO_SIZE:
                self._memo.clear()
            self._memo[key] = problems
        label = describe_exchange(exchange)
        return [f"{label}: {problem}" for problem in problems]

    def validate_all(
        self, exchanges: Iterable[ExchangeLike], *, require_auth: bool = True
    ) -> list[str]:
        """All violations, each prefixed with the exchange's index (``#3 GET ... -> 200: ...``)."""
        problems: list[str] = []
        for index, exchange in enumerate(exchanges):
            problems.extend(
                f"#{index} {problem}"
                for problem in self.validate(exchange, require_auth=require_auth)
            )
        return problems

    # -- dispatch -----------------------------------------------------------------------------

    def _validate(self, exchange: ExchangeLike, require_auth: bool) -> list[str]:
        fault_problems, check_response = self._check_fault(exchange)
        return fault_problems + self._validate_exchange(exchange, require_auth, check_response)

    @staticmethod
    def _check_fault(exchange: ExchangeLike) -> tuple[list[str], bool]:
        """(problems, whether to check the response) for the exchange's fault label."""
        fault, dropped = exchange.fault, exchange.status == 0
        if fault is None:
            return [], not dropped
        if fault not in FAULT_KINDS:
            return [
                f"exchange: unknown fault label {fault!r} (known: {', '.join(sorted(FAULT_KINDS))})"
            ], not dropped
        problems: list[str] = []
        if exchange.status not in FAULT_STATUSES[fault]:
            shown = "dropped" if dropped else str(exchange.status)
            problems.append(f"exchange: a {fault!r} fault cannot be answered {shown}")
        return problems, not dropped and fault in VALID_RESPONSE_FAULTS

    def _validate_exchange(
        self, exchange: ExchangeLike, require_auth: bool, check_response: bool
    ) -> list[str]:
        route, prefix = exchange.route, exchange.prefix
        if route is None:
            inferred = self._infer_route(exchange.path)
            if inferred is None:
                return [
                    "request: unknown route (no spec path matches; the control API is under "
                    f"{CONTROL_PREFIX})"
                ]
            if exchange.status not in (0, 404):
                return [
                    f"response: the path is spec route {inferred[1]!r} under prefix "
                    f"{inferred[0]!r}, yet the exchange has no route and was answered "
                    f"{exchange.status}"
                ]
            # A spec path under a layout this simulated deployment does not serve (a client
            # probing /api/public/v1/health on an old standalone server): the request is still
            # checked; the 404 is that other server's answer, not an Airbyte API response.
            prefix, route = inferred
            check_response = False
        problems, rest = self._check_prefix(prefix, exchange.path, route)
        if rest is None:
            return problems
        method = exchange.method.lower()
        if route == TOKEN_ROUTE:
            if method != "post":
                return [*problems, f"request: {method.upper()} is not an operation of {route}"]
            problems += self._validate_token_request(exchange)
            if check_response:
                problems += self._validate_token_response(exchange)
            return problems
        if method not in KEPT_OPERATIONS.get(route, frozenset()):
            return [
                *problems,
                f"request: operation {method.upper()} {route} is not one the validator covers "
                f"({self._covered()}); extend KEPT_OPERATIONS if the spec has it",
            ]
        operation = self.bundle.sdk["paths"][route][method]
        path_item = self.bundle.sdk["paths"][route]
        problems += self._validate_api_request(exchange, rest, path_item, operation, require_auth)
        if check_response:
            problems += self._validate_api_response(exchange, rest, operation)
        return problems

    def _infer_route(self, path: str) -> tuple[str, str] | None:
        """(prefix, route) when ``path`` is a spec path, for exchanges recorded without one."""
        if path in ROOT_PREFIX_ROUTES:
            return "", path
        for prefix in sorted(API_PREFIXES, key=len, reverse=True):
            if path.startswith(prefix + "/"):
                rest = path[len(prefix) :]
                for route, pattern in self._route_res.items():
                    if pattern.fullmatch(rest):
                        return prefix, route
        return None

    @staticmethod
    def _covered() -> str:
        return ", ".join(
            f"{m.upper()} {r}" for r, methods in KEPT_OPERATIONS.items() for m in sorted(methods)
        )

    def _check_prefix(self, prefix: str, path: str, route: str) -> tuple[list[str], str | None]:
        if prefix not in API_PREFIXES and not (prefix == "" and route in ROOT_PREFIX_ROUTES):
            return [f"request: prefix {prefix!r} is not one of {API_PREFIXES} for {route}"], None
        if not path.startswith(prefix):
            return [f"request: path does not start with its prefix {prefix!r}"], None
        rest = path[len(prefix) :]
        pattern = self._route_res.get(route)
        if pattern is None:
            return [
                f"request: route {route!r} is not a path the validator knows "
                f"({self._covered()}, POST {TOKEN_ROUTE})"
            ], None
        if not pattern.fullmatch(rest):
            return [f"request: path after the prefix {rest!r} does not match route {route!r}"], None
        return [], rest

    # -- requests -----------------------------------------------------------------------------

    def _core_request(self, exchange: ExchangeLike, rest: str) -> _CoreRequest:
        return _CoreRequest(
            host_url=self._host_url,
            path=self._base_path + rest,
            method=exchange.method.lower(),
            parameters=RequestParameters(
                query=ImmutableMultiDict(parse_qsl(exchange.query, keep_blank_values=True)),
                header=Headers(list(exchange.request_headers.items())),
            ),
            content_type=exchange.request_headers.get("content-type", ""),
            body=exchange.request_body or None,
        )

    def _validate_api_request(
        self,
        exchange: ExchangeLike,
        rest: str,
        path_item: Mapping[str, Any],
        operation: Mapping[str, Any],
        require_auth: bool,
    ) -> list[str]:
        problems = self._check_query_shape(exchange.query, path_item, operation)
        errors = list(self._request.iter_errors(self._core_request(exchange, rest)))
        if any(isinstance(err, SecurityValidationError) for err in errors):
            # openapi-core stops after a security failure; report the rest too. (A fresh
            # request each time: the parameters validator fills in the path parameters.)
            for validator in (self._parameters, self._body):
                errors.extend(validator.iter_errors(self._core_request(exchange, rest)))
            if not require_auth and "authorization" not in exchange.request_headers:
                errors = [e for e in errors if not isinstance(e, SecurityValidationError)]
        problems.extend(f"request: {_describe(err)}" for err in errors)
        if "requestBody" not in operation and exchange.request_body:
            problems.append("request: the operation has no request body but one was sent")
        security = operation.get("security", self.bundle.sdk.get("security", []))
        if security:
            problems += self._check_credentials(exchange.request_headers)
        return problems

    def _check_query_shape(
        self, query: str, path_item: Mapping[str, Any], operation: Mapping[str, Any]
    ) -> list[str]:
        """What openapi-core does not check: unknown names, repeated scalars, and arrays sent
        comma-joined although the spec's style (form, explode=true) means repeated names."""
        declared = {
            param["name"]: param
            for param in [*path_item.get("parameters", []), *operation.get("parameters", [])]
            if param.get("in") == "query"
        }
        problems: list[str] = []
        counts: dict[str, int] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            counts[name] = counts.get(name, 0) + 1
            param = declared.get(name)
            if param is None:
                problems.append(
                    f"request: query parameter {name!r} is not defined by the spec "
                    f"(defined: {', '.join(sorted(declared)) or 'none'})"
                )
                continue
            schema_type = param.get("schema", {}).get("type")
            if schema_type == "boolean" and value not in ("true", "false"):
                # openapi-core also casts y/yes/t/on/1 (and n/no/f/off/0) to booleans.
                problems.append(
                    f"request: boolean query parameter {name}={value!r} must be 'true' or 'false'"
                )
            is_array = schema_type == "array"
            style = param.get("style", "form")
            explode = param.get("explode", style == "form")
            if is_array and style == "form" and explode and "," in value:
                problems.append(
                    f"request: query parameter {name}={value!r} is comma-joined; the spec "
                    f"(style=form, explode=true) requires one {name}=... per item"
                )
        for name, count in counts.items():
            param = declared.get(name)
            if param is not None and param.get("schema", {}).get("type") != "array" and count > 1:
                problems.append(f"request: scalar query parameter {name!r} sent {count} times")
        return problems

    @staticmethod
    def _check_credentials(headers: Mapping[str, str]) -> list[str]:
        """openapi-core only checks the scheme word of ``Authorization``; check the rest."""
        value = headers.get("authorization")
        if value is None:
            return []  # already reported by the security validator
        scheme, _, credentials = value.partition(" ")
        credentials = credentials.strip()
        if scheme.lower() == "bearer":
            if not credentials or any(ch.isspace() for ch in credentials):
                return ["request: Authorization: Bearer needs exactly one non-empty token"]
        elif scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return ["request: Authorization: Basic credentials are not valid base64"]
            if ":" not in decoded:
                return ["request: Authorization: Basic credentials are not 'user:password'"]
        return []

    def _validate_token_request(self, exchange: ExchangeLike) -> list[str]:
        content_type = _mimetype(exchange.request_headers.get("content-type"))
        allowed = sorted(self.bundle.token_operation["requestBody"]["content"])
        body = exchange.request_body
        if not body:
            return ["request: the token request has no body (client_id and client_secret)"]
        if content_type not in allowed:
            return [f"request: token request content type {content_type!r} is not one of {allowed}"]
        problems: list[str] = []
        payload: Any
        if content_type == "application/x-www-form-urlencoded":
            try:
                pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
            except (UnicodeDecodeError, ValueError) as exc:
                return [f"request: token form body does not parse: {exc}"]
            payload = dict(pairs)
            if len(payload) != len(pairs):
                problems.append("request: token form body repeats a field")
        else:
            try:
                payload = json.loads(body)
            except ValueError as exc:
                return [f"request: token JSON body does not parse: {exc}"]
        problems.extend(
            f"request: {TOKEN_REQUEST_SCHEMA}: {line}"
            for err in self._token_request.iter_errors(payload)
            for line in _schema_error_lines(err)
        )
        return problems

    # -- responses ----------------------------------------------------------------------------

    def _validate_api_response(
        self, exchange: ExchangeLike, rest: str, operation: Mapping[str, Any]
    ) -> list[str]:
        documented = operation.get("responses", {})
        spec_response = documented.get(str(exchange.status))
        if spec_response is not None and "content" in spec_response:
            request = self._core_request(exchange, rest)
            response = _CoreResponse(
                status_code=exchange.status,
                data=exchange.response_body or None,
                headers=Headers(list(exchange.response_headers.items())),
                content_type=exchange.response_headers.get("content-type", ""),
            )
            if not response.content_type:
                return ["response: no Content-Type header"]
            return [
                f"response: {_describe(err)}"
                for err in self._response.iter_errors(request, response)
            ]
        return self._validate_error_body(exchange, exchange.route or "", documented)

    def _validate_token_response(self, exchange: ExchangeLike) -> list[str]:
        documented = self.bundle.token_operation.get("responses", {})
        spec_response = documented.get(str(exchange.status))
        if spec_response is None or "content" not in spec_response:
            return self._validate_error_body(exchange, TOKEN_ROUTE, documented)
        content_type = _mimetype(exchange.response_headers.get("content-type"))
        if content_type not in spec_response["content"]:
            return [
                f"response: content type {content_type!r} is not one of "
                f"{sorted(spec_response['content'])}"
            ]
        payload, problem = self._parse_json(exchange.response_body)
        if problem:
            return [problem]
        return [
            f"response: {TOKEN_RESPONSE_SCHEMA}: {line}"
            for err in self._token_response.iter_errors(payload)
            for line in _schema_error_lines(err)
        ]

    @staticmethod
    def _parse_json(body: bytes) -> tuple[Any, str | None]:
        if not body:
            return None, "response: empty body where a JSON body is required"
        try:
            return json.loads(body), None
        except ValueError as exc:
            return None, f"response: body is not JSON ({exc}): {_shorten(repr(body))}"

    def _error_shapes(self, route: str, status: int) -> list[str]:
        """Body shapes the real server sends for statuses the spec documents without content
        or not at all (research §3.1 and §6)."""
        if status == 429:
            return ["rate-limited"]
        problems = list(PROBLEMS_BY_STATUS.get(status, ()))
        if route == TOKEN_ROUTE and status == 401:
            return ["errorId"]  # InvalidClientCredentialsExceptionHandler (OIDC mode)
        if route == TOKEN_ROUTE and status == 400:
            return [*problems, KNOWN_EXCEPTION_INFO_SCHEMA]  # SIMPLE mode BadRequestException
        if status >= 500:
            return ["errorId", *problems]
        return problems

    def _validate_error_body(
        self, exchange: ExchangeLike, route: str, documented: Mapping[str, Any]
    ) -> list[str]:
        status = exchange.status
        is_documented = str(status) in documented
        if is_documented and status < 400:
            return []  # documented without content (e.g. GET /health 200): nothing to check
        shapes = self._error_shapes(route, status)
        if not shapes:
            listed = ", ".join(sorted(documented))
            return [
                f"response: status {status} is neither documented for this operation ({listed}) "
                "nor an error status the real server is known to send"
            ]
        if is_documented and not exchange.response_body:
            return []  # e.g. `404: description: Not found` allows an empty body
        content_type = _mimetype(exchange.response_headers.get("content-type"))
        if content_type not in PROBLEM_MEDIA_TYPES:
            return [
                f"response: error body content type {content_type!r} is not one of "
                f"{sorted(PROBLEM_MEDIA_TYPES)}"
            ]
        payload, problem = self._parse_json(exchange.response_body)
        if problem:
            return [problem]
        failures: dict[str, list[str]] = {}
        for shape in shapes:
            errors = self._shape_errors(shape, payload)
            if not errors:
                return []
            failures[shape] = errors
        best = self._best_shape(failures, payload)
        others = [shape for shape in failures if shape != best]
        also = f" (nor {', '.join(others)})" if others else ""
        return [f"response: {status} body is not a valid {best}{also}: {'; '.join(failures[best])}"]

    def _best_shape(self, failures: Mapping[str, list[str]], payload: Any) -> str:
        """The shape to report: the problem whose title the body claims, else the closest."""
        if isinstance(payload, dict):
            for shape in failures:
                entry = self._problems.get(shape)
                if entry is not None and entry[1].get("title") == payload.get("title"):
                    return shape
        return min(failures, key=lambda shape: len(failures[shape]))

    def _shape_errors(self, shape: str, payload: Any) -> list[str]:
        if shape == "errorId":
            return [
                line for e in self._error_id.iter_errors(payload) for line in _schema_error_lines(e)
            ]
        if shape == "rate-limited":
            return [
                line
                for e in self._rate_limited.iter_errors(payload)
                for line in _schema_error_lines(e)
            ]
        if shape == KNOWN_EXCEPTION_INFO_SCHEMA:
            return [
                line
                for e in self._known_exception.iter_errors(payload)
                for line in _schema_error_lines(e)
            ]
        validator, constants = self._problems[shape]
        errors = [line for e in validator.iter_errors(payload) for line in _schema_error_lines(e)]
        if isinstance(payload, dict):
            if self.strict_properties:
                unknown = sorted(set(payload) - self._problem_fields)
                if unknown:
                    errors.append(f"$: properties not defined for problems: {unknown}")
            for key, expected in constants.items():
                if key in payload and payload[key] != expected:
                    errors.append(f"$.{key}: {key} must be {expected!r}, got {payload[key]!r}")
        return errors


# --------------------------------------------------------------------------------------------
# Session-wide entry points
# --------------------------------------------------------------------------------------------

#: Seconds spent by the last uncached :func:`get_validator` call (for diagnostics and tests).
LOAD_SECONDS: dict[str, float] = {}


@functools.cache
def get_validator() -> SpecValidator:
    """The process-wide validator. The first call in a process costs a few ms with a warm disk
    cache (plus ~0.5 s to import openapi-core) and ~2.5 s when the spec files or this module
    changed (YAML parse, pruning, spec check); later calls return the same object."""
    started = time.perf_counter()
    bundle, from_cache = load_spec_bundle()
    # A cache entry is only written after the spec check passed on identical content.
    validator = SpecValidator(bundle, check_spec=not from_cache)
    if not from_cache:
        _write_cache(cache_dir() / f"{_cache_key(spec_dir())}.json", bundle)
    LOAD_SECONDS["get_validator"] = time.perf_counter() - started
    LOAD_SECONDS["from_cache"] = float(from_cache)
    return validator


def assert_exchanges_valid(exchanges: Iterable[ExchangeLike], *, require_auth: bool = True) -> None:
    """Raise :class:`SpecValidationError` listing every violation (for test teardown)."""
    problems = get_validator().validate_all(exchanges, require_auth=require_auth)
    if problems:
        raise SpecValidationError(problems)
