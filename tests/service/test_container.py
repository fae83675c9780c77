"""The container image, built from the Dockerfile and run for real with podman.

No Docker engine runs on the project's machines and no registry image can be pulled, so the image
is built with podman on a Debian bookworm base made from Debian's archive by
``scripts/container-base.sh`` (``.ci/run`` makes it before ``make test``; this module makes it
itself when it is missing, showing the script's progress lines). The build is reused while the
sources it is made of are unchanged.

Without podman these tests skip with one line saying how to get it, so a developer machine without
it still passes; with ``CI=true`` they fail instead: CI must run them. Every test here is marked
``container``: ``pytest -m "not container"`` leaves them out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from airbyte_fleet.journal import FILE_NAME as JOURNAL_FILE

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("FLEET_CONTAINER_BASE", "localhost/fleet-base:bookworm")
IMAGE_REPO = "localhost/airbyte-fleet-test"
# Everything the image is made of: a change to any of these builds a new image.
IMAGE_INPUTS = (
    *("Dockerfile", ".dockerignore", "pyproject.toml", "README.md", "LICENSE", "constraints.txt"),
    "src",
)
RUNC = "/usr/bin/runc"
# What the machines here need to run a container (see the Container section).
RUN_LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000")
SIM_CLIENT_ID = "fleet-container-client"
SIM_SECRET = "fleet-container-secret"
SIM_CONNECTIONS = 6

pytestmark = [pytest.mark.slow, pytest.mark.container]


# ----------------------------------------------------------------------------- helpers


def _unavailable(reason: str) -> NoReturn:
    """Skip on a developer machine; fail in CI, where the container tests must run."""
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"{reason} (CI=true: the container tests must run in CI, not skip)")
    pytest.skip(reason)


def _podman_base() -> list[str]:
    command = ["podman"]
    if Path(RUNC).exists():
        command += ["--runtime", RUNC]
    return [*command, "--cgroup-manager", "cgroupfs"]


def podman(
    *args: str, check: bool = True, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*_podman_base(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"podman {' '.join(args[:3])} ... exited {done.returncode}\n"
            f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
        )
    return done


def _source_hash(base_id: str, build_args: Sequence[str]) -> str:
    digest = hashlib.sha256(f"base {base_id}\nargs {' '.join(build_args)}\n".encode())
    for name in IMAGE_INPUTS:
        path = ROOT / name
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for file in files:
            rel = file.relative_to(ROOT).as_posix()
            if not file.is_file() or "__pycache__" in file.parts or ".egg-info" in rel:
                continue
            if file.suffix == ".pyc":
                continue
            digest.update(f"{rel}\n".encode())
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _host_pip_settings() -> dict[str, str]:
    """The host's pip settings (config files and PIP_* variables; environment wins)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    rank = {"global": 0, "install": 1, ":env:": 2}
    found: dict[str, tuple[int, str]] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        scope, dot, name = key.rpartition(".")
        if not sep or not dot or scope not in rank:
            continue
        value = value.strip().strip("'\"")
        if name not in found or rank[scope] >= found[name][0]:
            found[name] = (rank[scope], value)
    return {name: value for name, (_, value) in found.items()}


def _build_args() -> tuple[list[str], list[str]]:
    """Build args and volumes that let pip inside the build reach the index the host uses.

    The CA bundle the host trusts (a TLS-inspecting proxy's, say) is mounted read-only and named
    by PIP_CERT; index URLs are passed on when they are http(s) (a file:// index on the host's
    disk means nothing inside the build). Nothing of this is written into the image.
    """
    pip = _host_pip_settings()
    args: list[str] = []
    volumes: list[str] = []
    cert = pip.get("cert") or os.environ.get("SSL_CERT_FILE") or ""
    if not cert and Path("/etc/ssl/certs/ca-certificates.crt").is_file():
        cert = "/etc/ssl/certs/ca-certificates.crt"
    if cert and Path(cert).is_file():
        folder = str(Path(cert).parent)
        volumes += ["-v", f"{folder}:{folder}:ro"]
        args += ["--build-arg", f"PIP_CERT={cert}"]

    def remote(value: str) -> str:
        return " ".join(u for u in value.split() if u.startswith(("http://", "https://")))

    for name, arg in (
        ("index-url", "PIP_INDEX_URL"),
        ("extra-index-url", "PIP_EXTRA_INDEX_URL"),
        ("trusted-host", "PIP_TRUSTED_HOST"),
    ):
        value = pip.get(name, "")
        value = value if name == "trusted-host" else remote(value)
        if value:
            args += ["--build-arg", f"{arg}={value}"]
    return args, volumes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _http(
    method: str, url: str, *, token: str | None = None, body: Any = None, timeout: float = 10
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def _say(config: pytest.Config, line: str) -> None:
    """A progress line on the terminal now, through pytest's output capture (minutes pass
    while the base image or the image is made)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        if reporter is not None:
            reporter.write_line(line)
        else:
            print(line, file=sys.stderr, flush=True)


def _make_base_image(config: pytest.Config) -> None:
    """Run scripts/container-base.sh, passing its progress lines on as they come."""
    script = ROOT / "scripts" / "container-base.sh"
    _say(config, f"making the base image {BASE_IMAGE} with {script.relative_to(ROOT)} ...")
    process = subprocess.Popen(
        ["bash", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    output: list[str] = []
    with process:
        for line in process.stdout:
            output.append(line)
            if line.startswith("container-base:"):
                _say(config, line.rstrip())
    if process.wait(timeout=1800) != 0:
        _unavailable(
            f"cannot make the base image {BASE_IMAGE} with scripts/container-base.sh:\n"
            f"{''.join(output)[-2000:]}"
        )


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base_image(pytestconfig: pytest.Config) -> str:
    if shutil.which("podman") is None:
        _unavailable(
            "podman is not installed; `sudo bash scripts/container-base.sh` installs it and "
            "makes the base image"
        )
    if podman("image", "exists", BASE_IMAGE, check=False).returncode != 0:
        if "FLEET_CONTAINER_BASE" in os.environ:
            _unavailable(f"FLEET_CONTAINER_BASE={BASE_IMAGE} is not a local image")
        _make_base_image(pytestconfig)
    return BASE_IMAGE


@pytest.fixture(scope="module")
def image(
    base_image: str, tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config
) -> str:
    """The image built from the Dockerfile; reused while its sources are unchanged."""
    base_id = podman("image", "inspect", "--format", "{{.Id}}", base_image).stdout.strip()
    build_args, volumes = _build_args()
    tag = f"{IMAGE_REPO}:{_source_hash(base_id, build_args)}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    log = tmp_path_factory.mktemp("build") / "build.log"
    _say(pytestconfig, f"building {tag} from the Dockerfile (a few minutes the first time) ...")
    started = time.monotonic()
    with log.open("w") as out:
        built = subprocess.run(
            [
                *_podman_base(),
                "build",
                "--isolation=chroot",
                "--network",
                "host",
                "--format",
                "docker",  # keeps HEALTHCHECK, which the OCI format has no field for
                *volumes,
                "--build-arg",
                f"BASE={base_image}",
                *build_args,
                "--tag",
                tag,
                "--file",
                str(ROOT / "Dockerfile"),
                str(ROOT),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            timeout=1800,
        )
    text = log.read_text()
    assert built.returncode == 0, f"podman build failed ({built.returncode}):\n{text[-5000:]}"
    _say(pytestconfig, f"built {tag} in {time.monotonic() - started:.0f} s")
    # Older test builds of this checkout are of no further use; their layers stay cached.
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE_REPO, check=False)
    for old in listed.stdout.split():
        if old != tag and old.startswith(IMAGE_REPO + ":"):
            podman("rmi", old, check=False)
    return tag


@dataclass(frozen=True)
class Sim:
    root: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    """The simulator on the host's loopback; the container reaches it over the host network."""
    log = tmp_path / "sim.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airbyte_fleet",
                "simulate",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--connections",
                str(SIM_CONNECTIONS),
                "--workspaces",
                "2",
                "--client-id",
                SIM_CLIENT_ID,
                "--client-secret",
                SIM_SECRET,
                "--sync-seconds",
                "0.2:1",
                "--failure-rate",
                "0",
                "--incomplete-rate",
                "0",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        assert line.startswith("listening on http://"), f"{line!r}; {log.read_text()}"
        yield Sim(root=line.removeprefix("listening on ").strip(), process=process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()


@contextlib.contextmanager
def container(image: str, *args: str, options: Sequence[str] = ()) -> Iterator[str]:
    """``podman run -d``; removed, with its anonymous volumes, on the way out."""
    name = f"fleet-test-{secrets.token_hex(4)}"
    podman("run", "--detach", "--name", name, *RUN_LIMITS, *options, image, *args)
    try:
        yield name
    finally:
        podman("rm", "--force", "--volumes", "--time", "0", name, check=False)


# ----------------------------------------------------------------------------- the image


def test_image_metadata(image: str) -> None:
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspected["Config"]
    assert config["Entrypoint"] == ["airbyte-fleet"]
    assert config["Cmd"] == ["serve"]
    assert config["WorkingDir"] == "/app"
    assert "/app/state" in config["Volumes"]
    # Numeric, so that Kubernetes' runAsNonRoot can tell it is not root.
    assert config["User"] == "10001:10001", config["User"]
    assert config["StopSignal"] == "SIGTERM"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["AIRBYTE_FLEET_STATE_DIR"] == "/app/state"
    # Nothing from the build's pip settings (proxy CA, index URLs) reaches the final image.
    assert not any(name.startswith("PIP_") for name in env), env
    # Kept only in the docker image format (the tests build with --format docker).
    health = inspected.get("Healthcheck") or config.get("Healthcheck")
    assert health, inspected
    assert health["Test"] == ["CMD", "airbyte-fleet-healthcheck"], health


def test_image_runs_the_cli_as_a_non_root_user(image: str) -> None:
    run = ("run", "--rm", "--network", "none", *RUN_LIMITS)
    version = podman(*run, image, "--version")
    assert version.stdout.startswith("airbyte-fleet "), version.stdout
    helped = podman(*run, image, "simulate", "--help")
    assert helped.stdout.startswith("usage: airbyte-fleet simulate"), helped.stdout
    ids = podman(*run, "--entrypoint", "id", image)
    assert ids.stdout.startswith("uid="), ids.stdout
    assert not ids.stdout.startswith("uid=0("), ids.stdout
    # The state volume is writable by that user, the config folder exists to be mounted over.
    probe = podman(
        *run,
        "--entrypoint",
        "sh",
        image,
        "-c",
        "touch /app/state/probe && test -d /app/config && python3 --version",
    )
    assert probe.stdout.startswith("Python 3."), probe.stdout


# A stand-in for `serve` that answers /healthz: the HEALTHCHECK must find the port on the
# command line of whatever runs as `... serve --port N`.
_STAND_IN = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", int(sys.argv[3])), Handler).serve_forever()
"""


def _health(name: str, *, within: float = 15) -> int:
    """``podman healthcheck run`` until it passes or *within* seconds pass; its last exit code."""
    deadline = time.monotonic() + within
    while True:
        code = podman("healthcheck", "run", name, check=False).returncode
        if code == 0 or time.monotonic() > deadline:
            return code
        time.sleep(0.3)


def test_healthcheck_follows_the_serve_port(image: str) -> None:
    # --network none: the container's own loopback, so no port on the host is touched.
    isolated = ("--network", "none", "--entrypoint", "/opt/fleet/bin/python")
    with container(image, "-c", _STAND_IN, "serve", "--port", "9187", options=isolated) as name:
        assert _health(name) == 0
    with container(image, options=("--network", "none", "--entrypoint", "sleep")) as name:
        # Nothing listens: unhealthy, promptly (not a hang until the check's timeout).
        started = time.monotonic()
        assert podman("healthcheck", "run", name, check=False).returncode != 0
        assert time.monotonic() - started < 10


# ----------------------------------------------------------------------------- the worker


def test_serve_runs_syncs_and_stops_gracefully_on_sigterm(
    image: str, sim: Sim, tmp_path: Path
) -> None:
    port = _free_port()
    token = secrets.token_urlsafe(24)
    config = tmp_path / "config"
    config.mkdir(mode=0o755)
    (config / "airbyte-fleet.toml").write_text("[run]\nretries = 0\n")
    (config / "airbyte-fleet.toml").chmod(0o644)
    config.chmod(0o755)
    options = (
        "--network",
        "host",
        "--volume",
        f"{config}:/app/config:ro",
        "--env",
        f"AIRBYTE_BASE_URL={sim.root}",
        "--env",
        f"AIRBYTE_CLIENT_ID={SIM_CLIENT_ID}",
        "--env",
        f"AIRBYTE_CLIENT_SECRET={SIM_SECRET}",
        "--env",
        f"AIRBYTE_FLEET_API_TOKEN={token}",
    )
    api = f"http://127.0.0.1:{port}"
    argv = ("serve", "--host", "127.0.0.1", "--port", str(port))
    with container(image, *argv, options=options) as name:

        def logs() -> str:
            done = podman("logs", name, check=False)
            return done.stdout + done.stderr

        # Up: /healthz answers, and the image's own HEALTHCHECK agrees.
        deadline = time.monotonic() + 60
        while True:
            state = podman("inspect", "--format", "{{.State.Status}}", name, check=False)
            assert state.stdout.strip() in ("created", "running"), f"exited early:\n{logs()}"
            try:
                if _http("GET", f"{api}/healthz", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"/healthz never answered 200:\n{logs()}"
            time.sleep(0.3)
        assert _health(name) == 0, logs()

        # Not root.
        uid = podman("exec", name, "id", "-u").stdout.strip()
        assert uid.isdigit(), uid
        assert uid != "0", uid

        # A run: submitted, followed to its end, every sync succeeded.
        status, created = _http(
            "POST",
            f"{api}/runs",
            token=token,
            body={"selection": {"all": True}, "options": {"poll_interval": "0.2s"}},
        )
        assert status == 202, (status, created, logs())
        run_id = created["run_id"]
        deadline = time.monotonic() + 120
        while True:
            status, run = _http("GET", f"{api}/runs/{run_id}", token=token)
            assert status == 200, (status, run, logs())
            if run.get("state") == "finished":
                break
            assert time.monotonic() < deadline, f"run still {run.get('state')}:\n{logs()}"
            time.sleep(0.3)
        result = run["result"]
        syncs = result["syncs"]
        assert len(syncs) == SIM_CONNECTIONS, result
        assert [s["outcome"] for s in syncs] == ["succeeded"] * SIM_CONNECTIONS, result
        assert result["outcome"] == "succeeded", result

        # The journal went to the state volume.
        stored = podman("exec", name, "ls", "-A", "/app/state").stdout.split()
        assert JOURNAL_FILE in stored, stored

        # SIGTERM (podman stop): a clean exit well before podman would resort to SIGKILL.
        started = time.monotonic()
        podman("stop", "--time", "30", name, timeout=60)
        took = time.monotonic() - started
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        text = logs()
        assert code == "0", f"exit code {code} after SIGTERM:\n{text}"
        assert took < 25, f"stopping took {took:.1f} s:\n{text}"
        assert "shutdown" in text.lower() or "stopping" in text.lower(), text
