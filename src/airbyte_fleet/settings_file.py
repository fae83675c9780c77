"""The TOML config file (``config/airbyte-fleet.toml`` by default): read, checked, kept as written.

Every table is checked here, key by key against the fields it will fill, so that a mistake is
reported with the file and the key even when a flag would override it later; what comes out is
plain data. :mod:`airbyte_fleet.resolve` lays it under the environment and the flags and turns it
into the engine's options; :func:`airbyte_fleet.config.load_settings` does the same for
``[airbyte]``; the worker reads ``[schedules.NAME]`` with its own model.

Every problem becomes one :class:`ConfigError` sentence naming the file, the key and the fix: a
config file is edited by hand at 2 a.m., and a pydantic dump or a traceback helps nobody then.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from airbyte_fleet._logging import get_logger
from airbyte_fleet._messages import (
    SELECTS_NOTHING_FIX,
    chain,
    did_you_mean,
    fold_whitespace,
    spell_out_controls,
)
from airbyte_fleet._validation import Loc, Place, check_fields, in_table
from airbyte_fleet.config import AirbyteSettings, StoreSettings
from airbyte_fleet.engine.options import Group, RunOptions, Selection
from airbyte_fleet.engine.plan import group_cycle, stage_cycle_message
from airbyte_fleet.errors import ConfigError

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG_PATH", "NO_CONFIG_FIX", "FileConfig", "load_file_config"]

DEFAULT_CONFIG_PATH = Path("config/airbyte-fleet.toml")
# Names the config file when --config does not; --config wins.
CONFIG_ENV = "AIRBYTE_FLEET_CONFIG"
NO_CONFIG_FIX = f"pass --config PATH or set {CONFIG_ENV} to read one"

log = get_logger("airbyte_fleet.config")

_TABLES = ("airbyte", "run", "selection", "groups", "schedules")
# The keys above every table: where runs are kept, which every command that stores runs reads.
_TOP_KEYS = tuple(StoreSettings.model_fields)
_TABLE_HINT = (
    f"{', '.join(_TOP_KEYS)} (above every table), [airbyte], [run], [selection], [groups.NAME] "
    "or [schedules.NAME]"
)
# TOML puts a key written below a [table] line into that table: say where it belongs instead.
_MOVE_UP = {key: "move it to the top of the file, above every [table] line" for key in _TOP_KEYS}
# Group names travel through --group, whose values are split on commas: keep them plain.
# A dot is left out too: [groups.a.b] is a nested table in TOML, not a group called "a.b".
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class FileConfig(BaseModel):
    """What the file says, table by table, exactly as written (every value already checked).

    Plain data, no engine objects: ``run`` is merged under env and flags before it is read as
    a whole, and ``selection``/``groups`` become selections where a run is resolved
    (:func:`airbyte_fleet.resolve.file_selection`, :func:`~airbyte_fleet.resolve.file_groups`).
    """

    model_config = ConfigDict(frozen=True)

    # The keys at the top, checked; the URL stays a secret, the lease is in seconds.
    database_url: SecretStr | None = None
    lease: float | None = None
    airbyte: dict[str, Any] = Field(default_factory=dict)
    run: dict[str, Any] = Field(default_factory=dict)
    selection: dict[str, Any] = Field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = Field(default_factory=dict)
    schedules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    path: Path | None = None


def load_file_config(
    path: str | Path | None,
    *,
    default_path: Path = DEFAULT_CONFIG_PATH,
    environ: Mapping[str, str] | None = None,
) -> FileConfig:
    """Read *path* (``--config``), else the file ``AIRBYTE_FLEET_CONFIG`` names, else
    *default_path* if it exists, else nothing (an empty config). A log line names the file read,
    or says there is none and how to give one."""
    named = (os.environ if environ is None else environ).get(CONFIG_ENV, "").strip()
    if path is not None:
        chosen, given_by = Path(path), "--config"
    elif named:
        chosen, given_by = Path(named), CONFIG_ENV
    elif default_path.is_file():
        chosen, given_by = default_path, "default"
    else:
        log.info(
            "config_file",
            path=None,
            message=f"no config file: {spell_out_controls(default_path)} does not exist; "
            f"{NO_CONFIG_FIX}",
        )
        return FileConfig()
    if given_by != "default":
        _check_exists(chosen, given_by)
    config = _parse(chosen, _read(chosen, given_by))
    log.info("config_file", path=spell_out_controls(chosen), given_by=given_by)
    return config


def _check_exists(path: Path, given_by: str) -> None:
    shown = spell_out_controls(path)
    try:
        exists, is_file = path.exists(), path.is_file()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ConfigError(
            f"Config file {shown} cannot be read "
            f"({fold_whitespace(exc.strerror or str(exc))}); check {given_by}."
        ) from None
    if not exists:
        raise ConfigError(f"Config file {shown} does not exist; check {given_by}.")
    if not is_file:
        raise ConfigError(f"Config file {shown} is not a file; point {given_by} at a .toml file.")


# ----------------------------------------------------------------------------- parsing


def _read(path: Path, given_by: str) -> dict[str, Any]:
    file = spell_out_controls(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Config file {file} is not valid TOML: {fold_whitespace(str(exc))}; fix the syntax "
            "there."
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"Config file {file} is not UTF-8 text; save it as UTF-8 and try again."
        ) from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively: a few thousand "[" blow
        # the stack instead of raising TOMLDecodeError.
        raise ConfigError(
            f"Config file {file} nests arrays or inline tables too deeply to be read; flatten them."
        ) from None
    except OSError as exc:
        other = "pass --config PATH" if given_by == "default" else given_by
        raise ConfigError(
            f"Config file {file} cannot be read ({fold_whitespace(exc.strerror or str(exc))}); "
            f"check its permissions or {other}."
        ) from None


def _parse(path: Path, doc: dict[str, Any]) -> FileConfig:
    file = spell_out_controls(path)
    _check_top_level(file, doc)
    top = check_fields(
        StoreSettings, {key: doc[key] for key in _TOP_KEYS if key in doc}, _at_the_top(file)
    )

    airbyte = _table(file, doc, "airbyte")
    check_fields(
        AirbyteSettings, airbyte, in_table(file, "[airbyte]", AirbyteSettings, fixes=_MOVE_UP)
    )
    run = _table(file, doc, "run")
    check_fields(RunOptions, run, in_table(file, "[run]", RunOptions, fixes=_MOVE_UP))

    groups = _groups(file, doc)
    selection = _table(file, doc, "selection")
    _check_selection(file, "[selection]", selection, groups)

    schedules: dict[str, dict[str, Any]] = {}
    for name, body in _table(file, doc, "schedules").items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"Key 'schedules.{spell_out_controls(name)}' in {file} must be a table; write it "
                f"as [schedules.{spell_out_controls(name)}]."
            )
        schedules[name] = body

    return FileConfig(
        database_url=top.get("database_url"),
        lease=top.get("lease"),
        airbyte=airbyte,
        run=run,
        selection=selection,
        groups=groups,
        schedules=schedules,
        path=path,
    )


# The keys that select connections (a group's after, policy and with_upstream select none).
_SELECTS = ("connections", "names", "tags", "workspaces", "all", "groups")


def _groups(file: str, doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``[groups.NAME]`` tables, each checked, none empty, none including itself."""
    groups: dict[str, dict[str, Any]] = {}
    for name, body in _table(file, doc, "groups").items():
        shown = spell_out_controls(name)
        if not _GROUP_NAME.fullmatch(name):
            raise ConfigError(
                f"Group name '{shown}' in {file} cannot be used with --group; name it with "
                "letters, digits, '-' or '_' only."
            )
        if not isinstance(body, dict):
            raise ConfigError(
                f"Key 'groups.{shown}' in {file} must be a table; write it as [groups.{shown}] "
                "with tags, names, connections or workspaces under it."
            )
        groups[name] = body
    # Every group is known before any is read: a group may name one defined further down.
    includes: dict[str, list[str]] = {}
    after: dict[str, list[str]] = {}
    for name, body in groups.items():
        checked = _check_selection(
            file, f"[groups.{spell_out_controls(name)}]", body, groups, model=Group
        )
        if not any(checked.get(key) for key in _SELECTS):
            raise ConfigError(
                f"Group [groups.{spell_out_controls(name)}] in {file} selects nothing; "
                f"{SELECTS_NOTHING_FIX}."
            )
        includes[name] = checked.get("groups") or []
        after[name] = checked.get("after") or []
    cycle = group_cycle(includes, includes)
    if cycle:
        first, last, back = (spell_out_controls(name) for name in (cycle[0], cycle[-2], cycle[-1]))
        raise ConfigError(
            f"Group [groups.{first}] in {file} includes itself ({chain(cycle)}); remove "
            f"'{back}' from groups in [groups.{last}]."
        )
    message = stage_cycle_message(includes, after, where=f" in {file}")
    if message:
        raise ConfigError(message)
    return groups


def _at_the_top(file: str) -> Callable[[Loc], Place]:
    def where(loc: Loc) -> Place:
        key = spell_out_controls(loc[0]) if loc else "the top of the file"
        return Place(noun="Key", key=key, at=f" in {file}", show_value=key != "database_url")

    return where


def _check_top_level(file: str, doc: Mapping[str, Any]) -> None:
    for key, value in doc.items():
        if key in _TABLES or (key in _TOP_KEYS and not isinstance(value, dict)):
            continue
        shown = spell_out_controls(key)
        for table, model in (("run", RunOptions), ("airbyte", AirbyteSettings)):
            if key in model.model_fields:
                raise ConfigError(
                    f"Key '{shown}' at the top of {file} belongs in a table; move it under "
                    f"[{table}]."
                )
        kind = "table" if isinstance(value, dict) else "key"
        named = f"[{shown}]" if kind == "table" else f"'{shown}'"
        known = (*_TOP_KEYS, *_TABLES)
        raise ConfigError(
            f"Unknown {kind} {named} in {file}{did_you_mean(key, known)}; use only {_TABLE_HINT}."
        )


def _table(file: str, doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"Key '{name}' in {file} must be a table, not a {_toml_type(value)}; write it as "
            f"[{name}]."
        )
    return value


def _check_selection(
    file: str,
    table: str,
    body: Mapping[str, Any],
    groups: Collection[str],
    *,
    model: type[Selection] = Selection,
) -> dict[str, Any]:
    """Check a selection table (and the groups it names); return its keys as checked."""
    for key, value in body.items():
        if key not in model.model_fields and isinstance(value, dict):
            fix = (
                "name groups with letters, digits, '-' or '_' (no dots)"
                if table.startswith("[groups.")
                else f"use only {', '.join(model.model_fields)} there"
            )
            raise ConfigError(
                f"Table {table[:-1]}.{spell_out_controls(key)}] in {file} nests a table inside "
                f"{table}; {fix}."
            )
    return check_fields(model, body, in_table(file, table, model), context={"groups": groups})


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return type(value).__name__
