"""Opaque bearer tokens with a clock-based expiry."""

from __future__ import annotations

import secrets

from ._clock import Clock

__all__ = ["TokenStore"]

# Expired tokens are dropped once the store grows past this, to bound memory in long runs.
_PRUNE_ABOVE = 10_000


class TokenStore:
    def __init__(self, clock: Clock, ttl: int) -> None:
        self._clock = clock
        self._ttl = ttl
        self._expiry: dict[str, float] = {}

    @property
    def ttl(self) -> int:
        return self._ttl

    def issue(self) -> str:
        now = self._clock.now()
        if len(self._expiry) > _PRUNE_ABOVE:
            self._expiry = {t: exp for t, exp in self._expiry.items() if exp > now}
        token = secrets.token_urlsafe(32)
        self._expiry[token] = now + self._ttl
        return token

    def is_valid(self, token: str) -> bool:
        expiry = self._expiry.get(token)
        return expiry is not None and self._clock.now() < expiry

    def expire_all(self) -> int:
        count = len(self._expiry)
        self._expiry.clear()
        return count
