"""Mapping a request path to (prefix, spec route template, path parameters)."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["PREFIXES", "ROUTE_METHODS", "classify"]

# "public" is the self-managed layout (inside airbyte-server), "legacy" the Cloud and old
# standalone-server layout.
PREFIXES: dict[str, str] = {"public": "/api/public/v1", "legacy": "/v1"}

ROUTE_METHODS: dict[str, frozenset[str]] = {
    "/health": frozenset({"GET"}),
    "/applications/token": frozenset({"POST"}),
    "/jobs": frozenset({"GET", "POST"}),
    "/jobs/{jobId}": frozenset({"GET", "DELETE"}),
    "/connections": frozenset({"GET"}),
    "/connections/{connectionId}": frozenset({"GET"}),
    "/workspaces": frozenset({"GET"}),
}

_TEMPLATED: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (re.compile(r"^/jobs/([^/]+)$"), "/jobs/{jobId}", "jobId"),
    (re.compile(r"^/connections/([^/]+)$"), "/connections/{connectionId}", "connectionId"),
)


def classify(path: str, layouts: Iterable[str]) -> tuple[str, str | None, dict[str, str]]:
    enabled = set(layouts)
    # Longest prefix first so "/api/public/v1/..." is never read as something else.
    for layout, prefix in sorted(PREFIXES.items(), key=lambda item: -len(item[1])):
        if layout not in enabled or not path.startswith(prefix + "/"):
            continue
        rest = path[len(prefix) :]
        if rest in ROUTE_METHODS:
            return prefix, rest, {}
        for pattern, template, name in _TEMPLATED:
            match = pattern.match(rest)
            if match:
                return prefix, template, {name: match.group(1)}
        return prefix, None, {}
    # The standalone server answered health at the root, outside /v1.
    if path == "/health" and "legacy" in enabled:
        return "", "/health", {}
    return "", None, {}
