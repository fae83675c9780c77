"""Settings from the environment (and, below it, a TOML file), named as Paradime's integration page names them.

``AIRBYTE_BASE_URL`` (or ``AIRBYTE_HOST``), ``AIRBYTE_CLIENT_ID``, ``AIRBYTE_CLIENT_SECRET``,
``USE_SERVER_AUTH``, ``AIRBYTE_AUTH_TYPE`` work exactly as written there; ``AIRBYTE_API_TOKEN``,
``AIRBYTE_USERNAME``/``AIRBYTE_PASSWORD`` and the timeouts are ours.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, TypedDict, Unpack, get_args
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from airbyte_fleet._logging import get_logger
from airbyte_fleet._messages import show
from airbyte_fleet._redact import MIN_SECRET_LENGTH, register_secret
from airbyte_fleet._validation import Loc, Place, Where, config_error, env_var, in_table, invalid
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
from airbyte_fleet.engine.options import Duration
from airbyte_fleet.errors import ConfigError

__all__ = [
    "DATABASE_URL_ENV",
    "LEASE_ENV",
    "AirbyteSettings",
    "AirbyteSettingsArgs",
    "StoreSettings",
    "load_settings",
    "register_env_secrets",
    "register_url_secrets",
]

AUTH_MODES: tuple[str, ...] = get_args(AuthMode)
_SECRET_FIELDS = ("client_secret", "api_token", "password")
_CREDENTIALS = ("client_id", "client_secret", "api_token", "username", "password")

log = get_logger("airbyte_fleet.config")


class _Layered(PydanticBaseSettingsSource):
    """The values passed in (the TOML file's ``[airbyte]``) under the documented variables.

    The one source of :class:`AirbyteSettings`, so that precedence is one rule, :func:`_layered`,
    applied the same way to every key. It reads exactly the documented variables (AIRBYTE_*,
    USE_SERVER_AUTH): pydantic-settings' own environment source also reads a field's plain name
    when ``populate_by_name`` is on, so USERNAME or READ_TIMEOUT from an unrelated tool would leak
    in.
    """

    def __init__(self, settings_cls: type[BaseSettings], passed: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self._passed = passed

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        # pydantic-settings hands the values passed in back keyed by alias (AIRBYTE_CLIENT_ID):
        # keyed by field name here, the two layers cannot both reach the model.
        names = _field_names(self.settings_cls)
        passed = {names.get(key.lower(), key): value for key, value in self._passed().items()}
        layers = _layered(passed, _documented(self.settings_cls, os.environ))
        return {key: value for key, (value, _) in layers.items()}


def _field_names(settings: type[BaseSettings]) -> dict[str, str]:
    """Each field's name and documented variable, lower-cased, to the field's name."""
    names: dict[str, str] = {}
    for key, field in settings.model_fields.items():
        names[key.lower()] = key
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update({str(choice).lower(): key for choice in alias.choices})
    return names


def _documented(settings: type[BaseSettings], environ: Mapping[str, str]) -> dict[str, Any]:
    """The fields *environ* sets through their documented variables, as written there.

    A blank variable is not set: ``AIRBYTE_HOST=`` in a .env file or a CI secret that expands to
    nothing must not hide the file's value."""
    upper = {name.upper(): value for name, value in environ.items()}
    values: dict[str, Any] = {}
    for key in settings.model_fields:
        name = _variable_name(settings, key)
        if name in upper and upper[name].strip():
            values[key] = upper[name]
    return values


def _variable_name(settings: type[BaseSettings], key: str) -> str:
    alias = settings.model_fields[key].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0].upper()
    return key.upper()


# Where one setting's value came from: its variable, or None for the value passed in (the file).
_Layers = dict[str, tuple[Any, str | None]]
# One setting spelt two ways: AIRBYTE_BASE_URL wins over AIRBYTE_HOST within a layer.
_URL_KEYS = ("base_url", "host")


def _layered(passed: Mapping[str, Any], env: Mapping[str, Any]) -> _Layers:
    """Every setting's value and where it came from. One rule for every key: a documented
    variable that is set wins over the value passed in. The URL is one setting with two names,
    so a URL in the environment (either name) replaces both of the file's."""
    layers: _Layers = {key: (value, None) for key, value in passed.items()}
    if any(key in env for key in _URL_KEYS):
        for key in _URL_KEYS:
            layers.pop(key, None)
    for key, value in env.items():
        layers[key] = (value, _variable_name(AirbyteSettings, key))
    return layers


def _env(name: str) -> AliasChoices:
    # Only the documented variable is read from the environment: an alias like "username" would
    # also make pydantic-settings read USERNAME (set by every Windows shell) or READ_TIMEOUT.
    # The field name itself still works for values passed in (the TOML file), via
    # populate_by_name.
    return AliasChoices(name)


class AirbyteSettingsArgs(TypedDict, total=False):
    """:class:`AirbyteSettings`' fields as keyword arguments, typed for checkers: secrets as
    plain text too."""

    base_url: str | None
    host: str | None
    client_id: str | None
    client_secret: SecretStr | str | None
    use_server_auth: bool
    auth_type: str | None
    api_token: SecretStr | str | None
    username: str | None
    password: SecretStr | str | None
    connect_timeout: float
    read_timeout: float
    retry_attempts: int
    retry_timeout: float
    retry_wait_initial: float
    retry_wait_max: float
    retry_wait_jitter: float
    max_connections: int


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

    if TYPE_CHECKING:

        def __init__(self, **fields: Unpack[AirbyteSettingsArgs]) -> None: ...

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (_Layered(settings_cls, init_settings),)

    @field_validator("base_url", "host", "client_id", "auth_type", "username", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `AIRBYTE_HOST=` in a .env file or a CI secret that expands to nothing means "not set".
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("client_secret", "api_token", "password", mode="before")
    @classmethod
    def _trimmed_secret(cls, value: Any) -> Any:
        # A secret pasted with a trailing newline gets a bare 401 from Airbyte; no real secret
        # starts or ends with whitespace. load_settings() says so in a warning.
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            return raw.strip() or None
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
    """Read the environment over *file_values* (the file's ``[airbyte]``), key by key; any
    invalid value becomes one :class:`ConfigError` naming where it came from."""
    values = dict(file_values or {})
    # Before validating: a message about another value must never show a secret, even one pasted
    # into the wrong variable (AIRBYTE_READ_TIMEOUT=<the client secret>).
    register_env_secrets(os.environ)
    for key in _SECRET_FIELDS:
        if isinstance(values.get(key), str):
            register_secret(values[key])
    # The same rule the model's source applies, to know which layer each value came from.
    layers = _layered(values, _documented(AirbyteSettings, os.environ))
    _warn_about_credentials(layers)
    try:
        return AirbyteSettings(**values)
    except ValidationError as exc:
        given = {key: value for key, (value, _) in layers.items()}
        raise config_error(exc, _origin(layers), given) from None


def _origin(layers: _Layers) -> Where:
    """Where the value at an error's location came from: its variable, or the file."""
    in_file = in_table("the config file", "[airbyte]", AirbyteSettings)

    def where(loc: Loc) -> Place:
        key = str(loc[0]) if loc else ""
        variable = layers.get(key, (None, None))[1]
        if variable is None:
            return in_file(loc)
        return env_var(variable, secret=key in _SECRET_FIELDS)

    return where


def _warn_about_credentials(layers: _Layers) -> None:
    """Say what was done to, or cannot be done for, a credential, without showing it."""
    for key in _CREDENTIALS:
        value, variable = layers.get(key, (None, None))
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str) or not raw.strip():
            continue
        where = variable or f"{key} in [airbyte] of the config file"
        if raw != raw.strip():
            log.warning(
                "credential_trimmed",
                setting=where,
                message=f"{where} starts or ends with a space or line break; it was removed, "
                "since Airbyte would refuse the credentials with it.",
            )
        if key in _SECRET_FIELDS and len(raw.strip()) < MIN_SECRET_LENGTH:
            log.warning(
                "credential_too_short",
                setting=where,
                message=f"{where} is shorter than {MIN_SECRET_LENGTH} characters, too short to "
                "be masked in log lines and messages; use a longer one.",
            )


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


# ----------------------------------------------------------------------------- the run store

DATABASE_URL_ENV = "AIRBYTE_FLEET_DATABASE_URL"
LEASE_ENV = "AIRBYTE_FLEET_LEASE"
_URL_SCHEMES = ("postgresql", "postgres")
_URL_FIX = (
    "write it as postgresql://USER:PASSWORD@HOST:PORT/DATABASE, or leave it out to keep runs in "
    "the SQLite journal of the state directory"
)


def register_url_secrets(url: str) -> None:
    """Have :func:`~airbyte_fleet._redact.redact` mask the password a database URL carries (in
    its user part or as ``?password=``) before anything can quote the URL."""
    try:
        parts = urlsplit(url.strip())
        passwords = [parts.password, *parse_qs(parts.query).get("password", [])]
    except ValueError:
        # Not a URL at all (the check below says so); the whole text may be the secret.
        passwords = [url.strip()]
    for password in passwords:
        if password and not register_secret(password):
            log.warning(
                "database_password_too_short",
                message=f"The database password is shorter than {MIN_SECRET_LENGTH} characters, "
                "too short to be masked in log lines and messages; use a longer one.",
            )


def _postgres_url(value: SecretStr | None) -> SecretStr | None:
    if value is None:
        return None
    url = value.get_secret_value().strip()
    if not url:
        return None  # blank is unset, as for every variable
    register_url_secrets(url)
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme not in _URL_SCHEMES:
        # Never quoted: the text may hold a password.
        raise invalid("it is not a postgresql:// URL", _URL_FIX)
    return SecretStr(url)


class StoreSettings(BaseModel):
    """Where runs are kept and how long a process's hold on a run lasts.

    With no ``database_url`` the runs live in the SQLite journal of the state directory, which
    several processes on one host share; with one, in PostgreSQL, which several hosts share. A
    process running a run renews its lease on it; a lease not renewed for ``lease`` passes to
    whoever asks next, so a crashed process's runs are carried on after at most that long.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A secret type: no message, log line or repr shows it (its password, above all).
    database_url: Annotated[SecretStr | None, AfterValidator(_postgres_url)] = Field(
        default=None,
        description="PostgreSQL shared by several workers (postgresql://USER:PASSWORD@HOST/DB)",
    )
    lease: Duration = Field(
        default=30.0,
        gt=0,
        description="how long a run stays held by a process that stopped renewing it "
        "(crashed or cut off)",
    )

    @property
    def url(self) -> str | None:
        """The database URL as given (with its password: only for opening the database)."""
        return None if self.database_url is None else self.database_url.get_secret_value()
