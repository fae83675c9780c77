"""Where the layers meet: file < env < flags for run options, the file's selections, and every
problem named where the user put it."""

from __future__ import annotations

from pathlib import Path

import pytest

from airbyte_fleet.engine.options import Group, RunOptions, Selection
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.resolve import (
    argument,
    file_groups,
    file_selection,
    merge_run_options,
    run_overrides_from_env,
    selection_from_flags,
)
from airbyte_fleet.settings_file import FileConfig, load_file_config

CONN = "9f0e8d7c-0000-4000-8000-00000000000a"

# ----------------------------------------------------------------------------- run options


def test_flags_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[run]\nmax_concurrency = 50\npoll_interval = "15s"\n', encoding="utf-8")
    file_run = load_file_config(path).run
    env = run_overrides_from_env(
        {"AIRBYTE_FLEET_MAX_CONCURRENCY": "20", "AIRBYTE_FLEET_TIMEOUT": "45m", "HOME": "/x"}
    )
    assert env == {"max_concurrency": "20", "timeout": "45m"}
    flags = {"max_concurrency": 10, "poll_interval": None, "retries": None}

    options = merge_run_options(file_run, {**env, **flags})
    assert options.max_concurrency == 10  # flag
    assert options.timeout == 2700.0  # env
    assert options.poll_interval == 15.0  # file; the flag's None means "not given"
    assert options.retries == 0  # default

    assert merge_run_options(file_run, env).max_concurrency == 20
    assert merge_run_options(file_run, {}).max_concurrency == 50
    assert merge_run_options({}, {}) == RunOptions()


def test_every_run_option_has_an_env_variable() -> None:
    values = {
        "job_type": "refresh",
        "max_concurrency": "7",
        "poll_interval": "2s",
        "poll_mode": "per-job",
        "timeout": "1h30m",
        "deadline": "6h",
        "retries": "2",
        "retry_backoff": "1m",
        "wait": "false",
        "if_running": "skip",
        "include_inactive": "true",
        "cancel_on_timeout": "0",
        "cancel_adopted": "true",
        "on_interrupt": "detach",
        "grace": "PT1M",
    }
    assert set(values) == set(RunOptions.model_fields)
    env = {f"AIRBYTE_FLEET_{key.upper()}": value for key, value in values.items()}
    options = merge_run_options({}, run_overrides_from_env(env))
    assert options == RunOptions(
        job_type="refresh",
        max_concurrency=7,
        poll_interval=2.0,
        poll_mode="per-job",
        timeout=5400.0,
        deadline=21600.0,
        retries=2,
        retry_backoff=60.0,
        wait=False,
        if_running="skip",
        include_inactive=True,
        cancel_on_timeout=False,
        cancel_adopted=True,
        on_interrupt="detach",
        grace=60.0,
    )


def test_blank_env_variables_are_unset() -> None:
    assert run_overrides_from_env({"AIRBYTE_FLEET_RETRIES": "", "AIRBYTE_FLEET_WAIT": "  "}) == {}


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("AIRBYTE_FLEET_MAX_CONCURRENCY", "lots", "valid integer"),
        ("AIRBYTE_FLEET_POLL_INTERVAL", "soon", "not a duration"),
        ("AIRBYTE_FLEET_TIMEOUT", "0", "greater than 0"),
        ("AIRBYTE_FLEET_IF_RUNNING", "wait", "'adopt', 'skip' or 'fail'"),
    ],
)
def test_bad_env_variable_is_named(name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        run_overrides_from_env({name: value})
    message = caught.value.message
    assert message.startswith(f"{name}='{value}' is invalid (")
    assert fragment in message
    assert message.endswith("; fix or unset it.")


def test_bad_flag_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_run_options({"retries": 1}, {"retries": -1})
    assert caught.value.message == (
        "Run option retries=-1 is invalid (it should be greater than or equal to 0); "
        "fix --retries or AIRBYTE_FLEET_RETRIES."
    )


def test_bad_raw_file_value_names_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        merge_run_options({"timeout": "forever"}, {}, file_path=Path("x.toml"))
    message = caught.value.message
    assert message.startswith("Run option timeout='forever' is invalid ('forever' is not a")
    assert message.endswith("fix timeout in [run] of x.toml.")
    with pytest.raises(ConfigError, match=r"Unknown run option 'retrys' \(did you mean 'retries'"):
        merge_run_options({}, {"retrys": 1})


def test_a_flag_of_a_number_never_takes_a_boolean_from_the_environment() -> None:
    # A TOML or JSON true is not a count; "true" in a variable is not a number either.
    with pytest.raises(ConfigError, match=r"^AIRBYTE_FLEET_RETRIES='true' is invalid"):
        run_overrides_from_env({"AIRBYTE_FLEET_RETRIES": "true"})


# ----------------------------------------------------------------------------- selections


def test_the_file_selection_and_groups_become_selections() -> None:
    file = FileConfig(
        selection={"tags": "nightly,hourly"},
        groups={"finance": {"connections": [CONN]}, "all": {"groups": ["finance"], "all": True}},
    )
    assert file_selection(file) == Selection(tags=["nightly", "hourly"])
    assert file_groups(file) == {
        "finance": Group(connections=[CONN]),
        "all": Group(groups=["finance"], all=True),
    }
    assert file_selection(FileConfig()).empty


def test_a_bad_table_given_in_code_still_names_its_key() -> None:
    file = FileConfig(groups={"finance": {"connections": ["x"]}}, path=Path("f.toml"))
    with pytest.raises(ConfigError) as caught:
        file_groups(file)
    assert caught.value.message == (
        "Key connections=['x'] in [groups.finance] of f.toml is invalid ('x' is not a UUID)."
    )


def test_a_bad_selection_flag_is_named() -> None:
    assert selection_from_flags(connections=[CONN], tags=["a,b"]) == Selection(
        connections=[CONN], tags=["a", "b"]
    )
    with pytest.raises(ConfigError) as caught:
        selection_from_flags(workspaces=["12"], tags=[])
    assert caught.value.message == (
        "--workspace is invalid ('12' is not a UUID); fix it or leave it out."
    )


def test_python_arguments_are_named_as_written() -> None:
    assert argument(RunOptions, None, "options") == RunOptions()
    given = RunOptions(retries=2)
    assert argument(RunOptions, given, "options") is given
    assert argument(Selection, {"all": True}, "selection") == Selection(all=True)
    with pytest.raises(ConfigError) as caught:
        argument(RunOptions, {"retries": -1}, "options")
    assert caught.value.message == (
        "Key retries=-1 in the options argument is invalid (it should be greater than or equal "
        "to 0)."
    )
    with pytest.raises(ConfigError) as caught:
        argument(Selection, {"tag": ["x"]}, "selection")
    assert caught.value.message.startswith(
        "Unknown key 'tag' in the selection argument (did you mean 'tags'?); use one of "
    )
