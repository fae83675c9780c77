"""The report from the command line: `run --report-html` (however the run ends), `runs show
--html`, and a path that cannot be written refused before anything is triggered."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from airbyte_fleet.simulator import JobScript
from conftest import SimFactory

from .support import BAR

pytestmark = pytest.mark.anyio

RUN = ("run", "--all", "--output", "json", "--poll-interval", "0.05", "--retry-backoff", "0")


def _env(root: str, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRBYTE_", "USE_SERVER"))}
    env.update(
        AIRBYTE_BASE_URL=root,
        AIRBYTE_CLIENT_ID="sim-client",
        AIRBYTE_CLIENT_SECRET="sim-secret",
        AIRBYTE_FLEET_STATE_DIR=str(state),
    )
    return env


async def _cli(*args: str, root: str, state: Path) -> tuple[int, str, str]:
    with anyio.fail_after(120):
        done = await anyio.run_process(
            [sys.executable, "-m", "airbyte_fleet", *args], env=_env(root, state), check=False
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def _without_stamp(page: str) -> str:
    # The one line that says when the file was written.
    return re.sub(r"<p class=note>Written by .*?</p>", "", page)


async def test_run_writes_the_report_and_runs_show_writes_the_same(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=5)
    failing = sim.connections[0]["connectionId"]
    sim.script(failing, JobScript(seconds=0.1, final="failed"))
    live = tmp_path / "out" / "report.html"
    code, _, err = await _cli(
        *RUN, "--max-concurrency", "2", "--report-html", str(live), root=root, state=tmp_path
    )
    assert code == 1, err
    page = live.read_text(encoding="utf-8")
    assert len(BAR.findall(page)) == 5
    assert '<span class="chip f">failed</span>' in page  # the run's outcome
    assert '<span class="chip f">1 failed</span>' in page
    assert sim.connections[0]["name"] in page

    shown = tmp_path / "shown.html"
    code, out, err = await _cli(
        "runs", "show", "last", "--html", str(shown), "--output", "json", root=root, state=tmp_path
    )
    assert code == 0, err
    assert out.startswith("{")  # stdout is still the result, and nothing else
    # Heard live or read back from the journal: the same report.
    assert _without_stamp(shown.read_text(encoding="utf-8")) == _without_stamp(page)


async def test_an_interrupted_run_still_writes_its_report(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3)
    for c in sim.connections:
        sim.script(c["connectionId"], JobScript(seconds=600))
    report = tmp_path / "report.html"
    process = await anyio.open_process(
        [sys.executable, "-m", "airbyte_fleet", *RUN, "--report-html", str(report)],
        env=_env(root, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with anyio.fail_after(60):
            while sim.count("POST", "/jobs") < 3:
                assert process.returncode is None
                await anyio.sleep(0.02)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    page = report.read_text(encoding="utf-8")
    assert '<span class="chip c">interrupted</span>' in page
    assert len(BAR.findall(page)) == 3
    assert page.count('<rect class="b c"') == 3  # each job cancelled
    assert all(job["status"] == "cancelled" for job in sim.jobs)


@pytest.mark.parametrize("command", ["run", "runs show"])
async def test_a_report_path_that_cannot_be_written_is_refused_first(
    make_sim: SimFactory, tmp_path: Path, command: str
) -> None:
    sim, root = await make_sim(connections=2)
    (tmp_path / "a-file").write_text("")
    path = str(tmp_path / "a-file" / "report.html")  # under a file: no folder can be made
    if command == "run":
        args: tuple[str, ...] = (*RUN, "--report-html", path)
        flag = "--report-html"
    else:
        code, _, err = await _cli(*RUN, root=root, state=tmp_path)
        assert code == 0, err
        args = ("runs", "show", "last", "--html", path)
        flag = "--html"
    posts = sim.count("POST", "/jobs")
    code, out, err = await _cli(*args, root=root, state=tmp_path)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    # Its last line says what is wrong, in one sentence that names the flag.
    fatal = json.loads(err.strip().splitlines()[-1])
    assert (fatal["event"], fatal["exit_code"]) == ("fatal", 2)
    assert fatal["error"].startswith(f"{flag} '{path}' cannot be written")
    assert fatal["error"].endswith("; choose another path.")
    assert "\n" not in fatal["error"]
    assert sim.count("POST", "/jobs") == posts  # nothing triggered


async def test_a_resumed_runs_report_shows_the_run_from_its_first_start(
    make_sim: SimFactory, tmp_path: Path
) -> None:
    sim, root = await make_sim(connections=3)
    # The plan runs connections by name: with one slot, the first by name is triggered first.
    by_name = sorted(sim.connections, key=lambda c: str(c["name"]))
    first, *rest = (c["connectionId"] for c in by_name)
    sim.script(first, JobScript(seconds=600))
    for cid in rest:
        sim.script(cid, JobScript(seconds=0.2))
    args = (*RUN, "--max-concurrency", "1")
    process = await anyio.open_process(
        [sys.executable, "-m", "airbyte_fleet", *args],
        env=_env(root, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with anyio.fail_after(60):
            while sim.count("POST", "/jobs") < 1:
                assert process.returncode is None
                await anyio.sleep(0.02)
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 130
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert [job["connectionId"] for job in sim.jobs] == [first]
    # The first sync was cancelled; the two that never had their turn run when it is carried on.
    live = tmp_path / "resumed.html"
    code, _, err = await _cli(
        *RUN[:1], "--resume", "last", "--output", "json", "--report-html", str(live),
        root=root, state=tmp_path,
    )  # fmt: skip
    assert code == 1, err  # the cancelled sync stays cancelled
    page = live.read_text(encoding="utf-8")
    assert len(BAR.findall(page)) == 3
    assert page.count('<rect class="b s"') == 2
    assert page.count('<rect class="b c"') == 1
    shown = tmp_path / "shown.html"
    code, _, err = await _cli(
        "runs", "show", "last", "--html", str(shown), "--output", "json", root=root, state=tmp_path
    )
    assert code == 0, err
    # The resumer heard the first process's part from the journal: the same report.
    assert _without_stamp(shown.read_text(encoding="utf-8")) == _without_stamp(page)
