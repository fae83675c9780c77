"""A real PostgreSQL for the tests: a fresh database per test, all dropped when the session ends.

The server is ``AIRBYTE_FLEET_TEST_DATABASE_URL`` (default: the project's machines' local server,
``postgresql://postgres@127.0.0.1:5432/test``, trust auth). Each database made here is named
``fleet_test_<session>_<n>`` and created from ``template0``, so a test starts from nothing and
never sees another test's tables. Under ``CI=true`` a server that cannot be reached fails the
test; elsewhere it is skipped with a sentence saying how to point the tests at one.
"""

from __future__ import annotations

import itertools
import os
import secrets
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

__all__ = ["DEFAULT_SERVER", "Databases", "server_url"]

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("AIRBYTE_FLEET_TEST_DATABASE_URL", "").strip() or DEFAULT_SERVER


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class Databases:
    """Makes fresh databases on the test server and drops every one of them at :meth:`close`."""

    def __init__(self, server: str) -> None:
        self.server = server
        self._prefix = f"fleet_test_{os.getpid()}_{secrets.token_hex(3)}"
        self._numbers = itertools.count(1)
        self._made: list[str] = []
        self._problem: str | None = None
        try:
            with psycopg.connect(server, autocommit=True, connect_timeout=5):
                pass
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._problem = (
                f"no PostgreSQL at {_shown(server)} ({first}); start one, or set "
                "AIRBYTE_FLEET_TEST_DATABASE_URL=postgresql://USER@HOST:PORT/DB to a server "
                "where USER may create databases"
            )

    def require(self) -> None:
        """Fail (under CI=true) or skip the calling test when there is no server."""
        if self._problem is None:
            return
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(f"CI=true: {self._problem}")
        pytest.skip(self._problem)

    def new(self) -> str:
        """The URL of a new, empty database."""
        self.require()
        name = f"{self._prefix}_{next(self._numbers)}"
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            )
        self._made.append(name)
        return _with_database(self.server, name)

    def close(self) -> None:
        if not self._made:
            return
        with psycopg.connect(self.server, autocommit=True) as conn:
            for name in self._made:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
        self._made.clear()


def _shown(url: str) -> str:
    # The server, without a password a user may have put in the URL.
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"postgresql://{user}{host}{port}{parts.path}"
