"""Configuration checked once: pydantic checks every value, and this module turns what it rejects
into the one sentence of a :class:`~airbyte_fleet.errors.ConfigError`.

Only where the value came from changes the sentence. A :data:`Where` maps pydantic's error
location to a :class:`Place`, which says how the user names the value and what to do:

* a config file key:       ``Key retries=-1 in [run] of fleet.toml is invalid (...).``
* an environment variable: ``AIRBYTE_FLEET_RETRIES='-1' is invalid (...); fix or unset it.``
* a command-line flag:     ``--retries is invalid (...); fix it or leave it out.``
* a Python parameter:      ``Key retries=-1 in the options argument is invalid (...).``

(A request body is answered with pydantic's errors as a list, field by field: see
``service/responses.py``.) A validator that knows the way out says so in its error's context
(see :func:`invalid`), and that ends the sentence.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    SecretStr,
    ValidationError,
    create_model,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from airbyte_fleet._messages import did_you_mean, fold_whitespace, show, spell_out_controls
from airbyte_fleet.errors import ConfigError

__all__ = [
    "Loc",
    "Place",
    "Where",
    "check_fields",
    "config_error",
    "constructor",
    "env_var",
    "fields_of",
    "flag",
    "in_table",
    "invalid",
    "parameter",
    "validated",
]

Loc = tuple[int | str, ...]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Place:
    """Where one value came from, worded for the sentence that asks for its fix."""

    key: str  # as the user spells it: "retries", "--retries", "AIRBYTE_FLEET_RETRIES"
    noun: str = ""  # said before the key when its spelling does not say what it is: "Key"
    at: str = ""  # said after the value: " in [run] of fleet.toml"
    fix: str = ""  # said last: "fix or unset it"
    choices: tuple[str, ...] = ()  # the keys known here, to name instead of an unknown one
    show_value: bool = True  # never for a secret


Where = Callable[[Loc], Place]


def config_error(
    exc: ValidationError, where: Where, given: Mapping[str, Any] | None = None
) -> ConfigError:
    """The first problem pydantic found, as one sentence naming the value where the user put it.

    *given*: the values as the user wrote them, to quote instead of what a validator made of them
    (``timeout = "0s"``, not ``0.0``)."""
    errors = exc.errors(include_url=False)
    # A misspelt key is unknown, and the key meant is then missing too: name the one written.
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    place = where(tuple(error["loc"]))
    fix = str((error.get("ctx") or {}).get("fix") or place.fix)
    subject = f"{place.noun} {place.key}" if place.noun else place.key
    if error["type"] == "extra_forbidden":
        fix = fix or (f"use one of {', '.join(place.choices)}" if place.choices else "remove it")
        guess = did_you_mean(place.key, place.choices)
        return ConfigError(
            f"Unknown {place.noun.lower() or 'option'} '{place.key}'{place.at}{guess}; {fix}."
        )
    if error["type"] == "missing":
        return ConfigError(f"{subject}{place.at} is missing; {fix or 'add it'}.")
    shown = f"={show(_as_written(given, error['loc'], error['input']))}" if place.show_value else ""
    said = f"{subject}{shown}{place.at} is invalid ({_reason(error)})"
    return ConfigError(f"{said}; {fix}." if fix else f"{said}.")


def _as_written(given: Any, loc: Loc, fallback: Any) -> Any:
    if given is None:
        return fallback
    value = given
    for part in loc:
        found = (isinstance(value, Mapping) and part in value) or (
            isinstance(value, list | tuple) and isinstance(part, int) and part < len(value)
        )
        if not found:
            return fallback
        value = value[part]
    return value


def _reason(error: ErrorDetails) -> str:
    """pydantic's message for *error* as a clause: "it should be an integer", not "Input ..."."""
    message = str(error.get("msg", "invalid value"))
    # pydantic prefixes our own ValueError texts with "Value error, ".
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = fold_whitespace(message).rstrip(".")
    if message.startswith("Input should be"):
        message = "it should be" + message[len("Input should be") :]
    return message[:1].lower() + message[1:]


def invalid(why: str, fix: str = "") -> PydanticCustomError:
    """The error a validator raises when it knows the way out: *fix* ends the sentence."""
    return PydanticCustomError("config_value", "{why}", {"why": why, "fix": fix})


# ----------------------------------------------------------------------------- checking


def validated(model: type[M], values: Mapping[str, Any], where: Where) -> M:
    """``model.model_validate(values)``, with any problem as one :class:`ConfigError`."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise config_error(exc, where, values) from None


def check_fields(
    model: type[BaseModel],
    values: Mapping[str, Any],
    where: Where,
    *,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """*values* checked key by key against *model*'s fields, exactly as written: the field types
    and their constraints, no defaults filled in, nothing read from elsewhere (a settings
    model's environment), unknown keys refused. Returns the values as the fields read them."""
    try:
        checked = fields_of(model).model_validate(dict(values), context=context)
    except ValidationError as exc:
        raise config_error(exc, where, values) from None
    return checked.model_dump(exclude_unset=True)


@functools.cache
def fields_of(model: type[BaseModel]) -> type[BaseModel]:
    """A model of *model*'s fields with every one optional and none defaulted: it checks a
    mapping key by key, as written, and refuses unknown keys."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        steps: list[Any] = list(info.metadata)
        if info.annotation in (int, float):
            # pydantic reads `max_concurrency = true` as 1; written down, it is always a mistake.
            steps.insert(0, BeforeValidator(_a_number_is_not_a_boolean))
        hint: Any = Annotated[(info.annotation, *steps)] if steps else info.annotation
        fields[name] = (hint, None)
    return create_model(
        f"{model.__name__}Fields",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )


def _a_number_is_not_a_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, not {str(value).lower()}")
    return value


# ----------------------------------------------------------------------------- places


def in_table(
    file: str,
    table: str,
    model: type[BaseModel],
    *,
    choices: Collection[str] | None = None,
    fixes: Mapping[str, str] | None = None,
) -> Where:
    """The keys of *table* (``[run]``) in the config file *file*, which *model* checks."""
    whole = Place(noun="Table", key=table, at=f" in {file}", show_value=False)
    return _keys(model, f" in {table} of {file}", whole, choices=choices, fixes=fixes)


def parameter(name: str, model: type[BaseModel]) -> Where:
    """The keys of a mapping passed to Python as the parameter *name*, which *model* checks."""
    whole = Place(key=name, noun="Parameter", fix=f"fix the {name} argument", show_value=False)
    return _keys(model, f" in the {name} argument", whole)


def constructor(model: type[BaseModel]) -> Where:
    """The keyword arguments of ``Model(...)`` in Python code."""
    name = model.__name__
    whole = Place(key=name, noun="Argument", fix=f"fix the arguments of {name}", show_value=False)
    return _keys(model, f" given to {name}", whole)


def _keys(
    model: type[BaseModel],
    at: str,
    whole: Place,
    *,
    choices: Collection[str] | None = None,
    fixes: Mapping[str, str] | None = None,
) -> Where:
    known = tuple(model.model_fields if choices is None else choices)
    secret = {name for name, info in model.model_fields.items() if _is_secret(info.annotation)}
    hints = fixes or {}

    def where(loc: Loc) -> Place:
        if not loc:
            return whole
        head = str(loc[0])
        return Place(
            noun="Key",
            key=_spelled(loc),
            at=at,
            fix=hints.get(head, ""),
            choices=known,
            show_value=head not in secret,
        )

    return where


def env_var(name: str, *, secret: bool = False) -> Place:
    return Place(key=spell_out_controls(name), fix="fix or unset it", show_value=not secret)


def flag(name: str) -> Place:
    # The value is right there on the command line, and a repeated flag's list reads badly.
    return Place(key=spell_out_controls(name), fix="fix it or leave it out", show_value=False)


def _spelled(loc: Loc) -> str:
    """``tags[0]`` or ``options.retries``, as a key would be written."""
    text = str(loc[0])
    for part in loc[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return spell_out_controls(text)


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in get_args(annotation)
