"""One-sentence configuration messages: shared wording for the config file and schedules."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from typing import Any

__all__ = ["did_you_mean", "k", "one_line", "reason", "show"]


def reason(error: Any) -> str:
    message = str(error.get("msg", "invalid value"))
    # pydantic prefixes our own ValueError texts with "Value error, ".
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            message = message[len(prefix) :]
    message = one_line(message).rstrip(".")
    if message.startswith("Input should be"):
        message = "it should be" + message[len("Input should be") :]
    return message[:1].lower() + message[1:]


def did_you_mean(key: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def show(value: Any) -> str:
    text = one_line(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def k(text: object) -> str:
    """A key, name or path as the user wrote it, with control characters escaped to keep the
    message on one line."""
    value = str(text)
    if value.isprintable():
        return value
    # Escape only what is not printable; json.dumps(ensure_ascii=False) alone would keep U+0085,
    # U+2028 and U+2029 as they are, and those break the line as well as "\n" does.
    return "".join(ch if ch.isprintable() else json.dumps(ch)[1:-1] for ch in value)


def one_line(text: str) -> str:
    return " ".join(text.split())
