"""Keep secrets out of every string the program shows.

Secrets are registered once, where they are read from configuration; every log line, error message and
result passes through :func:`redact` on its way out, so a secret that slips into a message by accident
(an echoed request body, a URL with credentials) is still masked.
"""

from __future__ import annotations

import re
import threading

_MASK = "***"
_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

# Bearer/Basic credentials in echoed headers are masked even when we never saw the value (for example
# a token minted by the server that a log line quotes).
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def register_secret(value: str | None) -> None:
    """Remember *value* so that :func:`redact` masks it from now on."""
    global _pattern
    # Very short values would mask ordinary words; nobody's real secret is that short.
    if not value or len(value) < 4:
        return
    with _lock:
        if value in _secrets:
            return
        _secrets.add(value)
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """Return *text* with every registered secret and any credential header masked."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(_MASK, text)
    return _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {_MASK}", text)


def forget_secrets() -> None:
    """Drop every registered secret (tests use this between cases)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None
