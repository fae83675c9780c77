"""The wording shared by every one-sentence configuration message: how a key, a value and a
guess at what was meant are written into a sentence that must stay on one line."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

from airbyte_fleet._redact import redact

__all__ = [
    "SELECTS_NOTHING_FIX",
    "chain",
    "did_you_mean",
    "fold_whitespace",
    "show",
    "spell_out_controls",
]

# For a [groups.NAME] or [schedules.NAME] table that selects no connection at all.
SELECTS_NOTHING_FIX = "give it connections, names, tags, workspaces, groups or all = true"


def chain(names: Sequence[str], *, most: int = 8) -> str:
    """Names joined by arrows (``a -> b -> a``), the middle left out past *most* of them: a
    message stays one readable sentence whatever a config file chains together."""
    shown = [spell_out_controls(name) for name in names]
    if len(shown) > most:
        shown = [*shown[: most - 3], "...", *shown[-2:]]
    return " -> ".join(shown)


def did_you_mean(key: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def show(value: Any) -> str:
    """*value* quoted for a sentence: repr() escapes line breaks; long values are cut.

    A secret in it is masked first: once cut (or its spaces folded) it could not be recognised,
    and its first 56 characters would show (a client secret pasted into the wrong variable)."""
    text = fold_whitespace(redact(repr(value)))
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
