"""Configuration from the environment, named as Paradime's integration page names it."""

from __future__ import annotations

import json
import os
import sys

import anyio
import pytest
import structlog
from pydantic import SecretStr

from airbyte_fleet.api import (
    BasicAuth,
    BearerToken,
    ClientCredentials,
    NoAuth,
    plan_url,
)
from airbyte_fleet.config import AirbyteSettings, load_settings
from airbyte_fleet.errors import ConfigError
from conftest import SimFactory

ALL_VARS = [
    "AIRBYTE_BASE_URL",
    "AIRBYTE_HOST",
    "AIRBYTE_CLIENT_ID",
    "AIRBYTE_CLIENT_SECRET",
    "USE_SERVER_AUTH",
    "AIRBYTE_AUTH_TYPE",
    "AIRBYTE_API_TOKEN",
    "AIRBYTE_USERNAME",
    "AIRBYTE_PASSWORD",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)


def _set(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({"AIRBYTE_CLIENT_ID": "id", "AIRBYTE_CLIENT_SECRET": "secret1"}, "client_credentials"),
        (
            {
                "AIRBYTE_BASE_URL": "http://a:8000",
                "USE_SERVER_AUTH": "TRUE",
                "AIRBYTE_CLIENT_ID": "id",
                "AIRBYTE_CLIENT_SECRET": "secret1",
            },
            "client_credentials",
        ),
        ({"AIRBYTE_API_TOKEN": "tok-123456"}, "bearer"),
        ({"AIRBYTE_USERNAME": "airbyte", "AIRBYTE_PASSWORD": "password"}, "basic"),
        ({"AIRBYTE_BASE_URL": "http://a:8000"}, "none"),
        (
            {
                "AIRBYTE_AUTH_TYPE": "client_credentials",
                "AIRBYTE_CLIENT_ID": "id",
                "AIRBYTE_CLIENT_SECRET": "secret1",
                "AIRBYTE_API_TOKEN": "tok-123456",
            },
            "client_credentials",
        ),
        (
            {
                "AIRBYTE_AUTH_TYPE": "BEARER",
                "AIRBYTE_API_TOKEN": "tok-123456",
                "AIRBYTE_USERNAME": "u",
                "AIRBYTE_PASSWORD": "p4ss",
            },
            "bearer",
        ),
        ({"AIRBYTE_AUTH_TYPE": "none", "AIRBYTE_CLIENT_ID": "ignored-id"}, "none"),
    ],
)
def test_auth_mode_is_explicit_or_inferred(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], mode: str
) -> None:
    _set(monkeypatch, **env)
    assert load_settings().auth_mode() == mode


@pytest.mark.parametrize("value", ["TRUE", "true", "1", "yes", "True"])
def test_use_server_auth_spellings(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    _set(
        monkeypatch,
        AIRBYTE_BASE_URL="http://airbyte:8000",
        USE_SERVER_AUTH=value,
        AIRBYTE_CLIENT_ID="id",
        AIRBYTE_CLIENT_SECRET="secret1",
    )
    settings = load_settings()
    assert settings.use_server_auth is True
    api = settings.url_plan().candidates[0]
    auth = settings.make_auth(api)
    assert isinstance(auth, ClientCredentials)
    # The server's own token endpoint, not Cloud's.
    assert auth.token_url == "http://airbyte:8000/api/public/v1/applications/token"


def test_each_mode_builds_its_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    api = plan_url("http://a:8000").candidates[0]
    cases = [
        ({"AIRBYTE_API_TOKEN": "tok-123456"}, BearerToken),
        ({"AIRBYTE_USERNAME": "airbyte", "AIRBYTE_PASSWORD": "password"}, BasicAuth),
        ({}, NoAuth),
    ]
    for env, kind in cases:
        for name in ALL_VARS:
            monkeypatch.delenv(name, raising=False)
        _set(monkeypatch, **env)
        assert isinstance(load_settings().make_auth(api), kind)


def test_base_url_wins_over_host(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, AIRBYTE_BASE_URL="http://a:8000", AIRBYTE_HOST="http://b:8006")
    assert load_settings().url_plan().candidates[0].base == "http://a:8000/api/public/v1"
    monkeypatch.delenv("AIRBYTE_BASE_URL")
    assert load_settings().url_plan().candidates[0].base == "http://b:8006/v1"


def test_environment_overrides_file_values(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, AIRBYTE_BASE_URL="http://env:8000")
    settings = load_settings({"base_url": "http://file:8000", "read_timeout": 5})
    assert settings.base_url == "http://env:8000"
    assert settings.read_timeout == 5


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"AIRBYTE_CLIENT_ID": "id"}, "AIRBYTE_CLIENT_SECRET is not set"),
        ({"AIRBYTE_CLIENT_SECRET": "secret1"}, "AIRBYTE_CLIENT_ID is not set"),
        (
            {"USE_SERVER_AUTH": "TRUE", "AIRBYTE_BASE_URL": "http://a:8000"},
            "USE_SERVER_AUTH=TRUE needs AIRBYTE_CLIENT_ID and AIRBYTE_CLIENT_SECRET",
        ),
        ({"AIRBYTE_AUTH_TYPE": "bearer"}, "AIRBYTE_API_TOKEN is not set"),
        ({"AIRBYTE_AUTH_TYPE": "basic", "AIRBYTE_USERNAME": "u"}, "AIRBYTE_PASSWORD is not set"),
        ({"AIRBYTE_AUTH_TYPE": "oauth2"}, "AIRBYTE_AUTH_TYPE='oauth2' is not one of"),
        ({"USE_SERVER_AUTH": "maybe"}, "USE_SERVER_AUTH='maybe' is invalid"),
        ({"AIRBYTE_READ_TIMEOUT": "-1"}, "AIRBYTE_READ_TIMEOUT='-1' is invalid"),
    ],
)
def test_incomplete_configuration_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fragment: str
) -> None:
    _set(monkeypatch, **env)
    with pytest.raises(ConfigError) as info:
        load_settings().validate_offline()
    assert fragment in info.value.message
    assert "\n" not in info.value.message


def test_server_auth_without_url_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, USE_SERVER_AUTH="yes", AIRBYTE_CLIENT_ID="id", AIRBYTE_CLIENT_SECRET="s3cr3t")
    with pytest.raises(ConfigError, match="set AIRBYTE_BASE_URL"):
        load_settings().url_plan()


def test_cloud_without_credentials_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    api = settings.url_plan().candidates[0]
    with pytest.raises(ConfigError, match="AIRBYTE_CLIENT_ID and AIRBYTE_CLIENT_SECRET"):
        settings.make_auth(api)


def test_secrets_do_not_show_in_reprs_or_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(
        monkeypatch,
        AIRBYTE_CLIENT_ID="id",
        AIRBYTE_CLIENT_SECRET="s3cr3t-value",
        AIRBYTE_PASSWORD="pa55word-value",
        AIRBYTE_API_TOKEN="tok-value-123",
    )
    settings = load_settings()
    text = (
        repr(settings) + str(settings) + repr(settings.make_auth(settings.url_plan().candidates[0]))
    )
    for secret in ("s3cr3t-value", "pa55word-value", "tok-value-123"):
        assert secret not in text
    monkeypatch.setenv("AIRBYTE_CONNECT_TIMEOUT", "s3cr3t-value")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "s3cr3t-value" not in info.value.message


def test_either_url_variable_overrides_the_files_url(monkeypatch: pytest.MonkeyPatch) -> None:
    _set(monkeypatch, AIRBYTE_HOST="http://env-host:8006")
    settings = load_settings({"base_url": "http://file-host:8000"})
    assert settings.url_plan().candidates[0].base == "http://env-host:8006/v1"


# ----------------------------------------------------------------------------- credentials as pasted

_CREDENTIAL_VARS = {
    "client_id": "AIRBYTE_CLIENT_ID",
    "client_secret": "AIRBYTE_CLIENT_SECRET",
    "api_token": "AIRBYTE_API_TOKEN",
    "username": "AIRBYTE_USERNAME",
    "password": "AIRBYTE_PASSWORD",
}


def _value(settings: AirbyteSettings, key: str) -> object:
    value = getattr(settings, key)
    return value.get_secret_value() if isinstance(value, SecretStr) else value


@pytest.mark.parametrize("key", list(_CREDENTIAL_VARS))
@pytest.mark.parametrize("pasted", ["cr3d-value\n", " cr3d-value", "\tcr3d-value \r\n"])
def test_whitespace_around_a_credential_is_removed_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, key: str, pasted: str
) -> None:
    variable = _CREDENTIAL_VARS[key]
    for source, place in (("env", variable), ("file", f"{key} in [airbyte] of the config file")):
        if source == "env":
            monkeypatch.setenv(variable, pasted)
            file_values = {}
        else:
            monkeypatch.delenv(variable)
            file_values = {key: pasted}
        with structlog.testing.capture_logs() as logs:
            settings = load_settings(file_values)
        assert _value(settings, key) == "cr3d-value"
        assert logs == [
            {
                "event": "credential_trimmed",
                "log_level": "warning",
                "setting": place,
                "message": f"{place} starts or ends with a space or line break; it was removed, "
                "since Airbyte would refuse the credentials with it.",
            }
        ]


def test_a_credential_without_whitespace_is_not_warned_about(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _set(monkeypatch, AIRBYTE_CLIENT_ID="id-1", AIRBYTE_CLIENT_SECRET="secret-1")
    with structlog.testing.capture_logs() as logs:
        load_settings({"password": "file-pass-1"})
    assert logs == []


@pytest.mark.parametrize("key", ["client_secret", "api_token", "password"])
def test_a_secret_too_short_to_be_masked_is_warned_about(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv(_CREDENTIAL_VARS[key], "ab3")
    with structlog.testing.capture_logs() as logs:
        load_settings()
    (warning,) = logs
    assert warning["event"] == "credential_too_short"
    assert warning["setting"] == _CREDENTIAL_VARS[key]
    assert "ab3" not in str(warning)


def test_a_bad_file_value_is_named_where_it_was_written(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"read_timeout": "soon"})
    assert info.value.message.startswith(
        "Key read_timeout='soon' in [airbyte] of the config file is invalid"
    )
    monkeypatch.setenv("AIRBYTE_READ_TIMEOUT", "later")
    with pytest.raises(ConfigError) as info:
        load_settings({"read_timeout": 5})
    assert info.value.message.startswith("AIRBYTE_READ_TIMEOUT='later' is invalid")


def test_a_long_secret_in_the_wrong_variable_does_not_show_even_in_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "a-long-client-secret-" + "x" * 60  # longer than a quoted value may be
    _set(monkeypatch, AIRBYTE_CLIENT_SECRET=secret, AIRBYTE_READ_TIMEOUT=secret)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.message.startswith("AIRBYTE_READ_TIMEOUT='***' is invalid")
    assert "a-long-client" not in info.value.message


@pytest.mark.anyio
async def test_a_secret_pasted_with_a_newline_logs_in(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, client_secret="sim-Secret-42")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client\n",
        AIRBYTE_CLIENT_SECRET="sim-Secret-42\n",
    )
    result = await anyio.run_process(
        [sys.executable, "-m", "airbyte_fleet", "connections", "--output", "json"],
        env=env,
        check=False,
    )
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert len(json.loads(result.stdout)) == len(sim.connections)
    lines = [json.loads(line) for line in err.splitlines()]
    trimmed = [line["setting"] for line in lines if line["event"] == "credential_trimmed"]
    assert trimmed == ["AIRBYTE_CLIENT_ID", "AIRBYTE_CLIENT_SECRET"]
    assert "sim-Secret-42" not in err
