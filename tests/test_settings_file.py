"""The TOML config file: parsing, precedence with env and flags, and one-line errors."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airbyte_fleet.engine.options import Group, RunOptions, Selection
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.resolve import (
    file_groups,
    file_selection,
    merge_run_options,
    run_overrides_from_env,
)
from airbyte_fleet.settings_file import FileConfig, load_file_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "airbyte-fleet.example.toml"
WS = "a1b2c3d4-0000-4000-8000-000000000001"
CONN = "9f0e8d7c-0000-4000-8000-00000000000a"


def _write(tmp_path: Path, text: str, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _error(path: str | Path | None, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load_file_config(path, **kwargs)
    message = caught.value.message
    assert "\n" not in message
    assert "Traceback" not in message
    assert "validation error" not in message  # no pydantic dump
    return message


# ----------------------------------------------------------------------------- parsing


def test_example_file_uses_every_section_and_loads() -> None:
    config = load_file_config(EXAMPLE)
    assert config.path == EXAMPLE
    # Copied as it is, the example names no Airbyte and no credentials: those come from the
    # environment (Paradime's variables), which it must never contradict.
    assert set(config.airbyte) == {"connect_timeout", "read_timeout", "max_connections"}
    # Runs stay in the state directory unless a database is named (best in the environment).
    assert config.database_url is None
    assert config.lease == 30.0
    assert set(config.run) == set(RunOptions.model_fields)
    assert file_selection(config) == Selection(tags=["nightly"])
    assert set(config.groups) == {"finance", "warehouse", "month-end", "reverse-etl"}
    assert file_groups(config)["month-end"].groups == ["finance", "warehouse"]
    assert file_groups(config)["reverse-etl"] == Group(
        tags=["reverse-etl"], after=["warehouse"], on_upstream_failure="skip"
    )
    assert config.schedules["nightly"]["cron"] == "0 2 * * *"
    assert config.schedules["nightly"]["groups"] == ["warehouse"]
    # The worker reads schedules with its own parser; the example must pass it.
    from airbyte_fleet.service.schedules import parse_schedules

    (nightly,) = parse_schedules(config.schedules, source=str(EXAMPLE), groups=config.groups)
    assert nightly.timezone == "Europe/Berlin"
    options = merge_run_options(config.run, {})
    assert options.poll_interval == 15.0
    assert options.timeout == 45 * 60.0
    assert options.deadline == 4 * 3600.0
    assert options.max_concurrency == 50


def test_the_examples_commented_out_airbyte_keys_are_valid(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    uncommented = re.sub(r"(?m)^# (\w+ = .*)$", r"\1", text)
    config = load_file_config(_write(tmp_path, uncommented))
    assert config.airbyte["base_url"] == "http://localhost:8000"
    assert {"client_id", "client_secret", "auth_type", "use_server_auth"} <= set(config.airbyte)
    assert config.database_url is not None
    assert config.database_url.get_secret_value().startswith("postgresql://")


def test_sections_are_parsed(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"""
[airbyte]
base_url = "http://airbyte:8000"
client_id = "abc"
use_server_auth = true

[run]
max_concurrency = 50
poll_interval = "15s"

[selection]
tags = ["nightly", "hourly,finance"]

[groups.finance]
tags = ["finance"]
connections = ["{CONN}"]

[groups.ws]
workspaces = "{WS}"

[schedules.nightly]
cron = "0 2 * * *"
extra = {{ anything = [1, 2] }}
""",
    )
    config = load_file_config(path)
    assert config.airbyte == {
        "base_url": "http://airbyte:8000",
        "client_id": "abc",
        "use_server_auth": True,
    }
    # Every table stays as written: plain data, which resolve.py turns into engine options
    # ([run] only after flags and env are merged over it).
    assert config.run == {"max_concurrency": 50, "poll_interval": "15s"}
    assert config.selection == {"tags": ["nightly", "hourly,finance"]}
    assert config.groups == {
        "finance": {"tags": ["finance"], "connections": [CONN]},
        "ws": {"workspaces": WS},
    }
    assert file_selection(config).tags == ["nightly", "hourly", "finance"]
    assert file_groups(config) == {
        "finance": Group(tags=["finance"], connections=[CONN]),
        "ws": Group(workspaces=[WS]),
    }
    assert config.schedules["nightly"] == {"cron": "0 2 * * *", "extra": {"anything": [1, 2]}}


def test_empty_file_is_an_empty_config(tmp_path: Path) -> None:
    config = load_file_config(_write(tmp_path, "# nothing yet\n"))
    assert config.model_dump(exclude={"path"}) == FileConfig().model_dump(exclude={"path"})


def test_default_path_is_used_only_when_it_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_file_config(None) == FileConfig()
    (tmp_path / "config").mkdir()
    _write(tmp_path / "config", "[run]\nretries = 2\n", name="airbyte-fleet.toml")
    config = load_file_config(None)
    assert config.run == {"retries": 2}
    assert config.path == Path("config/airbyte-fleet.toml")


def test_default_path_can_be_changed(tmp_path: Path) -> None:
    path = _write(tmp_path, "[run]\nretries = 3\n")
    assert load_file_config(None, default_path=path).run == {"retries": 3}
    assert load_file_config(None, default_path=tmp_path / "absent.toml").path is None


def test_the_variable_names_the_file_below_the_flag(tmp_path: Path) -> None:
    named = _write(tmp_path, "[run]\nretries = 4\n", name="named.toml")
    flagged = _write(tmp_path, "[run]\nretries = 5\n", name="flagged.toml")
    default = _write(tmp_path, "[run]\nretries = 6\n", name="default.toml")
    env = {"AIRBYTE_FLEET_CONFIG": str(named)}
    assert load_file_config(None, default_path=default, environ=env).run == {"retries": 4}
    assert load_file_config(flagged, default_path=default, environ=env).run == {"retries": 5}
    blank = {"AIRBYTE_FLEET_CONFIG": " "}
    assert load_file_config(None, default_path=default, environ=blank).run == {"retries": 6}


def test_a_file_the_variable_names_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    env = {"AIRBYTE_FLEET_CONFIG": str(missing)}
    assert _error(None, environ=env) == (
        f"Config file {missing} does not exist; check AIRBYTE_FLEET_CONFIG."
    )
    env = {"AIRBYTE_FLEET_CONFIG": str(tmp_path)}
    assert _error(None, environ=env) == (
        f"Config file {tmp_path} is not a file; point AIRBYTE_FLEET_CONFIG at a .toml file."
    )


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (
            {"a": '["a"]'},
            "Group [groups.a] in {file} includes itself (a -> a); remove 'a' from groups in "
            "[groups.a].",
        ),
        (
            {"a": '["b"]', "b": '["c"]', "c": '["a"]'},
            "Group [groups.a] in {file} includes itself (a -> b -> c -> a); remove 'a' from "
            "groups in [groups.c].",
        ),
        # A cycle is a mistake even when its groups select something of their own.
        (
            {"x": '["y"]', "y": '["y"]'},
            "Group [groups.y] in {file} includes itself (y -> y); remove 'y' from groups in "
            "[groups.y].",
        ),
    ],
)
def test_a_group_that_includes_itself_is_a_cycle(
    tmp_path: Path, groups: dict[str, str], message: str
) -> None:
    text = "".join(
        f'[groups.{name}]\ntags = ["t"]\ngroups = {included}\n'
        if name == "x"
        else f"[groups.{name}]\ngroups = {included}\n"
        for name, included in groups.items()
    )
    path = _write(tmp_path, text)
    assert _error(path) == message.format(file=path)


def test_a_long_chain_of_groups_is_read_without_recursion(tmp_path: Path) -> None:
    count = 5000  # more than Python's recursion limit
    text = "".join(f'[groups.g{n}]\ngroups = ["g{n + 1}"]\n' for n in range(count))
    path = _write(tmp_path, text + f'[groups.g{count}]\ntags = ["t"]\n')
    assert len(load_file_config(path).groups) == count + 1
    looped = _write(tmp_path, text + f'[groups.g{count}]\ngroups = ["g0"]\n', name="loop.toml")
    assert f"includes itself (g0 -> g1 -> g2 -> g3 -> g4 -> ... -> g{count} -> g0); " in _error(
        looped
    )


# ----------------------------------------------------------------------------- errors


def test_explicit_path_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert _error(missing) == f"Config file {missing} does not exist; check --config."


def test_explicit_path_that_is_a_directory(tmp_path: Path) -> None:
    assert _error(tmp_path) == (
        f"Config file {tmp_path} is not a file; point --config at a .toml file."
    )


def test_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '[run]\nretries = 1\nmax_concurrency = "50\n')
    message = _error(path)
    assert message.startswith(f"Config file {path} is not valid TOML: ")
    assert "line 3" in message


def test_duplicate_key_is_a_syntax_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "[run]\nretries = 1\nretries = 2\n")
    assert "line 3" in _error(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[airbyte]\nclient_id = "café"\n'.encode("latin-1"))
    assert _error(path) == f"Config file {path} is not UTF-8 text; save it as UTF-8 and try again."


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "[run]\n")

    def deny(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", deny)
    assert _error(path) == (
        f"Config file {path} cannot be read (Permission denied); check its permissions or --config."
    )


# Each case: the file's text, the key the message must name and another fragment it must have.
ERROR_CASES: list[tuple[str, str, str]] = [
    ("[rnu]\nretries = 1\n", "[rnu]", "did you mean 'run'?"),
    ("[webhooks]\nurl = 'x'\n", "[webhooks]", "(above every table), [airbyte], [run], [selection]"),
    ("verbose = true\n", "'verbose'", "use only database_url, lease (above every table)"),
    ("databse_url = 'x'\n", "'databse_url'", "did you mean 'database_url'?"),
    ("database_url = 5\n", "Key database_url", "should be a valid string"),
    ("database_url = 'mysql://u@h/db'\n", "Key database_url", "not a postgresql:// URL"),
    ("[database_url]\nhost = 'x'\n", "[database_url]", "use only database_url"),
    ("lease = '30 secs'\n", "lease='30 secs'", "is not a duration"),
    ("lease = 0\n", "lease=0", "greater than 0"),
    ("lease = true\n", "lease=True", "a duration is a number of seconds"),
    ("[run]\nlease = '1m'\n", "'lease'", "move it to the top of the file, above every [table]"),
    ("[airbyte]\ndatabase_url = 'x'\n", "'database_url'", "move it to the top of the file"),
    ("max_concurrency = 5\n", "'max_concurrency'", "move it under [run]"),
    ("base_url = 'http://x'\n", "'base_url'", "move it under [airbyte]"),
    ("run = 5\n", "'run'", "must be a table, not a number; write it as [run]"),
    ("[run]\nmax_concurency = 5\n", "'max_concurency'", "did you mean 'max_concurrency'?"),
    ("[run]\nmax_concurrency = 'lots'\n", "max_concurrency='lots'", "valid integer"),
    ("[run]\nmax_concurrency = 0\n", "max_concurrency=0", "greater than or equal to 1"),
    ("[run]\nmax_concurrency = true\n", "max_concurrency=True", "expected a number, not true"),
    ("[run]\nretries = 1.5\n", "retries=1.5", "fractional part"),
    ("[run]\npoll_interval = '15 minutes'\n", "poll_interval", "is not a duration"),
    ("[run]\ntimeout = -5\n", "timeout=-5", "zero or more seconds"),
    ("[run]\ndeadline = [1]\n", "deadline=[1]", "a duration is a number of seconds"),
    ("[run]\njob_type = 'full'\n", "job_type='full'", "'sync', 'reset', 'clear' or 'refresh'"),
    ("[run]\nwait = 'maybe'\n", "wait='maybe'", "valid boolean"),
    ("[selection]\ntag = ['x']\n", "'tag'", "did you mean 'tags'?"),
    ("[selection]\ntags = 5\n", "tags=5", "valid list"),
    ("[selection]\nall = 'yes please'\n", "all='yes please'", "valid boolean"),
    ("[selection]\nconnections = ['abc']\n", "connections=['abc']", "'abc' is not a UUID"),
    ("[selection]\nworkspaces = '12'\n", "workspaces='12'", "'12' is not a UUID"),
    ("[selection]\ngroups = ['nope']\n", "'nope'", "define [groups.nope] or remove it"),
    ("[groups.finance]\ntagz = ['x']\n", "'tagz'", "[groups.finance]"),
    ("[groups.finance]\nconnections = ['x']\n", "connections=['x']", "[groups.finance]"),
    ("[groups.finance]\n", "[groups.finance]", "selects nothing"),
    ("[groups.finance.eu]\ntags = ['x']\n", "[groups.finance.eu]", "no dots"),
    ('[groups."finance.eu"]\ntags = ["x"]\n', "'finance.eu'", "cannot be used with --group"),
    ("groups = { finance = 1 }\n", "'groups.finance'", "must be a table"),
    ('[groups."month end"]\ntags = ["x"]\n', "'month end'", "cannot be used with --group"),
    ('[groups."a,b"]\ntags = ["x"]\n', "'a,b'", "letters, digits"),
    ("[groups.a]\ngroups = ['b']\n", "'b'", "[groups.a]"),
    ("[groups.fin]\ntags = ['x']\n[selection]\ngroups = ['fni']\n", "'fni'", "did you mean 'fin'"),
    ("schedules = { nightly = 'x' }\n", "'schedules.nightly'", "must be a table"),
    ("[airbyte]\nbase_uri = 'http://x'\n", "'base_uri'", "did you mean 'base_url'?"),
    ("[airbyte]\nconnect_timeout = 'fast'\n", "connect_timeout='fast'", "valid number"),
    ("[airbyte]\nmax_connections = 0\n", "max_connections=0", "greater than or equal to 1"),
    ("[airbyte]\nbase_url = 8000\n", "base_url=8000", "valid string"),
    ("airbyte = 'http://x'\n", "'airbyte'", "must be a table, not a string"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), ERROR_CASES)
def test_every_error_is_one_line_naming_file_and_key(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    path = _write(tmp_path, text)
    message = _error(path)
    assert str(path) in message
    assert key in message
    assert fragment in message
    assert message.endswith((".", "?"))
    assert message[0].isupper()


def test_secret_values_are_never_echoed(tmp_path: Path) -> None:
    path = _write(tmp_path, "[airbyte]\nclient_secret = 12345\npassword = ['hunter2']\n")
    message = _error(path)
    assert "client_secret" in message
    assert "12345" not in message


def test_the_database_url_is_never_echoed(tmp_path: Path) -> None:
    path = _write(tmp_path, "database_url = 'mysql://fleet:FILEPW-1234@db/runs'\n")
    message = _error(path)
    assert "database_url" in message
    assert "FILEPW-1234" not in message
    assert "mysql" not in message


def test_the_store_keys_at_the_top_are_read(tmp_path: Path) -> None:
    url = "postgresql://fleet:FILEPW-1234@db:5432/runs"
    path = _write(tmp_path, f"database_url = '{url}'\nlease = '1m30s'\n\n[run]\nretries = 2\n")
    config = load_file_config(path)
    assert config.database_url is not None
    assert config.database_url.get_secret_value() == url
    assert config.lease == 90.0
    assert config.run == {"retries": 2}
    # The config as a whole may be shown (a repr in a log line, a test failure): never the URL.
    assert "FILEPW-1234" not in repr(config)


def test_a_blank_database_url_in_the_file_is_unset(tmp_path: Path) -> None:
    config = load_file_config(_write(tmp_path, "database_url = '  '\n"))
    assert config.database_url is None
    assert config.lease is None


def test_secrets_in_the_file_are_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, "[airbyte]\nclient_id = 'id'\nclient_secret = 's3cret'\n")
    assert load_file_config(path).airbyte["client_secret"] == "s3cret"


# ----------------------------------------------------------------------------- properties


def _toml_key(key: str) -> str:
    return json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


_KEYS = st.sampled_from(
    [
        *RunOptions.model_fields,
        *Selection.model_fields,
        "base_url",
        "client_secret",
        "connect_timeout",
        "max_connections",
        "cron",
    ]
) | st.text(min_size=1, max_size=8)
_SCALARS = (
    st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["15s", "1h30m", "0", "-1s", WS, CONN, "nightly", "*", "adopt", "sync"])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=3),
    max_leaves=6,
)
_TABLE_NAMES = st.sampled_from(
    ["airbyte", "run", "selection", "groups.a", "groups.b-2", "schedules.n", "groups"]
) | st.text(min_size=1, max_size=6)


@st.composite
def _documents(draw: st.DrawFn) -> str:
    lines: list[str] = []
    for table in draw(st.lists(_TABLE_NAMES, max_size=4, unique=True)):
        dotted = ".".join(_toml_key(part) for part in table.split("."))
        lines.append(f"[{dotted}]")
        for key, value in draw(st.dictionaries(_KEYS, _VALUES, max_size=4)).items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


_FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _load_or_config_error(path: Path) -> FileConfig | None:
    try:
        return load_file_config(path)
    except ConfigError as exc:
        message = exc.message
    assert "\n" not in message
    assert str(path) in message
    return None


@_FUZZ
@given(text=st.text(max_size=200))
def test_junk_text_only_ever_raises_config_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "junk.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _load_or_config_error(path)


@_FUZZ
@given(raw=st.binary(max_size=120))
def test_junk_bytes_only_ever_raise_config_error(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "junk.toml"
    path.write_bytes(raw)
    _load_or_config_error(path)


@_FUZZ
@given(document=_documents())
def test_junk_tables_and_values_only_ever_raise_config_error(tmp_path: Path, document: str) -> None:
    path = tmp_path / "junk.toml"
    path.write_text(document, encoding="utf-8", errors="surrogatepass")
    config = _load_or_config_error(path)
    if config is not None:
        # What loads must also merge: a file that passes loading cannot fail later.
        merge_run_options(config.run, {}, file_path=path)


@settings(max_examples=150, deadline=None)
@given(
    file_run=st.dictionaries(st.sampled_from(list(RunOptions.model_fields)), _SCALARS, max_size=4),
    overrides=st.dictionaries(_KEYS, _VALUES | st.none(), max_size=4),
    environ=st.dictionaries(
        st.sampled_from([f"AIRBYTE_FLEET_{k.upper()}" for k in RunOptions.model_fields]),
        st.text(max_size=10),
        max_size=4,
    ),
)
def test_merging_junk_only_ever_raises_config_error(
    file_run: dict[str, Any], overrides: dict[str, Any], environ: dict[str, str]
) -> None:
    try:
        env = run_overrides_from_env(environ)
        merge_run_options(file_run, {**env, **overrides}, file_path=Path("f.toml"))
    except ConfigError as exc:
        message = exc.message
    else:
        return
    assert "\n" not in message
