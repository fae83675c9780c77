"""The TOML config file (``config/airbyte-fleet.toml`` by default) and how it meets flags and env.

Precedence for run options, highest first: command-line flags, ``AIRBYTE_FLEET_*`` environment
variables, the file's ``[run]`` table, :class:`RunOptions` defaults. The ``[airbyte]`` table sits
below the ``AIRBYTE_*`` variables in the same way (see :func:`airbyte_fleet.config.load_settings`).

Every problem becomes one :class:`ConfigError` sentence naming the file, the key and the fix: a
config file is edited by hand at 2 a.m., and a pydantic dump or a traceback helps nobody then.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from airbyte_fleet._messages import did_you_mean as _did_you_mean
from airbyte_fleet._messages import k as _k
from airbyte_fleet._messages import one_line as _one_line
from airbyte_fleet._messages import reason as _reason
from airbyte_fleet._messages import show as _show
from airbyte_fleet.config import AirbyteSettings, register_env_secrets
from airbyte_fleet.engine.options import RunOptions, Selection
from airbyte_fleet.errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ENV_PREFIX",
    "FileConfig",
    "load_file_config",
    "merge_run_options",
    "run_overrides_from_env",
]

DEFAULT_CONFIG_PATH = Path("config/airbyte-fleet.toml")
ENV_PREFIX = "AIRBYTE_FLEET_"

_TABLES = ("airbyte", "run", "selection", "groups", "schedules")
_TABLE_HINT = "[airbyte], [run], [selection], [groups.NAME] or [schedules.NAME]"
# Group names travel through --group, whose values are split on commas: keep them plain.
# A dot is left out too: [groups.a.b] is a nested table in TOML, not a group called "a.b".
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
# Secrets are allowed in [airbyte] but never echoed back in an error message.
_SECRET_KEYS = frozenset({"client_secret", "api_token", "password"})


class FileConfig(BaseModel):
    """What the file says; every value is already checked, ``run`` is kept raw for merging."""

    model_config = ConfigDict(frozen=True)

    airbyte: dict[str, Any] = Field(default_factory=dict)
    run: dict[str, Any] = Field(default_factory=dict)
    selection: Selection = Field(default_factory=Selection)
    groups: dict[str, Selection] = Field(default_factory=dict)
    schedules: dict[str, dict[str, Any]] = Field(default_factory=dict)
    path: Path | None = None

    def choose_selection(self, given: Selection) -> Selection:
        """The command line's selection, or the file's ``[selection]`` when it asked for nothing."""
        return self.selection if given.empty else given


def load_file_config(
    path: str | Path | None, *, default_path: Path = DEFAULT_CONFIG_PATH
) -> FileConfig:
    """Read *path* (``--config``), else *default_path* if it exists, else an empty config."""
    if path is None:
        if not default_path.is_file():
            return FileConfig()
        chosen = default_path
    else:
        chosen = Path(path)
        try:
            exists, is_file = chosen.exists(), chosen.is_file()
        except OSError as exc:  # e.g. a name longer than the file system allows
            raise ConfigError(
                f"Config file {_k(chosen)} cannot be read ({_one_line(exc.strerror or str(exc))}); "
                "check --config."
            ) from None
        if not exists:
            raise ConfigError(f"Config file {_k(chosen)} does not exist; check --config.")
        if not is_file:
            raise ConfigError(
                f"Config file {_k(chosen)} is not a file; point --config at a .toml file."
            )
    return _parse(chosen, _read(chosen))


def merge_run_options(
    file_run: Mapping[str, Any],
    overrides: Mapping[str, Any],
    *,
    file_path: Path | None = None,
) -> RunOptions:
    """*overrides* (flags, then env, already merged by the caller) over the file's ``[run]``.

    ``None`` in *overrides* means "not given" (argparse's default), so it never hides a file value.
    """
    values = dict(file_run)
    given = {key: value for key, value in overrides.items() if value is not None}
    values.update(given)
    try:
        return RunOptions.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "run"
        if key in given:
            where = f"--{_k(key.replace('_', '-'))} or {ENV_PREFIX}{_k(key.upper())}"
        else:
            where = f"{_k(key)} in [run] of {_k(file_path) if file_path else 'the config file'}"
        if error["type"] == "extra_forbidden":
            raise ConfigError(
                f"Unknown run option '{_k(key)}'{_did_you_mean(key, RunOptions.model_fields)}; "
                f"fix {where}."
            ) from None
        raise ConfigError(
            f"Run option {_k(key)}={_show(error.get('input'))} is invalid ({_reason(error)}); "
            f"fix {where}."
        ) from None


def run_overrides_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``AIRBYTE_FLEET_<FIELD>`` for every :class:`RunOptions` field; blank means unset."""
    # A message below quotes the value; a secret pasted into the wrong variable stays masked.
    register_env_secrets(environ)
    found: dict[str, Any] = {}
    for key in RunOptions.model_fields:
        name = f"{ENV_PREFIX}{key.upper()}"
        raw = environ.get(name)
        if raw is None or not raw.strip():
            continue
        value = raw.strip()
        # Check here so the message names the variable, not a flag the user never typed.
        problem = _field_problem(RunOptions, key, value)
        if problem is not None:
            raise ConfigError(f"{name}={_show(value)} is invalid ({problem}); fix or unset it.")
        found[key] = value
    return found


# ----------------------------------------------------------------------------- parsing


def _read(path: Path) -> dict[str, Any]:
    file = _k(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"Config file {file} is not valid TOML: {_one_line(str(exc))}; fix the syntax there."
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
        raise ConfigError(
            f"Config file {file} cannot be read ({_one_line(exc.strerror or str(exc))}); "
            "check its permissions or --config."
        ) from None


def _parse(path: Path, doc: dict[str, Any]) -> FileConfig:
    file = _k(path)
    for key, value in doc.items():
        if key in _TABLES:
            continue
        if key in RunOptions.model_fields:
            raise ConfigError(
                f"Key '{_k(key)}' at the top of {file} belongs in a table; move it under [run]."
            )
        if key in AirbyteSettings.model_fields:
            raise ConfigError(
                f"Key '{_k(key)}' at the top of {file} belongs in a table; move it under [airbyte]."
            )
        kind = "table" if isinstance(value, dict) else "key"
        shown = f"[{_k(key)}]" if kind == "table" else f"'{_k(key)}'"
        raise ConfigError(
            f"Unknown {kind} {shown} in {file}{_did_you_mean(key, _TABLES)}; "
            f"use only {_TABLE_HINT}."
        )

    airbyte = _table(path, doc, "airbyte")
    for key, value in airbyte.items():
        if key not in AirbyteSettings.model_fields:
            raise ConfigError(
                f"Unknown key '{_k(key)}' in [airbyte] of {file}"
                f"{_did_you_mean(key, AirbyteSettings.model_fields)}; use one of "
                f"{', '.join(AirbyteSettings.model_fields)}."
            )
        problem = _field_problem(AirbyteSettings, key, value)
        if problem is not None:
            shown = "" if key in _SECRET_KEYS else f"={_show(value)}"
            raise ConfigError(
                f"Key {_k(key)}{shown} in [airbyte] of {file} is invalid ({problem})."
            )

    run = _table(path, doc, "run")
    for key, value in run.items():
        if key not in RunOptions.model_fields:
            raise ConfigError(
                f"Unknown key '{_k(key)}' in [run] of {file}"
                f"{_did_you_mean(key, RunOptions.model_fields)}; use one of "
                f"{', '.join(RunOptions.model_fields)}."
            )
        problem = _field_problem(RunOptions, key, value)
        if problem is not None:
            raise ConfigError(
                f"Key {_k(key)}={_show(value)} in [run] of {file} is invalid ({problem})."
            )

    selection = _selection(path, "[selection]", _table(path, doc, "selection"))

    groups: dict[str, Selection] = {}
    for name, body in _table(path, doc, "groups").items():
        where = f"[groups.{_k(name)}]"
        if not _GROUP_NAME.fullmatch(name):
            raise ConfigError(
                f"Group name '{_k(name)}' in {file} cannot be used with --group; name it with "
                "letters, digits, '-' or '_' only."
            )
        if not isinstance(body, dict):
            raise ConfigError(
                f"Key 'groups.{_k(name)}' in {file} must be a table; write it as {where} "
                "with tags, names, connections or workspaces under it."
            )
        group = _selection(path, where, body)
        if not (group.connections or group.filters_given or group.groups):
            raise ConfigError(
                f"Group {where} in {file} selects nothing; give it connections, names, tags, "
                "workspaces, groups or all = true."
            )
        groups[name] = group

    for where, sel in [
        ("[selection]", selection),
        *((f"[groups.{n}]", g) for n, g in groups.items()),
    ]:
        unknown = [name for name in sel.groups if name not in groups]
        if unknown:
            raise ConfigError(
                f"The {where} table in {file} names unknown group '{_k(unknown[0])}'"
                f"{_did_you_mean(unknown[0], groups)}; define [groups.{_k(unknown[0])}] or "
                "remove it."
            )

    schedules: dict[str, dict[str, Any]] = {}
    for name, body in _table(path, doc, "schedules").items():
        if not isinstance(body, dict):
            raise ConfigError(
                f"Key 'schedules.{_k(name)}' in {file} must be a table; write it as "
                f"[schedules.{_k(name)}]."
            )
        schedules[name] = body

    return FileConfig(
        airbyte=airbyte,
        run=run,
        selection=selection,
        groups=groups,
        schedules=schedules,
        path=path,
    )


def _table(path: Path, doc: Mapping[str, Any], name: str) -> dict[str, Any]:
    file = _k(path)
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"Key '{_k(name)}' in {file} must be a table, not a {_toml_type(value)}; write it as "
            f"[{_k(name)}]."
        )
    return value


def _selection(path: Path, where: str, body: Mapping[str, Any]) -> Selection:
    file = _k(path)
    try:
        return Selection.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else "?"
        if error["type"] == "extra_forbidden" and isinstance(body.get(key), dict):
            inner = where.rstrip("]") + f".{_k(key)}]"
            fix = (
                "name groups with letters, digits, '-' or '_' (no dots)"
                if where.startswith("[groups.")
                else f"use only {', '.join(Selection.model_fields)} there"
            )
            raise ConfigError(
                f"Table {inner} in {file} nests a table inside {where}; {fix}."
            ) from None
        if error["type"] == "extra_forbidden":
            raise ConfigError(
                f"Unknown key '{_k(key)}' in {where} of {file}"
                f"{_did_you_mean(key, Selection.model_fields)}; use one of "
                f"{', '.join(Selection.model_fields)}."
            ) from None
        shown = _show(body.get(key))
        raise ConfigError(
            f"Key {_k(key)}={shown} in {where} of {file} is invalid ({_reason(error)})."
        ) from None


# ----------------------------------------------------------------------------- helpers


def _field_problem(model: type[BaseModel], key: str, value: Any) -> str | None:
    """Why *value* is not valid for ``model.key`` (one short clause), or ``None`` if it is."""
    info = model.model_fields[key]
    if isinstance(value, bool) and info.annotation in (int, float):
        # pydantic would read `max_concurrency = true` as 1; in a file that is always a mistake.
        return f"expected a number, not {str(value).lower()}"
    # The field's type with its constraints (ge=1, gt=0, the duration parser), but none of the
    # model's env lookups or aliases: the value is judged exactly as written in the file.
    hint: Any = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    adapter: TypeAdapter[Any] = TypeAdapter(hint)
    try:
        adapter.validate_python(value)
    except ValidationError as exc:
        return _reason(exc.errors()[0])
    return None


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
