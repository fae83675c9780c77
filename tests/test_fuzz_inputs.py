"""Fuzzing what users type: the config file, the environment and the command line.

The rule under test: every invalid input ends in one sentence on stderr and exit 2 — never a
traceback, never a trigger. A real simulator (``airbyte-fleet simulate`` in a subprocess, one for
the whole module) stands in for Airbyte, so an input that slipped through validation would really
trigger syncs there, and ``GET /_simulator/stats`` would count them.

``airbyte_fleet.cli.main`` runs in-process (it calls ``asyncio.run`` itself, so every test here is
synchronous); ``capsys`` captures what it prints and ``monkeypatch`` sets its environment.

Generated values never contain NUL, which no argv or environment can hold, nor a lone surrogate
other than U+DC80..U+DCFF: those are how Python spells bytes that are not UTF-8 in argv and the
environment (surrogateescape), so they are drawn too. Bugs this fuzzer found stay pinned in
``test_reported_bugs`` once fixed, and the strategies draw their kind of input; a bug still open is a
strict ``xfail`` there naming its issue item, to be turned into a plain case when it is fixed.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import select
import signal
import string
import subprocess
import sys
import time
import traceback
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import AliasChoices

from airbyte_fleet._redact import forget_secrets
from airbyte_fleet.cli import main
from airbyte_fleet.cli.parser import build_parser
from airbyte_fleet.config import AirbyteSettings

SIM_CLIENT_ID = "fuzz-client"
SIM_SECRET = "fuzz-Sim-Secret-8642-qwerty"
SECRET_VARS = ("AIRBYTE_CLIENT_SECRET", "AIRBYTE_PASSWORD", "AIRBYTE_API_TOKEN")
CONFIG = "{config}"  # in a case's argv: replaced by the path of the file the case describes
API = "/api/public/v1"

# ----------------------------------------------------------------------------- the simulator


@dataclass(frozen=True)
class Conn:
    id: str
    name: str
    workspace_id: str
    status: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Sim:
    root: str
    connections: tuple[Conn, ...]

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.connections]

    @property
    def active_id(self) -> str:
        return next(c.id for c in self.connections if c.status == "active")

    @property
    def workspaces(self) -> list[str]:
        return sorted({c.workspace_id for c in self.connections})

    @property
    def tags(self) -> list[str]:
        return sorted({t for c in self.connections for t in c.tags})

    def triggers(self) -> int:
        """``POST /jobs`` requests the simulator has seen so far (accepted or not)."""
        stats = _get_json(f"{self.root}/_simulator/stats")
        return int(stats["requests"].get("POST /jobs", 0))


def _get_json(url: str, token: str | None = None) -> Any:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def _list_connections(root: str) -> tuple[Conn, ...]:
    body = json.dumps({"client_id": SIM_CLIENT_ID, "client_secret": SIM_SECRET}).encode()
    request = urllib.request.Request(
        f"{root}{API}/applications/token",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        token = json.load(response)["access_token"]
    page = _get_json(f"{root}{API}/connections?limit=100", token)
    return tuple(
        Conn(
            id=c["connectionId"],
            name=c["name"],
            workspace_id=c["workspaceId"],
            status=c["status"],
            tags=tuple(t["name"] for t in c.get("tags", [])),
        )
        for c in page["data"]
    )


def _read_line(stream: Any, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([stream], [], [], left)[0]:
            raise TimeoutError(f"no line from the simulator within {timeout}s (got {line!r})")
        chunk = os.read(stream.fileno(), 1)
        if not chunk:
            raise RuntimeError(f"the simulator exited before it listened (got {line!r})")
        line += chunk
    return line.decode()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    log = tmp_path_factory.mktemp("sim") / "stderr.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airbyte_fleet",
                "simulate",
                "--port",
                "0",
                "--connections",
                "6",
                "--workspaces",
                "2",
                "--inactive",
                "1",
                "--client-id",
                SIM_CLIENT_ID,
                "--client-secret",
                SIM_SECRET,
                "--sync-seconds",
                "0.05:0.2",
                "--failure-rate",
                "0",
                "--incomplete-rate",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        try:
            try:
                line = _read_line(process.stdout, timeout=30)
            except (TimeoutError, RuntimeError) as exc:
                raise RuntimeError(f"{exc}; its stderr:\n{log.read_text()}") from None
            assert line.startswith("listening on http://"), line
            root = line.removeprefix("listening on ").strip()
            yield Sim(root=root, connections=_list_connections(root))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    # main() points structlog at capsys's stderr; later tests must not log into a closed stream.
    yield
    structlog.reset_defaults()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # No config/airbyte-fleet.toml or run journal of the checkout is found or written.
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ----------------------------------------------------------------------------- running a case


@dataclass(frozen=True)
class ConfigFile:
    """What ``--config {config}`` points at: a file with these contents, nothing, or a folder."""

    kind: str = "file"  # "file", "missing", "dir", "under_file" or "long"
    content: bytes = b""
    label: str = ""


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()  # over the working defaults of environment()
    unset: tuple[str, ...] = ()  # after env
    config: ConfigFile | None = None
    # Only Airbyte's answer shows the input is wrong (an unknown id): log lines may come first.
    online: bool = False
    # Set, but unused while AIRBYTE_AUTH_TYPE says client_credentials: there to be leaked.
    password: str = "zq-password-unused-1"
    token: str = "zq-token-unused-1"
    kinds: tuple[str, ...] = ()

    def environment(self, sim: Sim) -> dict[str, str]:
        env = {
            "AIRBYTE_BASE_URL": sim.root,
            "AIRBYTE_CLIENT_ID": SIM_CLIENT_ID,
            "AIRBYTE_CLIENT_SECRET": SIM_SECRET,
            "USE_SERVER_AUTH": "TRUE",
            "AIRBYTE_AUTH_TYPE": "client_credentials",
            "AIRBYTE_PASSWORD": self.password,
            "AIRBYTE_API_TOKEN": self.token,
            **dict(self.env),
        }
        for name in self.unset:
            env.pop(name, None)
        return env

    def secrets(self, sim: Sim) -> list[str]:
        """What the secret variables hold in this case; none of it may ever be printed."""
        env = self.environment(sim)
        return [env[name] for name in SECRET_VARS if env.get(name)]


@dataclass(frozen=True)
class Outcome:
    code: object
    out: str
    err: str
    crash: str | None
    triggers: int

    def show(self, case: Case) -> str:
        return (
            f"case: {case}\nexit: {self.code!r}\nstdout: {self.out[:2000]!r}\n"
            f"stderr: {self.err[-3000:]!r}\ntriggers: {self.triggers}\n{self.crash or ''}"
        )


def _settings_variables() -> set[str]:
    """Every environment name pydantic-settings reads for AirbyteSettings, upper case."""
    names = {"USE_SERVER_AUTH"}
    for name, info in AirbyteSettings.model_fields.items():
        names.add(name.upper())
        if isinstance(info.validation_alias, AliasChoices):
            names.update(c.upper() for c in info.validation_alias.choices if isinstance(c, str))
    return names


def invoke(sim: Sim, capsys: pytest.CaptureFixture[str], workdir: Path, case: Case) -> Outcome:
    path = workdir / "fuzz.toml"
    if case.config is not None:
        path.write_bytes(case.config.content)
        if case.config.kind == "missing":
            path = workdir / "no-such-folder" / "fuzz.toml"
        elif case.config.kind == "dir":
            path = workdir
        elif case.config.kind == "under_file":
            path = path / "fuzz.toml"
        elif case.config.kind == "long":  # more than the 255 bytes a file name may have
            path = workdir / ("x" * len(case.config.content) + ".toml")
    argv = [arg.replace(CONFIG, str(path)) for arg in case.argv]
    forget_secrets()  # every case must mask its secrets on its own
    with pytest.MonkeyPatch.context() as mp:
        # Nothing of the developer's or CI's environment may take part.
        ours = _settings_variables()
        for name in list(os.environ):
            if name.upper().startswith("AIRBYTE_") or name.upper() in ours:
                mp.delenv(name)
        mp.setenv("AIRBYTE_FLEET_STATE_DIR", str(workdir / "state"))
        for name, value in case.environment(sim).items():
            mp.setenv(name, value)
        capsys.readouterr()
        before = sim.triggers()
        crash: str | None = None
        code: object = None
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse exits instead of returning
            code = exc.code
        except Exception:
            crash = traceback.format_exc()
        captured = capsys.readouterr()
    return Outcome(code, captured.out, captured.err, crash, sim.triggers() - before)


def assert_no_secret(sim: Sim, outcome: Outcome, case: Case) -> None:
    secrets = case.secrets(sim)
    assert SIM_SECRET in secrets or "AIRBYTE_CLIENT_SECRET" in case.unset
    for secret in secrets:
        assert secret not in outcome.out + outcome.err, "secret printed\n" + outcome.show(case)


def _json_record(line: str) -> dict[str, Any] | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def error_sentence(line: str) -> str | None:
    """The sentence of a failed command's one error line: ``airbyte-fleet: ...`` as plain text,
    or, when the log lines are JSON, a record with ``"event": "fatal"`` and the sentence as
    ``error``. None for any other line."""
    if line.startswith("airbyte-fleet"):
        return line.split(": ", 1)[-1]
    record = _json_record(line)
    if record is not None and record.get("event") == "fatal":
        return str(record.get("error", ""))
    return None


# A console log line below the error level: ``<time> [info     ] config_file ...``.
_CONSOLE_LOG = re.compile(r"^\S+ \[(?:debug|info|warning)\s*\] (\S+)")


def assert_rejected(sim: Sim, outcome: Outcome, case: Case) -> None:
    """Exit 2, nothing on stdout, one sentence on stderr, no traceback, nothing triggered."""
    why = outcome.show(case)
    assert outcome.crash is None, "main() raised\n" + why
    assert "Traceback" not in outcome.err, why
    assert outcome.code == 2, why
    assert outcome.out == "", why
    assert outcome.triggers == 0, why
    lines = [line for line in outcome.err.splitlines() if line.strip()]
    errors = [sentence for line in lines if (sentence := error_sentence(line)) is not None]
    assert len(errors) == 1, why
    assert error_sentence(lines[-1]) == errors[0], why
    assert errors[0].rstrip().endswith((".", "?")), why
    for line in lines[:-1]:
        # Before the error, log lines only: the config file read (or none), and once the CLI
        # asked Airbyte, what it asked. Never a second error.
        record = _json_record(line)
        if record is None:
            console = _CONSOLE_LOG.match(line)
            assert console, why
            event = console.group(1)
        else:
            assert record.get("level") in ("debug", "info", "warning"), why
            event = record.get("event")
        assert case.online or event == "config_file", why
    assert_no_secret(sim, outcome, case)


# ----------------------------------------------------------------------------- building blocks

# Characters a user can get into argv, the environment or a file: anything but NUL, and of the
# surrogates only those that stand for bytes that are not UTF-8 (surrogateescape). Line breaks
# (whatever str.splitlines() breaks on) are drawn often: a raw one splits a one-line error.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
ANY_CHAR = (
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00")
    | st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF, categories=["Cs"])
    | st.sampled_from(LINE_BREAKS)
)


def any_text(
    chars: st.SearchStrategy[str] = ANY_CHAR, *, min_size: int = 0, max_size: int
) -> st.SearchStrategy[str]:
    """Text of *chars* (st.text() would drop the surrogates of ANY_CHAR)."""
    return st.lists(chars, min_size=min_size, max_size=max_size).map("".join)


def file_bytes(text: str) -> bytes:
    """What a file holding *text* holds: a character that stands for a byte is that byte."""
    return text.encode("utf-8", "surrogateescape")


# No float(), int(), duration, boolean word, choice, auth type or UUID accepts any of these.
POISON = "zqxwv!#$%&;?@|~^"
SECRET_ALPHABET = string.ascii_letters + string.digits + "-_.+/=~"

RUN_BASES: tuple[tuple[str, ...], ...] = (
    ("run", "--all", "--output", "json"),
    ("run", "--all", "--output", "json", "--no-wait"),
    ("run", "--all"),
)


def poisoned(
    chars: st.SearchStrategy[str] = ANY_CHAR, max_size: int = 12
) -> st.SearchStrategy[str]:
    """Text with at least one character no parser here accepts."""
    text = any_text(chars, max_size=max_size)
    return st.builds(lambda a, p, b: a + p + b, text, st.sampled_from(POISON), text)


def secret_values() -> st.SearchStrategy[str]:
    # Plain characters: if one leaked, it would show verbatim, not escaped by a repr().
    return st.text(SECRET_ALPHABET, min_size=10, max_size=30).map(lambda s: f"zq{s}")


def flag_value(flag: str, value: str) -> st.SearchStrategy[tuple[str, ...]]:
    return st.sampled_from([(flag, value), (f"{flag}={value}",)])


@dataclass(frozen=True)
class Piece:
    """A contiguous part of a case: arguments, environment, a config file."""

    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    unset: tuple[str, ...] = ()
    config: ConfigFile | None = None
    online: bool = False
    tail: tuple[str, ...] = ()  # goes last on the command line (a flag missing its value)
    kind: str = ""  # what is wrong with it, for the statistics (hypothesis.event)

    @property
    def flags(self) -> set[str]:
        return {a.split("=", 1)[0] for a in (*self.args, *self.tail) if a.startswith("--")}


def assemble(base: Sequence[str], pieces: Sequence[Piece], **extra: Any) -> Case:
    argv = [*base, *(a for p in pieces for a in p.args), *(a for p in pieces for a in p.tail)]
    configs = [p.config for p in pieces if p.config is not None]
    return Case(
        argv=tuple(argv),
        env=tuple(kv for p in pieces for kv in p.env),
        unset=tuple(name for p in pieces for name in p.unset),
        config=configs[-1] if configs else None,
        kinds=tuple(p.kind for p in pieces if p.kind),
        **extra,
    )


# ----------------------------------------------------------------------------- invalid values

DURATION_FLAGS = ("--timeout", "--poll-interval", "--deadline", "--retry-backoff")
MUST_BE_POSITIVE = ("--timeout", "--poll-interval", "--deadline")


def bad_durations(flag: str) -> st.SearchStrategy[str]:
    """Never a duration for *flag* (retry backoff may be zero, the others may not)."""
    fixed = [
        "soon",
        "5 minutes",
        "1h-30m",
        "m",
        "1x",
        "nan",
        "inf",
        "-inf",
        "1e999",
        "9" * 400,
        "",
        " ",
        "1.5.5s",
        "ms",
        "1hh",
        "--1",
        "0x10",
        "\u22125m",
        "5m30",
        "PT5M",
        "1,5s",
        "\u00bdh",
        "1e5m",
        "-1",
        "-0.5",
        "-1s",
        "-1e3",
    ]
    if flag in MUST_BE_POSITIVE:
        fixed += ["0", "0s", "0ms", "0.0", "0h0m", "-0", "1e-400"]
    return st.sampled_from(fixed) | poisoned()


def bad_ints(flag: str) -> st.SearchStrategy[str]:
    low, high = {"--max-concurrency": (1, 100_000), "--retries": (0, 100)}[flag]
    out_of_range = st.integers(max_value=low - 1, min_value=-(10**30)) | st.integers(
        min_value=high + 1, max_value=10**30
    )
    return (
        out_of_range.map(str)
        | st.sampled_from(["", " ", "1.5", "1e3", "ten", "0x10", "9" * 5000])
        | poisoned()
    )


CHOICES: dict[str, tuple[str, ...]] = {
    "--job-type": ("sync", "reset", "clear", "refresh"),
    "--if-running": ("adopt", "skip", "fail"),
    "--on-interrupt": ("cancel", "detach"),
    "--output": ("table", "json"),
    "--log-format": ("json", "console"),
    "--log-level": ("debug", "info", "warning", "error"),
}
VALUE_FLAGS = (
    "--connection",
    "--name",
    "--tag",
    "--workspace",
    "--group",
    "--config",
    *DURATION_FLAGS,
    "--max-concurrency",
    "--retries",
    "--grace",
    "--result-file",
    *CHOICES,
)
CONNECTIONS_VALUE_FLAGS = ("--workspace", "--tag", "--output", "--log-format", "--log-level")


def junk_ids(sim: Sim) -> st.SearchStrategy[str]:
    """A comma list with at least one item that is not a UUID (and maybe real ids around it)."""
    junk = poisoned(ANY_CHAR.filter(lambda c: c != ","), max_size=10).filter(
        lambda s: s.strip() != ""
    )
    junk = junk | st.sampled_from(["not-a-uuid", "urn:uuid:xyz", "{}", "12", sim.ids[0] + "0"])
    real = st.lists(st.sampled_from(sim.ids + sim.workspaces), max_size=2)
    return st.builds(
        lambda items, bad, at: ",".join([*items[:at], bad, *items[at:]]),
        real,
        junk,
        st.integers(0, 2),
    )


@st.composite
def bad_flag(draw: st.DrawFn, sim: Sim) -> Piece:
    """One invalid command-line element of ``run``, checked before any request."""
    kind = draw(st.sampled_from(["duration", "int", "grace", "choice", "id", "unknown", "missing"]))
    if kind == "duration":
        flag = draw(st.sampled_from(DURATION_FLAGS))
        piece = Piece(args=draw(flag_value(flag, draw(bad_durations(flag)))))
    elif kind == "int":
        flag = draw(st.sampled_from(["--max-concurrency", "--retries"]))
        piece = Piece(args=draw(flag_value(flag, draw(bad_ints(flag)))))
    elif kind == "grace":
        # A duration of zero or more, like --retry-backoff: negative, nan and inf included.
        piece = Piece(args=draw(flag_value("--grace", draw(bad_durations("--grace")))))
    elif kind == "choice":
        flag = draw(st.sampled_from(sorted(CHOICES)))
        value = draw(any_text(max_size=12).filter(lambda v: v not in CHOICES[flag]))
        piece = Piece(args=draw(flag_value(flag, value)))
    elif kind == "id":
        flag = draw(st.sampled_from(["--connection", "--workspace"]))
        piece = Piece(args=draw(flag_value(flag, draw(junk_ids(sim)))))
    elif kind == "unknown":
        piece = Piece(args=(draw(unknown_args()),))
    else:
        piece = draw(missing_value(VALUE_FLAGS))
    return replace(piece, kind=f"flag: {kind}")


def long_options(command: str) -> list[str]:
    """Every ``--option`` of *command*, as the real parser has them."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = commands.choices[command]._option_string_actions
    return sorted(o for o in options if o.startswith("--"))


def abbreviations(command: str) -> st.SearchStrategy[str]:
    """A real option cut short (``--retry`` for ``--retry-backoff``): never an option itself,
    since prefix matching is off everywhere, maybe with a value."""
    options = long_options(command)
    cut = st.sampled_from(options).flatmap(
        lambda option: st.integers(3, len(option) - 1).map(lambda n: option[:n])
    )
    short = cut.filter(lambda o: o not in options)
    return short | st.builds(lambda o, v: f"{o}={v}", short, any_text(max_size=6))


def unknown_args(command: str = "run") -> st.SearchStrategy[str]:
    # No option of any subcommand starts with these prefixes; the rest is free text.
    flag = st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from(["--x-", "--zz", "--unknown-", "-Q", "-Z"]),
        any_text(max_size=10),
    )
    positional = any_text(max_size=10).filter(lambda s: not s.startswith("-"))
    return flag | positional | abbreviations(command)


def missing_value(flags: Sequence[str]) -> st.SearchStrategy[Piece]:
    """A flag that wants a value, last on the line or followed by another flag."""
    flag = st.sampled_from(flags)
    last = flag.map(lambda f: Piece(tail=(f,)))
    before_flag = st.builds(
        lambda f, nxt: Piece(args=(f, nxt)),
        flag,
        st.sampled_from(["--all", "--dry-run", "--no-progress", "--output", "--help"]),
    )
    return last | before_flag


# ----------------------------------------------------------------------------- invalid files


def toml_str(text: str) -> str:
    return json.dumps(text)  # a TOML basic string (or invalid TOML: then the file is invalid)


BAD_RUN_VALUES: dict[str, list[str]] = {
    "job_type": ['"full"', "1", "true", '""'],
    "max_concurrency": ["0", "-1", "100001", "1.5", '"lots"', "true", "[]"],
    "poll_interval": ['"soon"', "0", "-5", "true", "[1]", "nan", "inf", "1979-05-27"],
    "timeout": ['"15 minutes"', "0", "-5", '"0s"', "{ a = 1 }", "-inf", "12:00:00"],
    "deadline": ["0", '"0"', "[1]", '"forever"', "false"],
    "retries": ["-1", "101", "1.5", '"two"', "true"],
    "retry_backoff": ["-1", '"-1s"', '"soon"', "nan", "true"],
    "wait": ['"maybe"', "2", "[]", "1.5"],
    "if_running": ['"wait"', "0", "false"],
    "include_inactive": ['"yes please"', "3"],
    "cancel_on_timeout": ['"sometimes"', "-1"],
}
BAD_AIRBYTE_VALUES: dict[str, list[str]] = {
    "base_url": ["8000", "true", "[]"],
    "host": ["1", "{ a = 1 }"],
    "client_id": ["5", "false"],
    "client_secret": ["12345", '["hunter2"]'],
    "password": ["1.5"],
    "api_token": ["[]"],
    "use_server_auth": ['"maybe"', "2", "[]"],
    "connect_timeout": ['"fast"', "0", "-1", "true", "nan"],
    "read_timeout": ['"slow"', "-0.5", "false"],
    "max_connections": ["0", "10001", "1.5", '"many"', "true"],
}
BAD_DOCS = [
    "verbose = true\n",
    "max_concurrency = 5\n",
    'base_url = "http://x"\n',
    "[rnu]\nretries = 1\n",
    "run = 5\n",
    'airbyte = "http://x"\n',
    '[selection]\nconnections = ["abc"]\n',
    '[selection]\nworkspaces = "12"\n',
    "[selection]\ntags = 5\n",
    "[selection]\nall = 'yes please'\n",
    '[selection]\ngroups = ["nope"]\n',
    "[selection]\ntag = ['x']\n",
    "[selection.inner]\ntags = ['x']\n",
    "[groups.finance]\n",
    "[groups.finance]\ntagz = ['x']\n",
    "[groups.finance.eu]\ntags = ['x']\n",
    '[groups."finance.eu"]\ntags = ["x"]\n',
    '[groups."a,b"]\ntags = ["x"]\n',
    "groups = { finance = 1 }\n",
    "[groups.a]\ngroups = ['b']\n",
    "schedules = { nightly = 'x' }\n",
    "[run]\nretries = 1\nretries = 2\n",
    "[run]\n[run]\n",
    '[run]\ntimeout = "45m\n',
    "[[run]]\n",
]
VALID_FILLER = [
    "",
    "# a comment\n",
    '[airbyte]\nconnect_timeout = 5\nclient_id = "someone"\n',
    '[run]\nmax_concurrency = 3\ntimeout = "45m"\n',
    "[schedules.nightly]\ncron = '0 2 * * *'\n",
]


CONFIG_KINDS = (
    *("junk", "bytes", "deep", "doc", "key", "run", "airbyte"),  # what the file holds
    *("long", "under_file", "missing", "dir"),  # what --config points at
)


@st.composite
def bad_config(draw: st.DrawFn) -> ConfigFile:
    kind = draw(st.sampled_from(CONFIG_KINDS))
    if kind in ("missing", "dir", "under_file"):
        return ConfigFile(kind=kind, label=kind)
    if kind == "long":
        return ConfigFile(kind=kind, content=b"x" * draw(st.integers(256, 5000)), label=kind)
    if kind == "bytes":
        # 0xFF is never UTF-8.
        raw = draw(st.binary(max_size=60)) + b"\xff" + draw(st.binary(max_size=20))
        return ConfigFile(content=raw, label=kind)
    if kind == "junk":
        # Whatever the junk opened (a string, a table header), "= =" on a line of its own is
        # no TOML.
        text = draw(any_text(max_size=80)) + "\n= =\n"
        return ConfigFile(content=file_bytes(text), label=kind)
    if kind == "deep":
        depth = draw(st.integers(1_000, 5_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a=", "}")]))
        value = opener * depth + "1" + closer * depth
        table = draw(st.sampled_from(["", "[run]\n", "[schedules.n]\n"]))
        return ConfigFile(content=f"{table}timeout = {value}\n".encode(), label=kind)
    if kind == "run":
        key = draw(st.sampled_from(sorted(BAD_RUN_VALUES)))
        body = f"[run]\n{key} = {draw(st.sampled_from(BAD_RUN_VALUES[key]))}\n"
    elif kind == "airbyte":
        key = draw(st.sampled_from(sorted(BAD_AIRBYTE_VALUES)))
        body = f"[airbyte]\n{key} = {draw(st.sampled_from(BAD_AIRBYTE_VALUES[key]))}\n"
    elif kind == "key":
        # A key no table knows, spelled with any characters at all.
        key = draw(poisoned(max_size=8))
        table = draw(st.sampled_from(["run", "airbyte", "selection", "groups.g"]))
        body = f"[{table}]\n{toml_str(key)} = 1\n"
        if table == "groups.g":
            body += "tags = ['x']\n"
    else:
        body = draw(st.sampled_from(BAD_DOCS))
    # A key above every table header is top-level; below one it would belong to that table.
    before = draw(st.sampled_from(VALID_FILLER if body.startswith("[") else VALID_FILLER[:2]))
    after = draw(st.sampled_from(VALID_FILLER))
    return ConfigFile(content=file_bytes(before + body + after), label=kind)


# ----------------------------------------------------------------------------- invalid environment


def bad_urls(sim: Sim) -> st.SearchStrategy[str]:
    host_port = sim.root.removeprefix("http://")
    host = host_port.rsplit(":", 1)[0]
    fixed = [
        "localhost:8000",
        host_port,
        "airbyte",
        "//airbyte:8000",
        "ftp://airbyte:8000",
        "file:///etc/passwd",
        "http://",
        "https://:8000",
        f"{sim.root}/api/v1",
        f"{sim.root}/api/v1/",
        f"http://{host}:99999",
        f"http://{host}:0",
        f"http://{host}:port",
        f"http://{host}:-1",
        f"{sim.root}/?x=1",
        f"{sim.root}#frag",
        f"{sim.root}{API}?limit=5",
        f"http://user:pw@{host_port}",
        "http://[::1",
        "mailto:ops@example.com",
        f"http://{host}\n:8000",
        f"{sim.root}\t/api",
        "http://air byte",
        "http://air byte:8000",
        "http:// airbyte:8000",
    ]
    no_scheme = any_text(min_size=1, max_size=30).filter(
        lambda s: s.strip() != "" and "://" not in s
    )
    bad_scheme = st.builds(
        lambda s: f"{s}://{host_port}",
        st.text(string.ascii_letters + "+-.", min_size=1, max_size=8).filter(
            lambda s: s.lower() not in ("http", "https")
        ),
    )
    not_a_number = st.builds(
        lambda a, c, b: a + c + b,
        st.text(string.digits, max_size=3),
        st.sampled_from("abcdefxyz-+_.~!$&'()*,;="),
        st.text(string.digits + "abcdef", max_size=3),
    )
    bad_port = (st.integers(65_536, 10**12).map(str) | not_a_number).map(
        lambda p: f"http://{host}:{p}"
    )
    spaced_host = st.builds(
        lambda a, space, b: f"http://{a}{space}{b}:8000",
        st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6),
        st.sampled_from([" ", "\t", "\u00a0", "\u3000"]),
        st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=6),
    )
    return st.sampled_from(fixed) | no_scheme | bad_scheme | bad_port | spaced_host


RUN_ENV_BAD: dict[str, Callable[[], st.SearchStrategy[str]]] = {
    "AIRBYTE_FLEET_JOB_TYPE": lambda: poisoned() | st.just("SYNC"),
    "AIRBYTE_FLEET_MAX_CONCURRENCY": lambda: st.sampled_from(["0", "100001", "1.5"]) | poisoned(),
    "AIRBYTE_FLEET_POLL_INTERVAL": lambda: st.sampled_from(["0", "-1", "nan"]) | poisoned(),
    "AIRBYTE_FLEET_TIMEOUT": lambda: st.sampled_from(["soon", "0s", "-1m"]) | poisoned(),
    "AIRBYTE_FLEET_DEADLINE": lambda: st.sampled_from(["0", "never"]) | poisoned(),
    "AIRBYTE_FLEET_RETRIES": lambda: st.sampled_from(["-1", "101", "two"]) | poisoned(),
    "AIRBYTE_FLEET_RETRY_BACKOFF": lambda: st.sampled_from(["-1", "-5s"]) | poisoned(),
    "AIRBYTE_FLEET_WAIT": lambda: st.sampled_from(["maybe", "2"]) | poisoned(),
    "AIRBYTE_FLEET_IF_RUNNING": lambda: st.sampled_from(["wait", "Adopt"]) | poisoned(),
    "AIRBYTE_FLEET_INCLUDE_INACTIVE": lambda: poisoned(),
    "AIRBYTE_FLEET_CANCEL_ON_TIMEOUT": lambda: poisoned(),
}
SETTINGS_ENV_BAD: dict[str, Callable[[], st.SearchStrategy[str]]] = {
    "USE_SERVER_AUTH": lambda: st.sampled_from(["maybe", "2", "TRUE!"]) | poisoned(),
    "AIRBYTE_AUTH_TYPE": lambda: (
        st.sampled_from(["x", "oauth2", "client credentials"]) | poisoned()
    ),
    "AIRBYTE_READ_TIMEOUT": lambda: (
        st.sampled_from(["-1", "0", "soon", "nan", "-inf"]) | poisoned()
    ),
    "AIRBYTE_CONNECT_TIMEOUT": lambda: st.sampled_from(["-1", "0", "1s"]) | poisoned(),
    "AIRBYTE_MAX_CONNECTIONS": lambda: (
        st.sampled_from(["0", "-3", "10001", "1.5", "1e3"]) | poisoned()
    ),
}


@st.composite
def bad_env(draw: st.DrawFn, sim: Sim, run: bool) -> Piece:
    """One invalid environment setting; AIRBYTE_FLEET_* only count for ``run``."""
    kinds = ["url", "host", "no_url", "setting", "credentials"] + (["run"] if run else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "url":
        piece = Piece(env=(("AIRBYTE_BASE_URL", draw(bad_urls(sim))),))
    elif kind == "host":
        piece = Piece(env=(("AIRBYTE_HOST", draw(bad_urls(sim))),), unset=("AIRBYTE_BASE_URL",))
    elif kind == "no_url":
        # USE_SERVER_AUTH=TRUE without a URL: not Airbyte Cloud, so where?
        piece = Piece(unset=("AIRBYTE_BASE_URL",))
    elif kind == "run":
        name = draw(st.sampled_from(sorted(RUN_ENV_BAD)))
        piece = Piece(env=((name, draw(RUN_ENV_BAD[name]())),))
    elif kind == "setting":
        name = draw(st.sampled_from(sorted(SETTINGS_ENV_BAD)))
        piece = Piece(env=((name, draw(SETTINGS_ENV_BAD[name]())),))
    else:
        piece = draw(
            st.sampled_from(
                [
                    Piece(unset=("AIRBYTE_CLIENT_ID",)),
                    Piece(env=(("AIRBYTE_CLIENT_ID", "   "),)),
                    Piece(unset=("AIRBYTE_CLIENT_SECRET",)),
                    Piece(env=(("AIRBYTE_AUTH_TYPE", "bearer"),), unset=("AIRBYTE_API_TOKEN",)),
                    Piece(env=(("AIRBYTE_AUTH_TYPE", "basic"),)),
                    Piece(
                        env=(("AIRBYTE_AUTH_TYPE", "Basic"), ("AIRBYTE_USERNAME", "someone")),
                        unset=("AIRBYTE_PASSWORD",),
                    ),
                    Piece(
                        env=(("AIRBYTE_AUTH_TYPE", "client-credentials"),),
                        unset=("AIRBYTE_CLIENT_ID",),
                    ),
                ]
            )
        )
    return replace(piece, kind=f"env: {kind}")


@st.composite
def misplaced_secret(draw: st.DrawFn, values: Sequence[str], run: bool) -> Piece:
    """A secret pasted into a variable whose error message quotes the value."""
    names = ["AIRBYTE_READ_TIMEOUT", "AIRBYTE_CONNECT_TIMEOUT", "AIRBYTE_MAX_CONNECTIONS"]
    names += ["USE_SERVER_AUTH", "AIRBYTE_AUTH_TYPE", "AIRBYTE_BASE_URL", "AIRBYTE_HOST"]
    if run:
        names += sorted(RUN_ENV_BAD)
    name = draw(st.sampled_from(names))
    secret = draw(st.sampled_from(values))
    if name == "AIRBYTE_HOST":
        return Piece(env=((name, secret),), unset=("AIRBYTE_BASE_URL",), kind="secret misplaced")
    return Piece(env=((name, secret),), kind="secret misplaced")


# ----------------------------------------------------------------------------- invalid, online


def online_invalid(sim: Sim, base: Sequence[str]) -> st.SearchStrategy[Piece]:
    """Inputs only Airbyte's answer shows to be wrong: unknown ids, names that match nothing."""
    unknown = st.uuids().map(str)
    missing_id = st.builds(
        lambda u, known: Piece(
            args=("--connection", ",".join([*known, u])), online=True, kind="online"
        ),
        unknown,
        st.lists(st.sampled_from(sim.ids), max_size=2),
    )
    no_group = st.builds(
        lambda g: Piece(args=("--group", g), online=True, kind="online"),
        # Blank items of a comma list are dropped by design (as in --connection a,,b): at least
        # one item must name something.
        any_text(min_size=1, max_size=10).filter(
            lambda g: not g.startswith("-") and any(part.strip() for part in g.split(","))
        ),
    )
    options = [missing_id, no_group]
    if "--connection" not in base:
        # Filters that match nothing: no connection name or tag starts with "zzq". Explicit ids
        # would run anyway, and values of one filter are alternatives, hence the conditions.
        zzq = any_text(ANY_CHAR.filter(lambda c: c != ","), max_size=8).map(lambda s: "zzq" + s)
        options += [
            zzq.map(lambda g: Piece(args=("--name", g), online=True, kind="online")),
            unknown.map(lambda w: Piece(args=("--workspace", w), online=True, kind="online")),
        ]
        if "--tag" not in base:
            options.append(zzq.map(lambda t: Piece(args=("--tag", t), online=True, kind="online")))
    return st.one_of(options)


# ----------------------------------------------------------------------------- harmless extras

RUN_EXTRAS: tuple[Piece, ...] = (
    Piece(args=("--no-progress",)),
    Piece(args=("--log-format", "json")),
    Piece(args=("--log-level", "debug")),
    Piece(args=("--max-concurrency", "3")),
    Piece(args=("--retries", "1")),
    Piece(args=("--poll-interval", "0.05")),
    Piece(args=("--timeout", "45m")),
    Piece(args=("--if-running", "adopt")),
    Piece(args=("--include-inactive",)),
    Piece(args=("--no-cancel-on-timeout",)),
    Piece(args=("--on-interrupt", "detach")),
    Piece(args=("--job-type", "sync")),
    Piece(args=("--dry-run",)),
    Piece(args=("--name", "*")),
)
CONSOLE = Piece(args=("--log-format", "console"))


def extras_for(invalid: Sequence[Piece], pool: Sequence[Piece]) -> st.SearchStrategy[list[Piece]]:
    # An extra must not repeat a flag of the invalid part: argparse keeps the last value given.
    taken = set().union(*(p.flags for p in invalid))
    allowed = [p for p in pool if not (p.flags & taken)]
    return st.lists(st.sampled_from(allowed), max_size=3, unique=True) if allowed else st.just([])


# ----------------------------------------------------------------------------- whole cases


@st.composite
def invalid_run_cases(draw: st.DrawFn, sim: Sim) -> Case:
    password, token = draw(secret_values()), draw(secret_values())
    base = draw(
        st.sampled_from(
            [*RUN_BASES, ("run", "--connection", sim.ids[0], "--output", "json"), ("run",)]
        )
        | st.sampled_from(sim.tags).map(lambda t: ("run", "--tag", t, "--output", "json"))
    )
    config = bad_config().map(
        lambda c: Piece(args=("--config", CONFIG), config=c, kind=f"config: {c.label}")
    )
    misplaced = misplaced_secret([SIM_SECRET, password, token], run=True)
    # Weights by repetition: the command line has the most ways to go wrong.
    pick = st.sampled_from(
        [bad_flag(sim)] * 3
        + [bad_env(sim, run=True), config] * 2
        + [misplaced]
        + [online_invalid(sim, base)] * 2
    )
    invalid = draw(st.lists(pick.flatmap(lambda strategy: strategy), min_size=1, max_size=3))
    online = all(p.online for p in invalid)
    pool = RUN_EXTRAS if online else (*RUN_EXTRAS, CONSOLE)
    pieces = draw(st.permutations([*invalid, *draw(extras_for(invalid, pool))]))
    return assemble(base, pieces, online=online, password=password, token=token)


@st.composite
def invalid_connections_cases(draw: st.DrawFn, sim: Sim) -> Case:
    password, token = draw(secret_values()), draw(secret_values())
    bad_choice = st.sampled_from(["--output", "--log-format", "--log-level"]).flatmap(
        lambda f: (
            any_text(max_size=10)
            .filter(lambda v: v not in CHOICES[f])
            .flatmap(lambda v: flag_value(f, v))
        )
    )
    pick = st.sampled_from(
        [
            bad_env(sim, run=False),
            bad_env(sim, run=False),
            misplaced_secret([SIM_SECRET, password, token], run=False),
            unknown_args("connections").map(lambda u: Piece(args=(u,), kind="flag: unknown")),
            junk_ids(sim)
            .flatmap(lambda v: flag_value("--workspace", v))
            .map(lambda args: Piece(args=args, kind="flag: id")),
            missing_value(CONNECTIONS_VALUE_FLAGS).map(lambda p: replace(p, kind="flag: missing")),
            bad_choice.map(lambda args: Piece(args=args, kind="flag: choice")),
        ]
    )
    invalid = draw(st.lists(pick.flatmap(lambda strategy: strategy), min_size=1, max_size=3))
    pool = (Piece(args=("--log-level", "debug")), Piece(args=("--tag", "nightly")), CONSOLE)
    pieces = draw(st.permutations([*invalid, *draw(extras_for(invalid, pool))]))
    return assemble(("connections", "--output", "json"), pieces, password=password, token=token)


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@settings(FUZZ, max_examples=600)
@given(data=st.data())
def test_invalid_run_input_is_one_sentence_and_exit_2(
    sim: Sim, capsys: pytest.CaptureFixture[str], workdir: Path, data: st.DataObject
) -> None:
    case = data.draw(invalid_run_cases(sim), label="case")
    for kind in case.kinds:
        event(kind)
    if case.online:
        event("only online errors: the CLI asked Airbyte")
    assert_rejected(sim, invoke(sim, capsys, workdir, case), case)


@settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_invalid_connections_input_is_one_sentence_and_exit_2(
    sim: Sim, capsys: pytest.CaptureFixture[str], workdir: Path, data: st.DataObject
) -> None:
    case = data.draw(invalid_connections_cases(sim), label="case")
    for kind in case.kinds:
        event(kind)
    assert_rejected(sim, invoke(sim, capsys, workdir, case), case)


# ----------------------------------------------------------------------------- valid but unusual


def spell_uuid(value: str) -> st.SearchStrategy[str]:
    """Ways to write the same UUID that uuid.UUID() reads."""
    return st.sampled_from(
        [
            value,
            value.upper(),
            f"{{{value}}}",
            value.replace("-", ""),
            f"urn:uuid:{value}",
            f" {value} ",
        ]
    )


def good_durations(positive: bool) -> st.SearchStrategy[str]:
    number = st.integers(1 if positive else 0, 10**6).map(str) | st.sampled_from(
        ["1.5", "0.25", "2.0"]
    )
    part = st.tuples(number, st.sampled_from(["ms", "s", "m", "h", "d", "MS", "S", "M", "H"]))
    joined = st.builds(
        lambda parts, sep: sep.join(n + u for n, u in parts),
        st.lists(part, min_size=1, max_size=3),
        st.sampled_from(["", " "]),
    )
    plain = st.sampled_from(["2.5", "1e3", "0.001", "1_000", " 90 ", "86400", "1h30m", "250ms"])
    return joined | plain


ODD_BUT_VALID_FLAGS: list[st.SearchStrategy[tuple[str, ...]]] = [
    st.sampled_from(["+3", " 7", "0010", "100000", "1"]).map(lambda v: ("--max-concurrency", v)),
    st.sampled_from(["0", "100", " 2 "]).map(lambda v: ("--retries", v)),
    st.sampled_from(["0", "0.5", "1e3", "30"]).map(lambda v: ("--grace", v)),
    st.sampled_from(sorted(CHOICES.items())).flatmap(
        lambda kv: st.sampled_from(kv[1]).map(lambda v: (kv[0], v))
    ),
    st.sampled_from(
        ["--no-wait", "--include-inactive", "--no-cancel-on-timeout", "--no-progress"]
    ).map(lambda f: (f,)),
]
ODD_BUT_VALID_ENV: dict[str, list[str]] = {
    "AIRBYTE_FLEET_TIMEOUT": [" 45M ", "1h30m", "3600", ""],
    "AIRBYTE_FLEET_WAIT": ["YES", "off", "1", "  "],
    "AIRBYTE_FLEET_MAX_CONCURRENCY": [" 8 ", "100000"],
    "AIRBYTE_FLEET_JOB_TYPE": ["sync", " refresh "],
    "AIRBYTE_FLEET_DEADLINE": ["4h", ""],
    "AIRBYTE_READ_TIMEOUT": ["30", " 1e2 ", "120.5"],
    "AIRBYTE_CONNECT_TIMEOUT": ["5", "0.5e1"],
    "AIRBYTE_MAX_CONNECTIONS": [" 7 ", "10000"],
}
VALID_CONFIGS = [
    '[run]\ntimeout = "1h30m"\npoll_interval = 0.5\nretries = 2\n',
    "[run]\ndeadline = 7200\nwait = false\nif_running = 'skip'\n",
    "[airbyte]\nconnect_timeout = 5\nread_timeout = 60.5\n",
    "[selection]\ntags = ['nightly']\n",
    "[schedules.nightly]\ncron = '0 2 * * *'\nanything = [1, 'two']\n",
    "# only a comment\n",
]


@dataclass(frozen=True)
class ValidCase:
    case: Case
    expected: frozenset[str]  # the connection ids the plan must hold


@st.composite
def selections(draw: st.DrawFn, sim: Sim) -> tuple[list[Piece], str, set[str]]:
    """Selection flags that pick something, the config they need, and the ids they pick."""
    kind = draw(st.sampled_from(["all", "connections", "workspace", "tag", "name", "group"]))
    if kind == "all":
        return [Piece(args=("--all",))], "", set(sim.ids)
    if kind == "connections":
        chosen = draw(st.lists(st.sampled_from(sim.ids), min_size=1, max_size=5))
        spelled = [draw(spell_uuid(c)) for c in chosen]
        cut = draw(st.integers(0, len(spelled)))
        pieces = []
        for group in (spelled[:cut], spelled[cut:]):
            if group:
                glue = draw(st.sampled_from([",", ", ", " ,", ",,"]))
                trailing = draw(st.sampled_from(["", ",", ", "]))
                pieces.append(Piece(args=("--connection", glue.join(group) + trailing)))
        return pieces, "", set(chosen)
    if kind == "workspace":
        ws = draw(st.sampled_from(sim.workspaces))
        picked = {c.id for c in sim.connections if c.workspace_id == ws}
        return [Piece(args=("--workspace", draw(spell_uuid(ws))))], "", picked
    if kind in ("tag", "group"):
        tag = draw(st.sampled_from(sim.tags))
        picked = {c.id for c in sim.connections if tag.casefold() in map(str.casefold, c.tags)}
        spelled_tag = draw(st.sampled_from([tag, tag.upper(), tag.swapcase()]))
        if kind == "tag":
            return [Piece(args=("--tag", spelled_tag))], "", picked
        config = f"[groups.my-group_1]\ntags = [{toml_str(spelled_tag)}]\n"
        return [Piece(args=("--group", "my-group_1"))], config, picked
    name = draw(st.sampled_from(sim.connections)).name
    glob = draw(
        st.sampled_from(["*", name, name.upper(), name.swapcase(), name[:3] + "*", "?" + name[1:]])
    )
    picked = {
        c.id for c in sim.connections if fnmatch.fnmatchcase(c.name.casefold(), glob.casefold())
    }
    return [Piece(args=("--name", glob))], "", picked


@st.composite
def valid_dry_runs(draw: st.DrawFn, sim: Sim) -> ValidCase:
    pieces, config_text, expected = draw(selections(sim))
    pieces[0] = replace(pieces[0], kind=f"select by {pieces[0].args[0]}")
    for flag in draw(st.lists(st.sampled_from(DURATION_FLAGS), unique=True, max_size=4)):
        value = draw(good_durations(positive=flag in MUST_BE_POSITIVE))
        pieces.append(Piece(args=draw(flag_value(flag, value))))
    for args in draw(st.lists(st.one_of(ODD_BUT_VALID_FLAGS), max_size=5)):
        extra = Piece(args=args)
        if "--output" not in extra.flags and not any(extra.flags & p.flags for p in pieces):
            pieces.append(extra)

    url = draw(
        st.sampled_from(
            [
                sim.root,
                sim.root + "/",
                sim.root + API,
                sim.root + API + "/",
                sim.root + "/api/public",
                sim.root + "//api//public//v1",
                sim.root + "/v1",
                f"  {sim.root}  ",
                sim.root.upper(),
            ]
        )
    )
    env = {"USE_SERVER_AUTH": draw(st.sampled_from(["TRUE", "true", "1", "yes", "On"]))}
    unset = []
    if draw(st.booleans()):
        env["AIRBYTE_BASE_URL"] = url
    else:
        env["AIRBYTE_HOST"] = url
        unset.append("AIRBYTE_BASE_URL")
    if draw(st.booleans()):
        unset.append("AIRBYTE_AUTH_TYPE")  # implied by the client id and secret
    else:
        env["AIRBYTE_AUTH_TYPE"] = draw(
            st.sampled_from(["client_credentials", "CLIENT-CREDENTIALS", " Client_Credentials"])
        )
    for name in draw(st.lists(st.sampled_from(sorted(ODD_BUT_VALID_ENV)), max_size=4)):
        env[name] = draw(st.sampled_from(ODD_BUT_VALID_ENV[name]))
    if draw(st.booleans()):
        config_text += draw(st.sampled_from(VALID_CONFIGS))
    if config_text:
        config = ConfigFile(content=config_text.encode())
        pieces.append(Piece(args=("--config", CONFIG), config=config))

    case = assemble(
        ("run", "--dry-run", "--output", "json"),
        draw(st.permutations(pieces)),
        password=draw(secret_values()),
        token=draw(secret_values()),
    )
    return ValidCase(replace(case, env=tuple(env.items()), unset=tuple(unset)), frozenset(expected))


@settings(FUZZ, max_examples=120)
@given(data=st.data())
def test_valid_but_unusual_dry_run_prints_the_plan(
    sim: Sim, capsys: pytest.CaptureFixture[str], workdir: Path, data: st.DataObject
) -> None:
    valid = data.draw(valid_dry_runs(sim), label="case")
    case = valid.case
    for kind in case.kinds:
        event(kind)
    event(f"URL in {'AIRBYTE_HOST' if 'AIRBYTE_BASE_URL' in case.unset else 'AIRBYTE_BASE_URL'}")
    outcome = invoke(sim, capsys, workdir, case)
    why = outcome.show(case)
    assert outcome.crash is None, "main() raised\n" + why
    assert "Traceback" not in outcome.err, why
    assert outcome.code == 0, why
    assert outcome.triggers == 0, why
    rows = json.loads(outcome.out)  # stdout is the JSON plan and nothing else
    assert sorted(row["connection_id"] for row in rows) == sorted(valid.expected), why
    assert {row["action"] for row in rows} <= {"run", "skip"}, why
    assert not any(line.startswith("airbyte-fleet") for line in outcome.err.splitlines()), why
    if "console" not in case.argv:
        for line in outcome.err.splitlines():
            assert isinstance(json.loads(line), dict), why
    assert_no_secret(sim, outcome, case)


# ----------------------------------------------------------------------------- reported bugs


def _reported(case: Case, reason: str, *, open_item: str | None = None) -> Any:
    """A case this fuzzer (or an issue) found, with what was wrong as its id. Fixed ones are
    regression cases; *open_item* names the issue item of one still open: a strict xfail, so
    that the fix turns it into a failure here until it becomes a plain case."""
    marks = []
    if open_item is not None:
        marks.append(pytest.mark.xfail(strict=True, reason=f"{open_item}: {reason}"))
    return pytest.param(
        case,
        id=reason.split(":", 1)[0] + ":" + str(zlib.crc32(reason.encode()) % 10_000),
        marks=marks,
    )


REPORTED_BUGS = [
    # All fixed. unknown_args() draws line breaks and abbreviations of real options.
    _reported(
        Case(("run", "--all", "--output", "json", "foo\nbar")),
        "cli/parser.py: _Parser.error prints argparse's message as is, and 'unrecognized arguments' "
        "quotes argv raw, so a line break in an argument splits the one-line error",
    ),
    _reported(
        Case(("run", "--all", "--output", "json", "--n=x\ny")),
        "cli/parser.py: _Parser.error: 'ambiguous option: --n=x<LF>y could match ...' is two lines",
    ),
    # invalid_connections_cases() draws --workspace junk_ids().
    _reported(
        Case(("connections", "--output", "json", "--workspace", "not-a-uuid")),
        "cli/commands.py: connections() sends --workspace to Airbyte unchecked; Airbyte's 400 makes it "
        "exit 1 after a network round trip instead of exit 2 before it",
    ),
    # bad_flag() draws --grace values from bad_durations().
    _reported(
        Case(("run", "--all", "--output", "json", "--dry-run", "--grace", "-1")),
        "cli/parser.py: --grace takes any float: a negative one is accepted and the run goes ahead",
    ),
    _reported(
        Case(("run", "--all", "--output", "json", "--dry-run", "--grace", "nan")),
        "cli/parser.py: --grace takes any float: nan is accepted and the run goes ahead",
    ),
    # online_invalid() draws globs, tags and group names of any characters.
    _reported(
        Case(("run", "--all", "--name", "zzq\nx", "--output", "json"), online=True),
        "engine/plan.py quotes --name globs raw in 'The selection name ... matched none', so a "
        "line break splits the message (cli/exit.py fail() could keep every message on one line)",
    ),
    _reported(
        Case(("run", "--group", "x\ny", "--output", "json"), online=True),
        "engine/plan.py quotes --group names raw in 'Unknown group ...'",
    ),
    # bad_urls() draws hosts with white space.
    _reported(
        Case(("run", "--all", "--output", "json"), env=(("AIRBYTE_BASE_URL", "http://air byte"),)),
        "api/urls.py: plan_url() takes a host name with a space, so the run fails later with "
        "exit 3 (host name not found) instead of exit 2",
    ),
    # Issue 11 item 6; unknown_args() draws abbreviations of every option.
    _reported(
        Case(("run", "--all", "--output", "json", "--dry-run", "--retry", "3")),
        "cli/parser.py: argparse's prefix matching took --retry 3 for --retry-backoff 3",
    ),
    _reported(
        Case(("connections", "--outp", "json")),
        "cli/parser.py: argparse's prefix matching took --outp for --output",
    ),
    _reported(
        # Safe in-process: were prefixes matched this is --help (exit 0), never a server.
        Case(("simulate", "--hel")),
        "simulator/_cli.py: argparse's prefix matching took --hel for --help",
    ),
    _reported(
        Case(("simulate", "--port", "99999")),
        "simulator/_cli.py: a port outside 0..65535 raises OverflowError in bind(): traceback",
    ),
    _reported(
        Case(("simulate", "--port", "x")),
        "simulator/_cli.py: usage errors print argparse's usage block before the error line",
    ),
]


@pytest.mark.parametrize("case", REPORTED_BUGS)
def test_reported_bugs(
    sim: Sim, capsys: pytest.CaptureFixture[str], workdir: Path, case: Case
) -> None:
    assert_rejected(sim, invoke(sim, capsys, workdir, case), case)


def test_result_file_problem_is_found_before_anything_is_triggered(
    sim: Sim, capsys: pytest.CaptureFixture[str], workdir: Path
) -> None:
    (workdir / "a-file").write_text("")
    result_file = str(workdir / "a-file" / "result.json")  # under a file: cannot be written
    argv = ("run", "--connection", sim.active_id, "--no-wait", "--output", "json")
    case = Case((*argv, "--result-file", result_file))
    assert_rejected(sim, invoke(sim, capsys, workdir, case), case)


@pytest.mark.parametrize(
    ("name", "value", "unset", "code"),
    [
        ("READ_TIMEOUT", "soon", (), 0),
        ("MAX_CONNECTIONS", "many", (), 0),
        ("AUTH_TYPE", "kerberos", ("AIRBYTE_AUTH_TYPE",), 0),
        # No credentials at all: Airbyte without auth, which the simulator refuses (exit 3).
        (
            "USERNAME",
            "alice",
            (*SECRET_VARS, "AIRBYTE_AUTH_TYPE", "USE_SERVER_AUTH", "AIRBYTE_CLIENT_ID"),
            3,
        ),
    ],
)
def test_unrelated_variables_do_not_change_the_settings(
    sim: Sim,
    capsys: pytest.CaptureFixture[str],
    workdir: Path,
    name: str,
    value: str,
    unset: tuple[str, ...],
    code: int,
) -> None:
    case = Case(
        ("run", "--all", "--dry-run", "--output", "json"), env=((name, value),), unset=unset
    )
    outcome = invoke(sim, capsys, workdir, case)
    assert outcome.code == code, outcome.show(case)
    assert outcome.triggers == 0, outcome.show(case)
