"""Keep secrets out of every string the program shows.

Secrets are registered once, where they are read from configuration; every log line, error message and
result passes through :func:`redact` on its way out, so a secret that slips into a message by accident
(an echoed request body, a URL with credentials) is still masked.

A secret rarely slips out as typed: a message quotes it with ``repr`` (``back\\\\slash``), a server
echoes the JSON body we sent (``\\"``, ``\\u00f6``), a URL carries it percent-encoded (``%5C``). So each
secret is matched in every one of those spellings, character by character: a character that some
escaper rewrites matches any of its escaped forms, the others match only themselves. The pattern is
built once, at registration; :func:`redact`, which runs on every log line, does one regex pass.
"""

from __future__ import annotations

import re
import string
import threading

__all__ = ["MIN_SECRET_LENGTH", "forget_secrets", "redact", "register_secret"]

# Shorter values would mask ordinary words; the configuration warns about (the worker refuses)
# a secret this short, because it would show in clear.
MIN_SECRET_LENGTH = 4
_MASK = "***"
# Written as themselves by repr(), JSON (ASCII or not) and URL quoting alike.
_PLAIN = frozenset(string.ascii_letters + string.digits + "-._~")
# JSON's short escapes; "/" may be escaped too (PHP and some proxies do).
_JSON_SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n"}
_JSON_SHORT |= {"\r": "\\r", "\t": "\\t"}

_lock = threading.Lock()
_secrets: dict[str, str] = {}  # secret -> the regex matching every spelling of it
_pattern: re.Pattern[str] | None = None

# Bearer/Basic credentials in echoed headers are masked even when we never saw the value (for example
# a token minted by the server that a log line quotes). The word boundary before "bearer" is checked
# in _mask_header: a leading \b in a case-insensitive pattern makes re try every position, and this
# runs on every log line.
_AUTH_HEADER = re.compile(r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")


def register_secret(value: str | None) -> bool:
    """Remember *value* so that :func:`redact` masks it, in any spelling, from now on.

    Returns whether it will be masked: a value shorter than :data:`MIN_SECRET_LENGTH` is not.
    """
    global _pattern
    if not value or len(value) < MIN_SECRET_LENGTH:
        return False
    with _lock:
        if value in _secrets:
            return True
        _secrets[value] = _spellings(value)
        ordered = sorted(_secrets, key=len, reverse=True)  # the longest secret wins an overlap
        _pattern = re.compile("|".join(_secrets[s] for s in ordered))
    return True


def redact(text: str) -> str:
    """Return *text* with every registered secret and any credential header masked."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(_MASK, text)
    return _AUTH_HEADER.sub(_mask_header, text)


def _mask_header(match: re.Match[str]) -> str:
    start = match.start()
    before = match.string[start - 1] if start else " "
    if before.isalnum() or before == "_":  # inside a word ("xbasic ..."): not a header
        return match.group(0)
    return f"{match.group(1)} {_MASK}"


def forget_secrets() -> None:
    """Drop every registered secret (tests use this between cases)."""
    global _pattern
    with _lock:
        _secrets.clear()
        _pattern = None


def _spellings(secret: str) -> str:
    """A regex matching *secret* raw, as ``repr``/``ascii`` write it, JSON-escaped (``ensure_ascii``
    or not) and URL-encoded (``quote``, ``quote_plus``, any hex case), in any mixture."""
    parts = []
    for ch in secret:
        if ch in _PLAIN:
            parts.append(re.escape(ch))
            continue
        forms = sorted(_char_forms(ch), key=len, reverse=True)
        parts.append(f"(?:{'|'.join(re.escape(form) for form in forms)})")
    return "".join(parts)


def _char_forms(ch: str) -> set[str]:
    forms = {ch, repr(ch)[1:-1], ascii(ch)[1:-1], _JSON_SHORT.get(ch, ch)}
    if ch in "'\"":
        forms.add("\\" + ch)  # inside a repr quoted with the same character
    # JSON's \uXXXX, as a surrogate pair beyond the BMP; encoders differ in the hex case.
    utf16 = ch.encode("utf-16-be", "surrogatepass")
    units = [int.from_bytes(utf16[i : i + 2], "big") for i in range(0, len(utf16), 2)]
    for fmt in ("\\u{:04x}", "\\u{:04X}"):
        forms.add("".join(fmt.format(unit) for unit in units))
    encoded = ch.encode("utf-8", "surrogatepass")
    for fmt in ("%{:02X}", "%{:02x}"):
        forms.add("".join(fmt.format(byte) for byte in encoded))
    if ch == " ":
        forms.add("+")  # quote_plus, form bodies
    return forms
