"""Precedence is one rule for every key and every command: flags > environment > config file >
defaults. The file's ``[airbyte]`` keys sit under their ``AIRBYTE_*`` variables in ``run``,
``serve`` and ``connections`` alike (issue 11.1), and the file is found by ``--config``, else
``AIRBYTE_FLEET_CONFIG``, else ``config/airbyte-fleet.toml`` (issue 11.14)."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import structlog

from airbyte_fleet.cli import main
from airbyte_fleet.cli.commands import COMMANDS
from airbyte_fleet.cli.parser import build_parser
from airbyte_fleet.config import AirbyteSettings
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.service import ServeOptions, launch
from airbyte_fleet.settings_file import load_file_config
from conftest import SimFactory

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "airbyte-fleet.example.toml"
SECRET = "prec-Secret-4242-abcd"
# Nothing listens on port 9 (discard) of the loopback address: a file pointing there is never used.
NOWHERE = "http://127.0.0.1:9"

# (field, its variable, the file's value, the variable's text, the value the settings must hold)
KEYS: list[tuple[str, str, Any, str, Any]] = [
    ("base_url", "AIRBYTE_BASE_URL", "http://file-airbyte:8000", "http://env-airbyte:8000", None),
    ("host", "AIRBYTE_HOST", "http://file-host:8000", "http://env-host:8000", None),
    ("client_id", "AIRBYTE_CLIENT_ID", "file-id", "env-id", None),
    ("client_secret", "AIRBYTE_CLIENT_SECRET", "file-secret-1", "env-secret-1", None),
    ("use_server_auth", "USE_SERVER_AUTH", True, "false", False),
    ("auth_type", "AIRBYTE_AUTH_TYPE", "bearer", "none", None),
    ("api_token", "AIRBYTE_API_TOKEN", "file-token-1", "env-token-1", None),
    ("username", "AIRBYTE_USERNAME", "file-user", "env-user", None),
    ("password", "AIRBYTE_PASSWORD", "file-pass-1", "env-pass-1", None),
    ("connect_timeout", "AIRBYTE_CONNECT_TIMEOUT", 11, "12", 12.0),
    ("read_timeout", "AIRBYTE_READ_TIMEOUT", 121, "122", 122.0),
    ("retry_attempts", "AIRBYTE_RETRY_ATTEMPTS", 3, "4", 4),
    ("retry_timeout", "AIRBYTE_RETRY_TIMEOUT", 301, "302", 302.0),
    ("retry_wait_initial", "AIRBYTE_RETRY_WAIT_INITIAL", 0.1, "0.2", 0.2),
    ("retry_wait_max", "AIRBYTE_RETRY_WAIT_MAX", 31, "32", 32.0),
    ("retry_wait_jitter", "AIRBYTE_RETRY_WAIT_JITTER", 0.5, "0.25", 0.25),
    ("max_connections", "AIRBYTE_MAX_CONNECTIONS", 50, "60", 60),
]


def test_every_airbyte_key_is_in_the_matrix() -> None:
    assert {key for key, *_ in KEYS} == set(AirbyteSettings.model_fields)


def _toml(values: dict[str, Any]) -> str:
    return "[airbyte]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in values.items()
    )


def _plain(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith(("AIRBYTE_", "USE_SERVER_AUTH")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no config/airbyte-fleet.toml of the checkout is read
    return monkeypatch


class _Opened(Exception):
    """Raised where a command would open the client: the settings it would open it with."""

    def __init__(self, settings: AirbyteSettings) -> None:
        super().__init__("opened")
        self.settings = settings


@pytest.fixture
def stop_at_open(clean_env: pytest.MonkeyPatch) -> None:
    # Everything up to here is the command's own path (parser, file, environment, layering);
    # opening the client is where the network would start, and all three commands do it through
    # runner.open_client, wherever they import it from.
    async def opened(settings: AirbyteSettings, **_: Any) -> None:
        raise _Opened(settings)

    for module in (
        "airbyte_fleet.runner",
        "airbyte_fleet.runner.client",
        "airbyte_fleet.cli.commands",
        "airbyte_fleet.service.app",
    ):
        clean_env.setattr(f"{module}.open_client", opened, raising=False)


def _argv(command: str, config: Path, state: Path) -> list[str]:
    if command == "run":
        return ["run", "--all", "--dry-run", "--config", str(config), "--state-dir", str(state)]
    if command == "serve":
        return ["serve", "--port", "0", "--config", str(config), "--state-dir", str(state)]
    return ["connections", "--config", str(config)]


async def _settings_of(command: str, config: Path, state: Path) -> AirbyteSettings:
    args = build_parser().parse_args(_argv(command, config, state))
    with pytest.raises(_Opened) as opened:
        await COMMANDS[command](args)
    return opened.value.settings


@pytest.mark.anyio
@pytest.mark.parametrize("command", ["run", "serve", "connections"])
@pytest.mark.parametrize(("key", "variable", "in_file", "in_env", "expected"), KEYS)
async def test_each_variable_wins_over_its_file_key_in_every_command(
    stop_at_open: None,
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
    key: str,
    variable: str,
    in_file: Any,
    in_env: str,
    expected: Any,
) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(_toml({key: in_file}))
    # What every case needs to get as far as opening: a URL, and no credentials to check.
    if key not in ("base_url", "host"):
        clean_env.setenv("AIRBYTE_BASE_URL", NOWHERE)
    if key != "auth_type":
        clean_env.setenv("AIRBYTE_AUTH_TYPE", "none")
    clean_env.setenv(variable, in_env)

    settings = await _settings_of(command, config, tmp_path / "state")
    assert _plain(getattr(settings, key)) == (in_env if expected is None else expected)

    # And the file's value is read when the variable is not set: the file is not ignored.
    clean_env.delenv(variable)
    if key in ("base_url", "host"):
        pass  # the file's URL is the only one now
    elif key == "auth_type":
        config.write_text(_toml({key: in_file, "api_token": "file-token-1"}))
    settings = await _settings_of(command, config, tmp_path / "state")
    assert _plain(getattr(settings, key)) == in_file


@pytest.mark.anyio
@pytest.mark.parametrize("command", ["run", "serve", "connections"])
async def test_a_url_in_the_environment_replaces_both_url_keys_of_the_file(
    stop_at_open: None, clean_env: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(_toml({"base_url": "http://file-airbyte:8000"}))
    clean_env.setenv("AIRBYTE_HOST", "http://env-host:8000")  # the lesser name, but a variable
    clean_env.setenv("AIRBYTE_AUTH_TYPE", "none")
    settings = await _settings_of(command, config, tmp_path / "state")
    assert settings.url_plan().raw == "http://env-host:8000"


@pytest.mark.anyio
async def test_a_blank_variable_does_not_hide_the_file(
    stop_at_open: None, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(_toml({"base_url": "http://file-airbyte:8000", "client_id": "file-id"}))
    clean_env.setenv("AIRBYTE_BASE_URL", "  ")
    clean_env.setenv("AIRBYTE_CLIENT_ID", "")
    clean_env.setenv("AIRBYTE_AUTH_TYPE", "none")
    settings = await _settings_of("run", config, tmp_path / "state")
    assert (settings.base_url, settings.client_id) == ("http://file-airbyte:8000", "file-id")


# ----------------------------------------------------------------------------- as a user runs it


def _paradime(root: str) -> dict[str, str]:
    """Paradime's variables, exactly as its integration page writes them."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET=SECRET,
        USE_SERVER_AUTH="TRUE",
        AIRBYTE_AUTH_TYPE="client_credentials",
    )
    return env


def _contradicting_file(path: Path) -> Path:
    """The example, as a user who uncommented its [airbyte] keys would have it: another Airbyte,
    another application, and bearer auth."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('# base_url = "http://localhost:8000"', f'base_url = "{NOWHERE}"')
    text = text.replace("# client_id =", "client_id =").replace(
        '# client_secret = "..."', 'client_secret = "not-the-secret"'
    )
    text = text.replace('# auth_type = "client_credentials"', 'auth_type = "bearer"')
    text = text.replace("# use_server_auth = true", "use_server_auth = false")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    config = load_file_config(path)
    assert config.airbyte["client_secret"] == "not-the-secret"  # the file really contradicts
    return path


async def _cli(*args: str, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    result = await anyio.run_process(
        [sys.executable, "-m", "airbyte_fleet", *args], env=env, cwd=cwd, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def _token_clients(sim: Any) -> set[str]:
    return {
        json.loads(exchange.request_body)["client_id"]
        for exchange in sim.exchanges
        if exchange.path.endswith("/applications/token")
    }


@pytest.mark.anyio
@pytest.mark.parametrize("found_by", ["default path", "--config", "AIRBYTE_FLEET_CONFIG"])
async def test_paradime_variables_work_whatever_the_file_says(
    make_sim: SimFactory, tmp_path: Path, found_by: str
) -> None:
    sim, root = await make_sim(connections=4, client_secret=SECRET)
    env = _paradime(root) | {"AIRBYTE_FLEET_POLL_INTERVAL": "50ms"}  # over the file's 15s
    if found_by == "default path":
        config = _contradicting_file(tmp_path / "config" / "airbyte-fleet.toml")
        flag: tuple[str, ...] = ()
    elif found_by == "--config":
        config = _contradicting_file(tmp_path / "elsewhere.toml")
        flag = ("--config", str(config))
    else:
        config = _contradicting_file(tmp_path / "named.toml")
        env["AIRBYTE_FLEET_CONFIG"] = str(config)
        flag = ()

    code, out, err = await _cli("connections", "--output", "json", *flag, env=env, cwd=tmp_path)
    assert code == 0, err
    assert len(json.loads(out)) == 4
    code, out, err = await _cli("run", "--all", "--output", "json", *flag, env=env, cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out)["counts"]["succeeded"] == 4
    assert sim.count("POST", "/jobs") == 4
    assert _token_clients(sim) == {"sim-client"}
    # The file was read all the same (the log names it); only its [airbyte] keys lost.
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    (named,) = [line for line in lines if line["event"] == "config_file"]
    assert tmp_path / named["path"] == config  # relative to the working directory, or absolute
    assert SECRET not in out + err


@pytest.mark.anyio
async def test_serve_takes_paradime_variables_over_the_file(
    make_sim: SimFactory, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3, client_secret=SECRET)
    config = _contradicting_file(tmp_path / "config" / "airbyte-fleet.toml")
    for name, value in _paradime(root).items():
        if name.startswith(("AIRBYTE_", "USE_SERVER")):
            clean_env.setenv(name, value)
    options = ServeOptions.resolve(
        environ={}, host="127.0.0.1", port=0, config=str(config), state_dir=str(tmp_path / "s")
    )
    async with launch(options) as running, aiohttp.ClientSession() as http:
        body = {"selection": {"all": True}, "options": {"poll_interval": "50ms"}}
        async with http.post(f"{running.url}/runs", json=body) as reply:
            assert reply.status == 202, await reply.text()
            run_id = (await reply.json())["run_id"]
        with anyio.fail_after(20):
            while True:
                async with http.get(f"{running.url}/runs/{run_id}") as reply:
                    view = await reply.json()
                if view["state"] == "finished":
                    break
                await anyio.sleep(0.05)
    assert view["result"]["counts"]["succeeded"] == 3
    assert sim.count("POST", "/jobs") == 3
    assert _token_clients(sim) == {"sim-client"}


# ----------------------------------------------------------------------------- finding the file


@pytest.fixture
def logged(clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    def read() -> tuple[str, list[dict[str, Any]]]:
        err = capsys.readouterr().err
        lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        return err, lines

    yield read
    structlog.reset_defaults()  # main() pointed structlog at capsys's stream


def _schedule_file(path: Path, name: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'[schedules.{name}]\ncron = "0 2 * * *"\nall = true\n')
    return path


def test_the_file_is_flag_then_variable_then_default(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], logged: Any
) -> None:
    _schedule_file(tmp_path / "config" / "airbyte-fleet.toml", "default")
    named = _schedule_file(tmp_path / "named.toml", "named")
    flagged = _schedule_file(tmp_path / "flagged.toml", "flagged")

    def schedule_names(*args: str) -> list[str]:
        assert main(["schedules", "--output", "json", *args]) == 0
        rows = json.loads(capsys.readouterr().out)
        return [row["name"] for row in rows]

    assert schedule_names() == ["default"]
    clean_env.setenv("AIRBYTE_FLEET_CONFIG", str(named))
    assert schedule_names() == ["named"]
    assert schedule_names("--config", str(flagged)) == ["flagged"]
    clean_env.setenv("AIRBYTE_FLEET_CONFIG", "  ")  # blank is not set
    assert schedule_names() == ["default"]


def test_a_log_line_names_the_file_read(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, logged: Any
) -> None:
    named = _schedule_file(tmp_path / "named.toml", "named")
    clean_env.setenv("AIRBYTE_FLEET_CONFIG", str(named))
    assert main(["schedules"]) == 0
    _, lines = logged()
    (line,) = [line for line in lines if line["event"] == "config_file"]
    assert line["path"] == str(named)
    assert line["given_by"] == "AIRBYTE_FLEET_CONFIG"

    clean_env.delenv("AIRBYTE_FLEET_CONFIG")
    assert main(["schedules"]) == 0
    _, lines = logged()
    (line,) = [line for line in lines if line["event"] == "config_file"]
    assert line["path"] is None
    assert line["message"] == (
        "no config file: config/airbyte-fleet.toml does not exist; pass --config PATH or set "
        "AIRBYTE_FLEET_CONFIG to read one"
    )


def test_a_missing_file_named_by_the_variable_names_the_variable(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, logged: Any
) -> None:
    clean_env.setenv("AIRBYTE_FLEET_CONFIG", str(tmp_path / "nope.toml"))
    assert main(["schedules"]) == 2
    err, _ = logged()
    assert (
        f"Config file {tmp_path / 'nope.toml'} does not exist; check AIRBYTE_FLEET_CONFIG." in err
    )


def test_group_without_a_config_file_says_there_is_none(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, logged: Any
) -> None:
    clean_env.setenv("AIRBYTE_BASE_URL", NOWHERE)
    clean_env.setenv("AIRBYTE_AUTH_TYPE", "none")
    code = main(["run", "--group", "finance", "--state-dir", str(tmp_path / "state")])
    err, _ = logged()
    assert code == 2
    assert (
        "--group finance names a group of the config file, but there is none "
        "(config/airbyte-fleet.toml does not exist); pass --config PATH or set "
        "AIRBYTE_FLEET_CONFIG to read one."
    ) in err
    assert not (tmp_path / "state").exists()  # stopped before anything, the journal included


def test_the_example_config_is_found_and_copied_as_is_changes_no_airbyte_setting(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "config" / "airbyte-fleet.toml"
    target.parent.mkdir()
    shutil.copy(EXAMPLE, target)
    config = load_file_config(None)
    assert config.path == Path("config/airbyte-fleet.toml")
    for key in ("base_url", "host", "client_id", "client_secret", "api_token", "auth_type"):
        assert key not in config.airbyte


# ----------------------------------------------------------------------------- where runs are kept

# (field, its variable, its flag, the file's TOML value, the variable's text, the flag's text,
#  what the file, the variable and the flag each make of it)
STORE_KEYS: list[tuple[str, str, str, str, str, str, tuple[Any, Any, Any]]] = [
    (
        "database_url",
        "AIRBYTE_FLEET_DATABASE_URL",
        "--database-url",
        '"postgresql://fleet:FILEPW-1234@file-db/runs"',
        "postgresql://fleet:ENVPW-1234@env-db/runs",
        "postgres://fleet:FLAGPW-1234@flag-db/runs",
        (
            "postgresql://fleet:FILEPW-1234@file-db/runs",
            "postgresql://fleet:ENVPW-1234@env-db/runs",
            "postgres://fleet:FLAGPW-1234@flag-db/runs",
        ),
    ),
    ("lease", "AIRBYTE_FLEET_LEASE", "--lease", '"1m"', "45s", "20s", (60.0, 45.0, 20.0)),
]


def _store_of(command: str, config: Path, flags: list[str], environ: dict[str, str]) -> Any:
    """The store settings *command* resolves from its flags, *environ* and the file."""
    from airbyte_fleet.cli.store import StorePlace

    argv = [command, "--config", str(config), *flags]
    if command == "serve":
        args = build_parser().parse_args(argv)
        options = ServeOptions.resolve(
            environ=environ,
            config=args.config,
            database_url=args.database_url,
            lease=args.lease,
        )
        return options.database_url, options.lease
    args = build_parser().parse_args([*argv, "--all"] if command == "run" else argv)
    place = StorePlace(args, load_file_config(args.config), environ=environ)
    return place.url, place.settings.lease


@pytest.mark.parametrize(
    ("command", "key", "variable", "option", "in_file", "in_env", "in_flag", "expected"),
    [
        (command, *case)
        for case in STORE_KEYS
        # Every command that opens the store reads where it is; those running runs, the lease.
        for command in ("run", "serve", "runs", "migrate")
        if case[0] == "database_url" or command in ("run", "serve")
    ],
)
def test_store_keys_are_flag_then_variable_then_file_then_default(
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
    key: str,
    variable: str,
    option: str,
    in_file: str,
    in_env: str,
    in_flag: str,
    expected: tuple[Any, Any, Any],
) -> None:
    index = 0 if key == "database_url" else 1
    default = (None, 30.0)[index]
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    config = tmp_path / "fleet.toml"
    config.write_text(f"{key} = {in_file}\n\n[run]\nretries = 1\n")

    assert _store_of(command, empty, [], {})[index] == default
    assert _store_of(command, config, [], {})[index] == expected[0]
    assert _store_of(command, config, [], {variable: "  "})[index] == expected[0]
    assert _store_of(command, config, [], {variable: in_env})[index] == expected[1]
    flags = [option, in_flag]
    assert _store_of(command, config, flags, {variable: in_env})[index] == expected[2]


@pytest.mark.parametrize(
    ("flags", "environ", "text", "fragment"),
    [
        (["--database-url", "mysql://u:BADPW-1234@h/x"], {}, "", "--database-url is invalid"),
        ([], {"AIRBYTE_FLEET_DATABASE_URL": "mysql://u:BADPW-1234@h/x"}, "", "DATABASE_URL is"),
        ([], {}, "database_url = 'sqlite:///BADPW-1234'\n", "Key database_url in"),
        (["--database-url", " "], {}, "", "--database-url needs a postgresql:// URL"),
        (["--lease", "0"], {}, "", "--lease is invalid (it should be greater than 0)"),
        ([], {"AIRBYTE_FLEET_LEASE": "soon"}, "", "AIRBYTE_FLEET_LEASE='soon' is invalid"),
    ],
)
def test_a_bad_store_setting_is_one_sentence_naming_where_it_came_from(
    clean_env: pytest.MonkeyPatch,
    tmp_path: Path,
    flags: list[str],
    environ: dict[str, str],
    text: str,
    fragment: str,
) -> None:
    config = tmp_path / "fleet.toml"
    config.write_text(text)
    for command in ("run", "serve"):
        with pytest.raises(ConfigError) as caught:
            _store_of(command, config, flags, environ)
        message = caught.value.message
        assert fragment in message, message
        assert "BADPW-1234" not in message
        assert "\n" not in message
