"""A PostgreSQL URL as messages may show it (never its password), and the check that one is one."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from airbyte_fleet.journal.store import JournalError

__all__ = ["SCHEMES", "check_url", "password_of", "redact_url"]

SCHEMES = ("postgresql", "postgres")
_MASK = "***"
# libpq takes a password in the query string too (?password=...).
_SECRET_PARAMS = frozenset({"password", "sslpassword"})


def _split_netloc(netloc: str) -> tuple[str | None, str | None, str]:
    """(user, password, hosts) of a netloc; hosts may be a list (``h1:5432,h2:5433``)."""
    if "@" not in netloc:
        return None, None, netloc
    userinfo, _, hosts = netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return user, password if colon else None, hosts


def redact_url(url: str) -> str:
    """*url* without its password (in the user part or the query string): what a message,
    a log line or a listing may show of a database URL."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return "<a database URL that cannot be read>"
    user, _, hosts = _split_netloc(parts.netloc)
    netloc = f"{user}@{hosts}" if user else hosts
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, _MASK if k in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def password_of(url: str) -> str | None:
    """The password *url* carries, if any (to keep it out of error texts)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    _, password, _ = _split_netloc(parts.netloc)
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _SECRET_PARAMS and value:
            return value
    return password or None


def check_url(url: str) -> str:
    """*url*, stripped, when it is a PostgreSQL URL; else :class:`JournalError` naming the fix."""
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in SCHEMES:
        raise JournalError(
            f"the database URL {redact_url(url)!r} is not a PostgreSQL URL; give one like "
            "postgresql://USER:PASSWORD@HOST:5432/DATABASE, or leave it empty to keep runs in "
            "the state directory's SQLite file"
        )
    return url
