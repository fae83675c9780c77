"""How the worker is started: bind address, state, limits, shutdown policy, API token.

Flags given to ``airbyte-fleet serve`` win; anything left as ``None`` comes from the environment
(``AIRBYTE_FLEET_HOST``, ``AIRBYTE_FLEET_PORT``, ``AIRBYTE_FLEET_API_TOKEN``,
``AIRBYTE_FLEET_STATE_DIR``, ``AIRBYTE_FLEET_MAX_RUNS``, ``AIRBYTE_FLEET_ON_SHUTDOWN``,
``AIRBYTE_FLEET_GRACE``, ``AIRBYTE_FLEET_HEADER_TIMEOUT``, ``AIRBYTE_FLEET_BODY_TIMEOUT``,
``AIRBYTE_FLEET_MAX_CLIENTS``; the container image sets the first two), then the defaults below.
Where runs are kept (``AIRBYTE_FLEET_DATABASE_URL``) and the lease (``AIRBYTE_FLEET_LEASE``) also
come from the config file's top-level ``database_url`` and ``lease``, below the variables.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from airbyte_fleet._defaults import DEFAULT_STATE_DIR
from airbyte_fleet._redact import MIN_SECRET_LENGTH, register_secret
from airbyte_fleet._validation import Loc, Place, env_var, flag, validated
from airbyte_fleet.config import DATABASE_URL_ENV, LEASE_ENV, StoreSettings
from airbyte_fleet.engine.options import Duration, StopMode
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.resolve import store_settings
from airbyte_fleet.settings_file import FileConfig, load_file_config

__all__ = [
    "ENV_VARS",
    "TOKEN_ENV",
    "ServeOptions",
    "ShutdownMode",
    "check_bind",
    "is_loopback",
]

ShutdownMode = StopMode  # what a shutdown does to runs in flight: the same choice as an interrupt

TOKEN_ENV = "AIRBYTE_FLEET_API_TOKEN"

# Option name -> the variable that supplies it when the caller leaves it unset.
ENV_VARS = {
    "host": "AIRBYTE_FLEET_HOST",
    "port": "AIRBYTE_FLEET_PORT",
    "api_token": TOKEN_ENV,
    "state_dir": "AIRBYTE_FLEET_STATE_DIR",
    "max_runs": "AIRBYTE_FLEET_MAX_RUNS",
    "on_shutdown": "AIRBYTE_FLEET_ON_SHUTDOWN",
    "grace": "AIRBYTE_FLEET_GRACE",
    "header_timeout": "AIRBYTE_FLEET_HEADER_TIMEOUT",
    "body_timeout": "AIRBYTE_FLEET_BODY_TIMEOUT",
    "max_clients": "AIRBYTE_FLEET_MAX_CLIENTS",
    "database_url": DATABASE_URL_ENV,
    "lease": LEASE_ENV,
}
# Read with the config file below them (resolve.store_settings), not by the loop over ENV_VARS.
_STORE_KEYS = tuple(StoreSettings.model_fields)

# A shorter token would show in clear: the secret filter leaves such short values alone. Where
# anyone can connect, a token must also resist guessing.
MIN_TOKEN_LENGTH = MIN_SECRET_LENGTH
MIN_REACHABLE_TOKEN_LENGTH = 16


class ServeOptions(BaseModel):
    """Everything ``airbyte-fleet serve`` needs besides the Airbyte settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8080, ge=0, le=65535, description="port to listen on")
    config: Path | None = Field(default=None, description="the TOML file (--config)")
    state_dir: Path = Field(default=Path(DEFAULT_STATE_DIR), description="journal and run ledger")
    api_token: SecretStr | None = Field(default=None, description="bearer token for the API")
    max_runs: int = Field(default=4, ge=1, le=1000, description="runs at once; more are queued")
    on_shutdown: ShutdownMode = Field(
        default="detach",
        description="on SIGTERM, detach: leave Airbyte jobs running and resume their runs at the "
        "next start; cancel: cancel them and end their runs",
    )
    grace: Duration = Field(default=30.0, ge=0, description="time allowed for cancels on shutdown")
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, description="largest request body")
    ready_timeout: float = Field(default=5.0, gt=0, description="seconds /readyz waits for Airbyte")
    keepalive: float = Field(default=15.0, gt=0, description="seconds between SSE keep-alives")
    header_timeout: float = Field(
        default=15.0,
        gt=0,
        description="seconds a client has to send a request's headers; also how long an idle "
        "connection stays open",
    )
    body_timeout: float = Field(
        default=30.0, gt=0, description="seconds a client has to send a request's body"
    )
    max_clients: int = Field(
        default=1024,
        ge=1,
        description="HTTP connections open at once (also kept below the open-file limit); "
        "more wait to be accepted",
    )
    # Left out of the repr: the URL may carry the database's password.
    database_url: str | None = Field(
        default=None,
        repr=False,
        description=StoreSettings.model_fields["database_url"].description,
    )
    lease: Duration = Field(
        default=StoreSettings.model_fields["lease"].default,
        gt=0,
        description=StoreSettings.model_fields["lease"].description,
    )

    @classmethod
    def resolve(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        file: FileConfig | None = None,
        **given: Any,
    ) -> ServeOptions:
        """*given* (flags; ``None`` means not given) over the environment over the defaults;
        ``database_url`` and ``lease`` also over *file* (read from ``config`` when not given).

        Raises :class:`ConfigError` with one sentence naming the flag or variable to fix.
        """
        env = os.environ if environ is None else environ
        flags = {key: given.pop(key, None) for key in _STORE_KEYS}
        if file is None:
            file = load_file_config(given.get("config"), environ=env)
        store = store_settings(file, env, **flags)
        values = {key: value for key, value in given.items() if value is not None}
        values.update(database_url=store.url, lease=store.lease)
        from_env: dict[str, str] = {}
        for key, name in ENV_VARS.items():
            raw = env.get(name, "").strip()
            if key not in _STORE_KEYS and key not in values and raw:
                values[key] = raw
                from_env[key] = name
        token = values.get("api_token")
        if isinstance(token, str):
            # Before validation: a message about a bad value must never quote the token.
            register_secret(token)

        def where(loc: Loc) -> Place:
            key = str(loc[0]) if loc else ""
            if key in from_env:
                return env_var(from_env[key], secret=key == "api_token")
            return flag(f"--{key.replace('_', '-')}")

        return validated(cls, values, where)

    @property
    def token(self) -> str | None:
        if self.api_token is None:
            return None
        value = self.api_token.get_secret_value().strip()
        return value or None


def is_loopback(host: str) -> bool:
    """Whether *host* only accepts connections from this machine. Names other than ``localhost``
    (``*.localhost`` too) count as reachable from elsewhere: what they resolve to is up to the
    resolver, and can change."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(options: ServeOptions) -> None:
    """Refuse an open API on a reachable address (anyone who can connect could trigger syncs),
    and a token that is not printable ASCII or too short for where the API listens.

    No message quotes the token."""
    token = options.token
    loopback = is_loopback(options.host)
    if token is None:
        if not loopback:
            shown = options.host or "every interface"
            raise ConfigError(
                f"Refusing to listen on {shown} without an API token; set {TOKEN_ENV} or bind to "
                "127.0.0.1."
            )
        return
    register_secret(token)
    if not all("!" <= char <= "~" for char in token):
        raise ConfigError(
            f"{TOKEN_ENV} must be printable ASCII with no spaces; make one with "
            "'openssl rand -hex 32'."
        )
    least = MIN_TOKEN_LENGTH if loopback else MIN_REACHABLE_TOKEN_LENGTH
    if len(token) < least:
        where = "" if loopback else " for an API on a reachable address"
        raise ConfigError(
            f"{TOKEN_ENV} is shorter than {least} characters{where}; make a longer one with "
            "'openssl rand -hex 32'."
        )
