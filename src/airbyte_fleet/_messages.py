"""The wording shared by every one-sentence configuration message: how a key, a value and a
guess at what was meant are written into a sentence that must stay on one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = [
    "SELECTS_NOTHING_FIX",
    "did_you_mean",
    "fold_whitespace",
    "show",
    "spell_out_controls",
]

# For a [groups.NAME] or [schedules.NAME] table that selects no connection at all.
SELECTS_NOTHING_FIX = "give it connections, names, tags, workspaces, groups or all = true"


def did_you_mean(key: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def show(value: Any) -> str:
    """*value* quoted for a sentence: repr() escapes line breaks; long values are cut."""
    text = fold_whitespace(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def spell_out_controls(text: object) -> str:
    """*text* (a key, name or path as the user wrote it) with line breaks and other control
    characters spelled out (``\\n``): one line, always, and nothing the user typed is lost."""
    value = str(text)
    if value.isprintable():
        return value
    # Per character: U+0085, U+2028 and U+2029 break a line as well as "\n" does.
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in value)


def fold_whitespace(text: str) -> str:
    """*text* with every run of whitespace, line breaks included, folded into one space."""
    return " ".join(text.split())
