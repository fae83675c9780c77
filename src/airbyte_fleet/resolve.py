"""Where the layers meet: the config file's plain tables, the environment and what the caller gave
(flags, a Python argument) become the engine's :class:`RunOptions` and :class:`Selection`.

Precedence for run options, highest first: command-line flags, ``AIRBYTE_FLEET_*`` environment
variables, the file's ``[run]`` table, :class:`RunOptions` defaults. The ``[airbyte]`` table sits
below the ``AIRBYTE_*`` variables in the same way, key by key, for every command (see
:func:`airbyte_fleet.config.load_settings`). The file itself is ``--config``, else
``AIRBYTE_FLEET_CONFIG``, else ``config/airbyte-fleet.toml`` if it exists.
A selection given by the caller replaces the file's ``[selection]``; only an empty one falls back
to it. Each problem is one :class:`ConfigError` naming the flag, variable or key to fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from airbyte_fleet._messages import spell_out_controls
from airbyte_fleet._validation import (
    Loc,
    Place,
    check_fields,
    env_var,
    flag,
    in_table,
    parameter,
    validated,
)
from airbyte_fleet.config import (
    DATABASE_URL_ENV,
    LEASE_ENV,
    StoreSettings,
    register_env_secrets,
    register_url_secrets,
)
from airbyte_fleet.engine.options import Group, RunOptions, Selection
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.settings_file import DEFAULT_CONFIG_PATH, NO_CONFIG_FIX, FileConfig

__all__ = [
    "ENV_PREFIX",
    "SELECTION_FLAGS",
    "argument",
    "file_groups",
    "file_selection",
    "merge_run_options",
    "require_file_for_groups",
    "run_options_over",
    "run_overrides_from_env",
    "selection_from_flags",
    "store_settings",
]

ENV_PREFIX = "AIRBYTE_FLEET_"
# Selection field -> the `run` flag that fills it.
SELECTION_FLAGS = {
    "connections": "--connection",
    "names": "--name",
    "tags": "--tag",
    "workspaces": "--workspace",
    "all": "--all",
    "groups": "--group",
    "with_upstream": "--with-upstream",
}

M = TypeVar("M", bound=BaseModel)


def run_overrides_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``AIRBYTE_FLEET_<FIELD>`` for every :class:`RunOptions` field, as written; blank is unset.

    Checked here, so that a message names the variable, not a flag the user never typed.
    """
    # A message quotes the value; a secret pasted into the wrong variable stays masked.
    register_env_secrets(environ)
    found: dict[str, Any] = {}
    for key in RunOptions.model_fields:
        raw = environ.get(f"{ENV_PREFIX}{key.upper()}")
        if raw is not None and raw.strip():
            found[key] = raw.strip()
    check_fields(RunOptions, found, lambda loc: env_var(f"{ENV_PREFIX}{str(loc[0]).upper()}"))
    return found


def merge_run_options(
    file_run: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    file_path: Path | None = None,
) -> RunOptions:
    """*overrides* (flags, then env, already merged by the caller) over the file's ``[run]``.

    ``None`` in *overrides* means "not given" (argparse's default), so it never hides a file value.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    file = _file_name(file_path)

    def where(loc: Loc) -> Place:
        key = str(loc[0]) if loc else "run"
        shown = spell_out_controls(key)
        if key in given:
            place = f"--{shown.replace('_', '-')} or {ENV_PREFIX}{shown.upper()}"
        else:
            place = f"{shown} in [run] of {file}"
        return Place(
            noun="Run option", key=shown, fix=f"fix {place}", choices=tuple(RunOptions.model_fields)
        )

    return validated(RunOptions, {**file_run, **given}, where)


def run_options_over(base: RunOptions, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """*overrides* as written (a request's or a schedule's ``options``) over *base*'s values.

    Unvalidated, so that the caller reads it as one :class:`RunOptions` where it stands: a request
    body as its ``options`` field, so that a bad value is reported at ``["options", "timeout"]``.
    """
    return {**base.model_dump(), **overrides}


def file_selection(file: FileConfig) -> Selection:
    """The file's ``[selection]``: what a run selects when the caller selects nothing."""
    return validated(
        Selection, file.selection, in_table(_file_name(file.path), "[selection]", Selection)
    )


def file_groups(file: FileConfig) -> dict[str, Selection]:
    """The file's ``[groups.NAME]`` tables, which ``--group NAME`` and ``groups`` refer to (each
    a :class:`Group`: a selection, and what it comes after in a staged run)."""
    return {
        name: validated(
            Group,
            body,
            in_table(_file_name(file.path), f"[groups.{spell_out_controls(name)}]", Group),
        )
        for name, body in file.groups.items()
    }


def require_file_for_groups(selection: Selection, file: FileConfig) -> None:
    """Groups live in the config file: with no file read, ``--group`` says so, and how to give
    one, instead of calling the group unknown."""
    if selection.groups and file.path is None:
        raise ConfigError(
            f"--group {spell_out_controls(selection.groups[0])} names a group of the config "
            f"file, but there is none ({spell_out_controls(DEFAULT_CONFIG_PATH)} does not "
            f"exist); {NO_CONFIG_FIX}."
        )


def selection_from_flags(**values: Any) -> Selection:
    """The command line's selection, by :class:`Selection` field; a bad value names its flag."""

    def where(loc: Loc) -> Place:
        return flag(SELECTION_FLAGS.get(str(loc[0]) if loc else "", "the selection"))

    return validated(Selection, values, where)


def store_settings(
    file: FileConfig,
    environ: Mapping[str, str],
    *,
    database_url: str | None = None,
    lease: Any = None,
) -> StoreSettings:
    """Where runs are kept and the lease: the flag (*database_url*, *lease*; ``None`` is not
    given), else ``AIRBYTE_FLEET_DATABASE_URL`` / ``AIRBYTE_FLEET_LEASE``, else the file's
    top-level ``database_url`` / ``lease``, else the SQLite journal and 30 s."""
    if database_url is not None and not database_url.strip():
        raise ConfigError(
            "--database-url needs a postgresql:// URL; leave the flag out to keep runs in the "
            "SQLite journal of the state directory."
        )
    flags = {"database_url": database_url, "lease": lease}
    variables = {"database_url": DATABASE_URL_ENV, "lease": LEASE_ENV}
    values: dict[str, Any] = {}
    came_from: dict[str, Place] = {}
    for key, name in variables.items():
        raw = environ.get(name, "").strip()
        if flags[key] is not None:
            values[key] = flags[key]
            came_from[key] = flag(f"--{key.replace('_', '-')}")
        elif raw:
            values[key] = raw
            came_from[key] = env_var(name, secret=key == "database_url")
        elif getattr(file, key) is not None:
            values[key] = getattr(file, key)
    if isinstance(values.get("database_url"), str):
        # Before anything can quote it: a bad value is never shown, but a driver's error may be.
        register_url_secrets(values["database_url"])
    in_file = f" in {_file_name(file.path)}"

    def where(loc: Loc) -> Place:
        # The file's values were checked as it was read: only a flag or a variable is new here.
        key = str(loc[0]) if loc else ""
        return came_from.get(key) or Place(noun="Key", key=key, at=in_file, show_value=False)

    return validated(StoreSettings, values, where)


def argument(model: type[M], value: M | Mapping[str, Any] | None, name: str) -> M:
    """A Python argument *name* given as *model* or as a mapping of its fields."""
    if value is None or isinstance(value, Mapping):
        return validated(model, value or {}, parameter(name, model))
    return value


def _file_name(path: Path | None) -> str:
    return spell_out_controls(path) if path else "the config file"
