"""Credentials for Airbyte, as one request/response flow: headers for a request, and what to do on 401.

The client asks :meth:`Auth.headers` before each request; when Airbyte answers 401 it calls
:meth:`Auth.refresh_after_401` once and replays the request if that returns ``True``. A second 401 is
an authentication error, never a loop.

:class:`ClientCredentials` is the token refresher: one object per client, shared by every request
that client sends, refreshing ahead of expiry and with a single flight (a hundred callers holding an
expired token cause exactly one token request).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal, Protocol

from pydantic import SecretStr

from airbyte_fleet._logging import get_logger
from airbyte_fleet._redact import register_secret

__all__ = [
    "Auth",
    "AuthMode",
    "BasicAuth",
    "BearerToken",
    "ClientCredentials",
    "NoAuth",
    "TokenFetcher",
    "TokenGrant",
]

AuthMode = Literal["client_credentials", "bearer", "basic", "none"]

log = get_logger("airbyte_fleet.auth")

# When the server leaves out expires_in we assume the shortest lifetime Airbyte ever issued.
DEFAULT_TOKEN_TTL = 180.0
# Refresh this long before expiry (the official SDK uses 60 s), but never more than a quarter of
# the lifetime, so short-lived tokens are still used for most of their life.
REFRESH_MARGIN = 60.0


@dataclass(frozen=True)
class TokenGrant:
    access_token: SecretStr
    expires_in: float | None


class TokenFetcher(Protocol):
    """What the refresher needs from the HTTP client: one token request, retried as the client sees fit."""

    async def fetch_token(
        self, token_url: str, client_id: str, client_secret: SecretStr
    ) -> TokenGrant: ...


class Auth:
    """No credentials; the base of the other modes."""

    mode: ClassVar[AuthMode] = "none"

    async def headers(self, fetcher: TokenFetcher) -> dict[str, str]:
        return {}

    async def refresh_after_401(self, fetcher: TokenFetcher, rejected: Mapping[str, str]) -> bool:
        """Make the next :meth:`headers` differ from *rejected*; ``True`` means replaying can help."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mode={self.mode!r})"


class NoAuth(Auth):
    """A self-managed Airbyte with authentication switched off."""


class BearerToken(Auth):
    """A static token (``AIRBYTE_API_TOKEN``); it cannot be refreshed."""

    mode: ClassVar[AuthMode] = "bearer"

    def __init__(self, token: SecretStr) -> None:
        register_secret(token.get_secret_value())
        self._header = {"Authorization": f"Bearer {token.get_secret_value()}"}

    async def headers(self, fetcher: TokenFetcher) -> dict[str, str]:
        return dict(self._header)


class BasicAuth(Auth):
    """HTTP Basic, as the nginx proxy in front of older OSS deployments expects."""

    mode: ClassVar[AuthMode] = "basic"

    def __init__(self, username: str, password: SecretStr) -> None:
        register_secret(password.get_secret_value())
        raw = f"{username}:{password.get_secret_value()}".encode()
        encoded = base64.b64encode(raw).decode("ascii")
        register_secret(encoded)
        self.username = username
        self._header = {"Authorization": f"Basic {encoded}"}

    async def headers(self, fetcher: TokenFetcher) -> dict[str, str]:
        return dict(self._header)

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r})"


class ClientCredentials(Auth):
    """OAuth client credentials against ``<base>/applications/token`` (Cloud and self-managed ≥ 1.0)."""

    mode: ClassVar[AuthMode] = "client_credentials"

    def __init__(
        self,
        client_id: str,
        client_secret: SecretStr,
        token_url: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        margin: float = REFRESH_MARGIN,
    ) -> None:
        register_secret(client_secret.get_secret_value())
        self.client_id = client_id
        self.token_url = token_url
        self._secret = client_secret
        self._clock = clock
        self._margin = margin
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self.client_id!r}, token_url={self.token_url!r})"

    async def headers(self, fetcher: TokenFetcher) -> dict[str, str]:
        token = self._token
        if token is None or self._clock() >= self._refresh_at:
            async with self._lock:
                # Whoever held the lock before us may have refreshed already.
                if self._token is None or self._clock() >= self._refresh_at:
                    await self._refresh(fetcher)
                token = self._token
        assert token is not None
        return {"Authorization": f"Bearer {token}"}

    async def refresh_after_401(self, fetcher: TokenFetcher, rejected: Mapping[str, str]) -> bool:
        async with self._lock:
            current = f"Bearer {self._token}" if self._token else None
            # Many requests can hit 401 with the same stale token at once; only the first refreshes.
            if current is None or current == rejected.get("Authorization"):
                await self._refresh(fetcher)
        return True

    async def _refresh(self, fetcher: TokenFetcher) -> None:
        grant = await fetcher.fetch_token(self.token_url, self.client_id, self._secret)
        token = grant.access_token.get_secret_value()
        register_secret(token)
        ttl = grant.expires_in if grant.expires_in and grant.expires_in > 0 else DEFAULT_TOKEN_TTL
        self._token = token
        self._refresh_at = self._clock() + ttl - min(self._margin, ttl / 4)
        self.refreshes += 1
        log.debug("token_refreshed", expires_in=ttl, refreshes=self.refreshes)
