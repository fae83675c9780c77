"""Settings from the environment (and, below it, a TOML file), named as Paradime's integration page names them.

``AIRBYTE_BASE_URL`` (or ``AIRBYTE_HOST``), ``AIRBYTE_CLIENT_ID``, ``AIRBYTE_CLIENT_SECRET``,
``USE_SERVER_AUTH``, ``AIRBYTE_AUTH_TYPE`` work exactly as written there; ``AIRBYTE_API_TOKEN``,
``AIRBYTE_USERNAME``/``AIRBYTE_PASSWORD`` and the timeouts are ours.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, get_args

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from airbyte_fleet._messages import show
from airbyte_fleet._redact import register_secret
from airbyte_fleet._validation import Loc, Place, config_error, env_var
from airbyte_fleet.api import (
    ApiUrl,
    Auth,
    AuthMode,
    BasicAuth,
    BearerToken,
    ClientCredentials,
    NoAuth,
    RetryPolicy,
    Timeouts,
    UrlPlan,
    plan_url,
)
from airbyte_fleet.errors import ConfigError

__all__ = ["AirbyteSettings", "load_settings", "register_env_secrets"]

AUTH_MODES: tuple[str, ...] = get_args(AuthMode)
_SECRET_FIELDS = ("client_secret", "api_token", "password")


class _DocumentedEnv(PydanticBaseSettingsSource):
    """Exactly the documented variables (AIRBYTE_*, USE_SERVER_AUTH), nothing else.

    pydantic-settings' own environment source also reads a field's plain name when
    ``populate_by_name`` is on, so USERNAME or READ_TIMEOUT from an unrelated tool would leak in.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return _documented(self.settings_cls, os.environ)


def _documented(settings: type[BaseSettings], environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields *environ* sets through their documented variables, as written there."""
    upper = {name.upper(): value for name, value in environ.items()}
    values: dict[str, Any] = {}
    for key, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            name = str(alias.choices[0]).upper()
            if name in upper:
                values[key] = upper[name]
    return values


def _env(name: str) -> AliasChoices:
    # Only the documented variable is read from the environment: an alias like "username" would
    # also make pydantic-settings read USERNAME (set by every Windows shell) or READ_TIMEOUT.
    # The field name itself still works for values passed in (the TOML file), via
    # populate_by_name.
    return AliasChoices(name)


class AirbyteSettings(BaseSettings):
    """Where Airbyte is and how to log in. Environment wins over values passed in (the TOML file)."""

    model_config = SettingsConfigDict(
        case_sensitive=False, extra="ignore", populate_by_name=True, frozen=True
    )

    base_url: str | None = Field(default=None, validation_alias=_env("AIRBYTE_BASE_URL"))
    host: str | None = Field(default=None, validation_alias=_env("AIRBYTE_HOST"))
    client_id: str | None = Field(default=None, validation_alias=_env("AIRBYTE_CLIENT_ID"))
    client_secret: SecretStr | None = Field(
        default=None, validation_alias=_env("AIRBYTE_CLIENT_SECRET")
    )
    use_server_auth: bool = Field(default=False, validation_alias=_env("USE_SERVER_AUTH"))
    auth_type: str | None = Field(default=None, validation_alias=_env("AIRBYTE_AUTH_TYPE"))
    api_token: SecretStr | None = Field(default=None, validation_alias=_env("AIRBYTE_API_TOKEN"))
    username: str | None = Field(default=None, validation_alias=_env("AIRBYTE_USERNAME"))
    password: SecretStr | None = Field(default=None, validation_alias=_env("AIRBYTE_PASSWORD"))
    connect_timeout: float = Field(
        default=10.0, gt=0, validation_alias=_env("AIRBYTE_CONNECT_TIMEOUT")
    )
    read_timeout: float = Field(default=120.0, gt=0, validation_alias=_env("AIRBYTE_READ_TIMEOUT"))
    retry_attempts: int = Field(
        default=8, ge=1, le=100, validation_alias=_env("AIRBYTE_RETRY_ATTEMPTS")
    )
    retry_timeout: float = Field(
        default=300.0, gt=0, validation_alias=_env("AIRBYTE_RETRY_TIMEOUT")
    )
    retry_wait_initial: float = Field(
        default=0.5, ge=0, validation_alias=_env("AIRBYTE_RETRY_WAIT_INITIAL")
    )
    retry_wait_max: float = Field(
        default=30.0, ge=0, validation_alias=_env("AIRBYTE_RETRY_WAIT_MAX")
    )
    retry_wait_jitter: float = Field(
        default=1.0, ge=0, validation_alias=_env("AIRBYTE_RETRY_WAIT_JITTER")
    )
    max_connections: int = Field(
        default=100,
        ge=1,
        le=10_000,
        validation_alias=_env("AIRBYTE_MAX_CONNECTIONS"),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Values passed in come from the TOML file; the environment overrides them.
        return (_DocumentedEnv(settings_cls), init_settings)

    @field_validator("base_url", "host", "client_id", "auth_type", "username", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `AIRBYTE_HOST=` in a .env file or a CI secret that expands to nothing means "not set".
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("client_secret", "api_token", "password", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value:
            return None
        return value

    def model_post_init(self, context: Any) -> None:
        for secret in (self.client_secret, self.api_token, self.password):
            if secret is not None:
                register_secret(secret.get_secret_value())

    # ----------------------------------------------------------------- derived

    @property
    def url_source(self) -> str:
        return "AIRBYTE_BASE_URL" if self.base_url else "AIRBYTE_HOST"

    def url_plan(self) -> UrlPlan:
        raw = self.base_url or self.host
        if raw is not None and not raw.isprintable():
            # urlsplit() silently drops tabs and line breaks, so "http://air\nbyte:8000" would be
            # looked up as "airbyte". Not echoed: a URL may carry credentials.
            raise ConfigError(
                f"{self.url_source} contains a line break or another control character; set it "
                "to the URL alone, e.g. http://airbyte.internal:8000."
            )
        if raw is None and self.use_server_auth:
            raise ConfigError(
                "USE_SERVER_AUTH=TRUE means a self-hosted Airbyte, so set AIRBYTE_BASE_URL to it, "
                "e.g. http://airbyte.internal:8000."
            )
        return plan_url(raw, source=self.url_source)

    def auth_mode(self) -> AuthMode:
        """The explicit ``AIRBYTE_AUTH_TYPE``, or what the variables that are set imply."""
        if self.auth_type is not None:
            mode = self.auth_type.lower().replace("-", "_")
            if mode not in AUTH_MODES:
                raise ConfigError(
                    f"AIRBYTE_AUTH_TYPE={show(self.auth_type)} is not one of "
                    f"{', '.join(AUTH_MODES)}; set one of those or leave it unset."
                )
            chosen: AuthMode = mode  # type: ignore[assignment]
        elif self.use_server_auth or self.client_id or self.client_secret:
            chosen = "client_credentials"
        elif self.api_token:
            chosen = "bearer"
        elif self.username or self.password:
            chosen = "basic"
        else:
            chosen = "none"
        self._check_complete(chosen)
        return chosen

    def _check_complete(self, mode: AuthMode) -> None:
        needed: dict[str, object] = {}
        if mode == "client_credentials":
            needed = {
                "AIRBYTE_CLIENT_ID": self.client_id,
                "AIRBYTE_CLIENT_SECRET": self.client_secret,
            }
        elif mode == "bearer":
            needed = {"AIRBYTE_API_TOKEN": self.api_token}
        elif mode == "basic":
            needed = {"AIRBYTE_USERNAME": self.username, "AIRBYTE_PASSWORD": self.password}
        missing = [name for name, value in needed.items() if not value]
        if missing:
            why = (
                "USE_SERVER_AUTH=TRUE"
                if mode == "client_credentials" and self.use_server_auth and not self.auth_type
                else f"{mode} auth"
            )
            raise ConfigError(f"{why} needs {' and '.join(needed)}, but {missing[0]} is not set.")

    def make_auth(self, api: ApiUrl) -> Auth:
        mode = self.auth_mode()
        if mode == "none" and api.is_cloud:
            raise ConfigError(
                "Airbyte Cloud needs credentials; set AIRBYTE_CLIENT_ID and AIRBYTE_CLIENT_SECRET "
                "from an application in Cloud's settings."
            )
        if mode == "client_credentials":
            assert self.client_id is not None
            assert self.client_secret is not None
            return ClientCredentials(self.client_id, self.client_secret, api.token_url)
        if mode == "bearer":
            assert self.api_token is not None
            return BearerToken(self.api_token)
        if mode == "basic":
            assert self.username is not None
            assert self.password is not None
            return BasicAuth(self.username, self.password)
        return NoAuth()

    def client_options(self) -> dict[str, Any]:
        return {
            "timeouts": Timeouts(connect=self.connect_timeout, read=self.read_timeout),
            "retry": RetryPolicy(
                attempts=self.retry_attempts,
                timeout=self.retry_timeout,
                wait_initial=self.retry_wait_initial,
                wait_max=self.retry_wait_max,
                wait_jitter=self.retry_wait_jitter,
            ),
            "max_connections": self.max_connections,
        }

    def validate_offline(self) -> None:
        """Every check that needs no network: URL shape and credentials present."""
        self.url_plan()
        self.auth_mode()


def load_settings(file_values: Mapping[str, Any] | None = None) -> AirbyteSettings:
    """Read the environment over *file_values*; any invalid value becomes one :class:`ConfigError`."""
    values = dict(file_values or {})
    # Before validating: a message about another value must never show a secret, even one pasted
    # into the wrong variable (AIRBYTE_READ_TIMEOUT=<the client secret>).
    register_env_secrets(os.environ)
    for key in _SECRET_FIELDS:
        if isinstance(values.get(key), str):
            register_secret(values[key])
    if os.environ.get("AIRBYTE_BASE_URL", "").strip() or os.environ.get("AIRBYTE_HOST", "").strip():
        # Either URL variable in the environment overrides both URL keys of the file.
        values.pop("base_url", None)
        values.pop("host", None)
    try:
        return AirbyteSettings(**values)
    except ValidationError as exc:
        raise config_error(
            exc, _variable, {**values, **_documented(AirbyteSettings, os.environ)}
        ) from None


def _variable(loc: Loc) -> Place:
    """The variable that sets the field at *loc* (the file's values are checked where read)."""
    key = str(loc[0]) if loc else ""
    field = AirbyteSettings.model_fields.get(key)
    alias = field.validation_alias if field is not None else None
    name = alias.choices[0] if isinstance(alias, AliasChoices) else key
    return env_var(name if isinstance(name, str) else key, secret=key in _SECRET_FIELDS)


def register_env_secrets(environ: Mapping[str, str]) -> None:
    """Have :func:`~airbyte_fleet._redact.redact` mask the secret variables of *environ* now,
    before anything (a bad value, a bad URL) can end up in a message."""
    names: set[str] = set()
    for key in _SECRET_FIELDS:
        alias = AirbyteSettings.model_fields[key].validation_alias
        if isinstance(alias, AliasChoices):
            names.update(c.upper() for c in alias.choices if isinstance(c, str))
    for name, value in environ.items():
        # pydantic-settings reads these case-insensitively, so match the same way.
        if name.upper() in names:
            register_secret(value)
