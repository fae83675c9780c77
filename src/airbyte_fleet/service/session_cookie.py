"""The browser's session cookie: what the login form gets in exchange for the bearer token.

A page's ``EventSource`` cannot send an ``Authorization`` header, so a browser proves itself with
a cookie instead. Its value is never the token: it is ``v1.<expires>.<nonce>.<mac>``, where
``mac`` is an HMAC-SHA256 of the rest under a key derived from the token. Written by hand on
``hmac`` (a dozen lines): a signed value needs no shared table, so every replica sharing the token
accepts a cookie any of them issued, and changing the token ends every session.

Logging out forgets the cookie in the browser and remembers its nonce as revoked on this replica
until it would have expired anyway (the other replicas accept it until then: the token, not the
cookie, is the secret to rotate).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

__all__ = ["COOKIE_NAME", "SESSION_SECONDS", "SessionCookies"]

COOKIE_NAME = "fleet_session"
# A working day: someone watching the nightly refresh logs in once in the morning.
SESSION_SECONDS = 12 * 3600
_VERSION = "v1"
# Revoked nonces kept at most: past this the oldest go first (a flood of logouts must not grow
# memory without bound; a dropped one is still refused by the browser, which deleted it).
_MAX_REVOKED = 10_000


class SessionCookies:
    """Issues and checks session cookie values for one token."""

    def __init__(
        self,
        token: str,
        *,
        lifetime: float = SESSION_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = hmac.new(
            token.encode("utf-8", "surrogatepass"),
            b"airbyte-fleet browser session " + _VERSION.encode(),
            hashlib.sha256,
        ).digest()
        self.lifetime = lifetime
        self._clock = clock
        self._revoked: dict[str, float] = {}

    def issue(self) -> tuple[str, int]:
        """A new cookie value and its lifetime in seconds."""
        expires = int(self._clock() + self.lifetime)
        nonce = _b64(secrets.token_bytes(18))
        body = f"{_VERSION}.{expires}.{nonce}"
        return f"{body}.{self._mac(body)}", int(self.lifetime)

    def valid(self, value: str | None) -> bool:
        """Whether *value* is a cookie this token issued, not expired nor revoked here."""
        parsed = self._parse(value)
        return parsed is not None and parsed[1] not in self._revoked

    def revoke(self, value: str | None) -> None:
        """Refuse *value* from now on (on this replica), if it is a valid cookie."""
        parsed = self._parse(value)
        if parsed is None:
            return
        now = self._clock()
        self._revoked = {n: t for n, t in self._revoked.items() if t > now}
        while len(self._revoked) >= _MAX_REVOKED:
            self._revoked.pop(next(iter(self._revoked)))
        self._revoked[parsed[1]] = parsed[0]

    def _parse(self, value: str | None) -> tuple[float, str] | None:
        """(expires, nonce) of a well-signed, unexpired *value*; None otherwise."""
        if not value:
            return None
        version, _, rest = value.partition(".")
        expires_text, _, rest = rest.partition(".")
        nonce, _, mac = rest.partition(".")
        if version != _VERSION or not expires_text.isdigit() or not nonce or not mac:
            return None
        body = f"{version}.{expires_text}.{nonce}"
        if not hmac.compare_digest(_raw(mac), _raw(self._mac(body))):
            return None
        expires = float(expires_text)
        if expires <= self._clock():
            return None
        return expires, nonce

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(text: str) -> bytes:
    # A cookie header's bytes that are not UTF-8 reach us as surrogate escapes.
    return text.encode("utf-8", "surrogatepass")
