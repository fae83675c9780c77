"""A registered secret never shows, in any spelling: raw, as ``repr`` quotes it, JSON-escaped
(a server echoing the body we sent) or URL-encoded (issue 10.10); a credential too short to be
masked is warned about."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

import anyio
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airbyte_fleet._logging import configure_logging
from airbyte_fleet._redact import MIN_SECRET_LENGTH, forget_secrets, redact, register_secret
from airbyte_fleet.api import AirbyteError
from conftest import SimFactory, client_for

# Every character an escaper rewrites: a backslash, a quote, non-ASCII, beyond the BMP, a space.
SECRET = 'back\\slash0123"se cret/ö€😀'


def spellings(secret: str) -> dict[str, str]:
    """How a secret shows up when something writes it down without meaning to."""
    return {
        "raw": secret,
        "repr": repr(secret),
        "repr in a container": repr({"client_secret": secret}),
        "ascii": ascii(secret),
        "json": json.dumps(secret),
        "json, not ascii": json.dumps(secret, ensure_ascii=False),
        "json, / escaped": json.dumps(secret).replace("/", "\\/"),
        "url quote": quote(secret),
        "url quote, no safe": quote(secret, safe=""),
        "url quote_plus": quote_plus(secret),
        "url, lower-case hex": re.sub(
            "%[0-9A-F]{2}", lambda m: m.group().lower(), quote(secret, safe="")
        ),
    }


def _leaks(text: str, secret: str = SECRET) -> list[str]:
    """The spellings of *secret* that *text* shows (the quotes repr and JSON add left off)."""
    found = []
    for name, form in spellings(secret).items():
        if name in ("repr", "ascii", "json", "json, not ascii", "json, / escaped"):
            form = form[1:-1]
        if name == "repr in a container":
            continue  # its body is the repr form
        if form in text:
            found.append(name)
    return found


@pytest.mark.parametrize("name", list(spellings(SECRET)))
def test_every_spelling_is_masked(name: str) -> None:
    assert register_secret(SECRET)
    form = spellings(SECRET)[name]
    shown = redact(f"before {form} after")
    assert "***" in shown
    assert _leaks(shown) == []
    assert shown.startswith("before ")
    assert shown.endswith(" after")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(
        # quote() cannot encode a lone surrogate; "*" is the mask's own character.
        alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="*"),
        min_size=MIN_SECRET_LENGTH,
        max_size=40,
    )
)
def test_any_secret_is_masked_in_every_spelling(secret: str) -> None:
    forget_secrets()
    register_secret(secret)
    for name, form in spellings(secret).items():
        shown = redact(f"<{form}>")
        assert secret not in shown, name
        assert form not in shown, name


def test_text_without_secrets_is_left_alone() -> None:
    register_secret(SECRET)
    register_secret("Passw0rd-long-enough")
    text = 'GET /jobs?status=running 200 {"a": "back\\\\slash", "b": "caf%C3%A9"} Bearer 1234'
    assert redact(text) == text


def test_a_secret_too_short_is_not_masked_and_says_so() -> None:
    assert not register_secret("ab3")
    assert redact("ab3 stays") == "ab3 stays"
    assert register_secret("abc4")


# ----------------------------------------------------------------------------- where it happens


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(extra)
    return env


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    result = await anyio.run_process(
        [sys.executable, "-m", "airbyte_fleet", *args], env=env, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.mark.anyio
async def test_an_invalid_value_message_does_not_show_the_secret_as_repr_quotes_it() -> None:
    # The secret pasted into the wrong variable: the message quotes that value with repr().
    env = _cli_env(
        AIRBYTE_BASE_URL="http://127.0.0.1:9",
        AIRBYTE_CLIENT_ID="id",
        AIRBYTE_CLIENT_SECRET=SECRET,
        AIRBYTE_READ_TIMEOUT=SECRET,
    )
    code, out, err = await _cli("run", "--all", "--dry-run", env=env)
    assert code == 2
    assert "AIRBYTE_READ_TIMEOUT='***' is invalid" in err
    assert _leaks(out + err) == []


@pytest.mark.anyio
async def test_a_url_encoded_secret_in_the_base_url_is_masked() -> None:
    # Some tools take credentials in a query string; the URL is refused, and quoted in the refusal.
    url = "http://127.0.0.1:9/api/public/v1?" + urlencode({"client_secret": SECRET})
    env = _cli_env(AIRBYTE_BASE_URL=url, AIRBYTE_CLIENT_ID="id", AIRBYTE_CLIENT_SECRET=SECRET)
    code, out, err = await _cli("run", "--all", "--dry-run", env=env)
    assert code == 2
    assert "has a query or fragment" in err
    assert "client_secret=***" in err
    assert _leaks(out + err) == []


Echo = Callable[[str], web.Response]
ECHOES: dict[str, Echo] = {
    # A framework's error page that quotes what it could not handle.
    "text": lambda body: web.Response(status=500, text=f"could not handle {body}"),
    # A problem whose message is the request body, as text.
    "json": lambda body: web.json_response({"message": f"bad request: {body}"}, status=500),
}


@asynccontextmanager
async def echoing_token_endpoint(echo: Echo) -> AsyncIterator[str]:
    """A token endpoint that answers 500 with the request body in it."""

    async def token(request: web.Request) -> web.Response:
        return echo(await request.text())

    app = web.Application()
    app.router.add_post("/api/public/v1/applications/token", token)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(ECHOES))
async def test_a_token_endpoint_echoing_the_body_does_not_leak_it(kind: str) -> None:
    sink = io.StringIO()
    configure_logging("json", "debug", stream=sink)
    shown: list[str] = []
    async with (
        echoing_token_endpoint(ECHOES[kind]) as root,
        client_for(root, client_secret=SECRET) as client,
    ):
        with pytest.raises(AirbyteError) as caught:
            await client.list_workspaces()
        shown += [str(caught.value), repr(caught.value)]
    configure_logging("json", "info")
    retries = [json.loads(line) for line in sink.getvalue().splitlines()]
    retries = [line for line in retries if line["event"] == "airbyte_retry"]
    assert retries  # the echo really was logged, once per try
    assert all("client_secret" in line["reason"] for line in retries)
    assert all("***" in line["reason"] for line in retries)
    assert _leaks(sink.getvalue() + "\n".join(shown)) == []


@pytest.mark.anyio
async def test_a_credential_too_short_to_mask_is_warned_about(make_sim: SimFactory) -> None:
    sim, root = await make_sim(connections=2, client_secret="Zq9")
    env = _cli_env(
        AIRBYTE_BASE_URL=root, AIRBYTE_CLIENT_ID="sim-client", AIRBYTE_CLIENT_SECRET="Zq9"
    )
    code, out, err = await _cli("connections", "--output", "json", env=env)
    assert code == 0, err
    assert len(json.loads(out)) == len(sim.connections)
    lines: list[dict[str, Any]] = [json.loads(line) for line in err.splitlines()]
    (warning,) = [line for line in lines if line["event"] == "credential_too_short"]
    assert warning["level"] == "warning"
    assert warning["setting"] == "AIRBYTE_CLIENT_SECRET"
    assert warning["message"] == (
        "AIRBYTE_CLIENT_SECRET is shorter than 4 characters, too short to be masked in log lines "
        "and messages; use a longer one."
    )


def test_a_secret_at_the_edge_of_an_html_error_excerpt_is_masked_before_the_cut() -> None:
    from airbyte_fleet.api.errors import Problem

    secret = "edge-Secret-Cut-Here-0451"
    register_secret(secret)
    try:
        # A proxy's page echoing the secret so that the 200-character excerpt ends inside it.
        page = "<html>" + "x" * (200 - 6 - 10) + secret + " and more</html>"
        message = Problem.parse(502, page.encode()).message or ""
        assert secret[:10] not in message
        assert "***" in message
    finally:
        forget_secrets()
