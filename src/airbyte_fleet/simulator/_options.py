"""Configuration of a simulated Airbyte instance and of the faults it injects."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal, get_args

__all__ = [
    "FAULT_FIELDS",
    "AuthMode",
    "Faults",
    "Layout",
    "SimulatorOptions",
    "TokenErrors",
]

AuthMode = Literal["client_credentials", "basic", "none"]
TokenErrors = Literal["cloud", "oss"]
Layout = Literal["public", "legacy"]

_AUTH_MODES: tuple[str, ...] = get_args(AuthMode)
_TOKEN_ERRORS: tuple[str, ...] = get_args(TokenErrors)
_LAYOUTS: tuple[str, ...] = get_args(Layout)


def _check_rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    rate = float(value)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be within 0..1, got {value!r}")
    return rate


def _check_non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _check_window(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise TypeError(f"down_window must be (start_s, end_s) or None, got {value!r}")
    start = _check_non_negative("down_window start", value[0])
    end = _check_non_negative("down_window end", value[1])
    if end < start:
        raise ValueError(f"down_window end must not precede start, got {value!r}")
    return (start, end)


def _check_retry_after(value: object) -> float | str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("retry_after must not be blank")
        return value
    return _check_non_negative("retry_after", value)


def _check_status(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"error_status must be an int within 400..599, got {value!r}")
    return value


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return value


@dataclass
class Faults:
    """Fault injection knobs; mutable so tests can change them while the server runs.

    ``token_failures`` counts down: it is the number of token requests that will still
    answer 502, so setting it at runtime fails the *next* N token requests.

    ``malformed_rate`` is the share of API requests (not /health, not the token endpoint)
    answered 200 ``application/json`` with a truncated or garbled body, before any handler
    runs: nothing is created, so a garbled answer to POST /jobs means no job exists.
    """

    rate_429: float = 0.0
    rate_5xx: float = 0.0
    error_status: int = 503
    slow_post_seconds: float = 0.0
    reset_rate: float = 0.0
    down_window: tuple[float, float] | None = None
    token_failures: int = 0
    retry_after: float | str | None = None
    malformed_rate: float = 0.0

    def __post_init__(self) -> None:
        self.update({f.name: getattr(self, f.name) for f in fields(self)})

    def update(self, changes: Mapping[str, object]) -> None:
        """Validate and apply a subset of fields; nothing changes if any value is bad."""
        unknown = set(changes) - set(FAULT_FIELDS)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        checked: dict[str, object] = {}
        for name, value in changes.items():
            if name in ("rate_429", "rate_5xx", "reset_rate", "malformed_rate"):
                checked[name] = _check_rate(name, value)
            elif name == "error_status":
                checked[name] = _check_status(value)
            elif name == "slow_post_seconds":
                checked[name] = _check_non_negative(name, value)
            elif name == "down_window":
                checked[name] = _check_window(value)
            elif name == "token_failures":
                checked[name] = _check_count(name, value)
            else:
                checked[name] = _check_retry_after(value)
        for name, value in checked.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.down_window is not None:
            data["down_window"] = list(self.down_window)
        return data


FAULT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Faults))


@dataclass(frozen=True)
class SimulatorOptions:
    """Everything that shapes a simulated instance; the same options and seed give the same world.

    ``max_running`` caps how many jobs hold a worker slot (running or incomplete) at once,
    across the whole instance; a job that is ready to start while all slots are taken is
    ``queued`` until one frees (None: no cap, jobs never queue).
    """

    connections: int = 50
    workspaces: int = 2
    sync_seconds: tuple[float, float] = (2.0, 6.0)
    failure_rate: float = 0.1
    incomplete_rate: float = 0.1
    token_ttl: int = 900
    client_id: str = "sim-client"
    client_secret: str = field(default="sim-secret", repr=False)
    auth: AuthMode = "client_credentials"
    username: str = "airbyte"
    password: str = field(default="password", repr=False)
    token_errors: TokenErrors = "cloud"
    layouts: tuple[Layout, ...] = ("public", "legacy")
    inactive_connections: int = 0
    seed: int = 1
    rate_429: float = 0.0
    rate_5xx: float = 0.0
    error_status: int = 503
    slow_post_seconds: float = 0.0
    reset_rate: float = 0.0
    down_window: tuple[float, float] | None = None
    token_failures: int = 0
    retry_after: float | str | None = None
    malformed_rate: float = 0.0
    max_running: int | None = None

    def __post_init__(self) -> None:
        _check_count("connections", self.connections)
        if _check_count("workspaces", self.workspaces) < 1:
            raise ValueError("workspaces must be >= 1")
        if len(self.sync_seconds) != 2:
            raise ValueError("sync_seconds must be (low, high)")
        low = _check_non_negative("sync_seconds low", self.sync_seconds[0])
        high = _check_non_negative("sync_seconds high", self.sync_seconds[1])
        if high < low:
            raise ValueError("sync_seconds high must be >= low")
        _check_rate("failure_rate", self.failure_rate)
        _check_rate("incomplete_rate", self.incomplete_rate)
        if _check_count("token_ttl", self.token_ttl) < 1:
            raise ValueError("token_ttl must be >= 1")
        if self.auth not in _AUTH_MODES:
            raise ValueError(f"auth must be one of {_AUTH_MODES}, got {self.auth!r}")
        if self.token_errors not in _TOKEN_ERRORS:
            raise ValueError(f"token_errors must be one of {_TOKEN_ERRORS}")
        if not self.layouts or any(layout not in _LAYOUTS for layout in self.layouts):
            raise ValueError(f"layouts must be a non-empty subset of {_LAYOUTS}")
        if _check_count("inactive_connections", self.inactive_connections) > self.connections:
            raise ValueError("inactive_connections cannot exceed connections")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError("seed must be an int")
        if self.max_running is not None and _check_count("max_running", self.max_running) < 1:
            raise ValueError("max_running must be >= 1 (or None for no cap)")
        self.initial_faults()  # validates the fault fields

    def initial_faults(self) -> Faults:
        # SimulatorOptions repeats the fault fields flat (one flag each); they start the Faults.
        return Faults(**{name: getattr(self, name) for name in FAULT_FIELDS})
