"""`airbyte-fleet completion bash|zsh|fish`: the script each shell sources, tried in that shell.

bash is always there and is driven as it drives completion (COMP_WORDS, the registered function);
fish answers `complete -C` itself; zsh is checked to parse and to register the function. A shell
that is not installed is skipped, with a line saying so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest


@cache
def _script(shell: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRBYTE_")}
    done = subprocess.run(
        [sys.executable, "-m", "airbyte_fleet", "completion", shell],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    assert done.stderr == ""
    return done.stdout


def _shell(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed; install it to check its completion script")
    return found


def _bash_complete(line: str, tmp_path: Path) -> list[str]:
    """What bash offers for *line* (the cursor at its end), through the function the script
    registers for ``airbyte-fleet``, as bash calls it on Tab."""
    script = tmp_path / "completion.bash"
    script.write_text(_script("bash"))
    driver = (
        'source "$1"\n'
        'line="$2"\n'
        'read -ra COMP_WORDS <<< "$line"\n'
        '[[ "$line" == *" " ]] && COMP_WORDS+=("")\n'
        "COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        'COMP_LINE="$line"; COMP_POINT=${#line}\n'
        'function=$(complete -p airbyte-fleet | sed -E "s/.* -F ([^ ]+) .*/\\1/")\n'
        '"$function" airbyte-fleet "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"\n'
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        [_shell("bash"), "--norc", "--noprofile", "-c", driver, "bash", str(script), line],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        timeout=60,
    )
    return [word for word in done.stdout.splitlines() if word]


@pytest.mark.parametrize(
    ("line", "offered"),
    [
        (
            "airbyte-fleet ",
            [
                "connections",
                "run",
                "serve",
                "schedules",
                "runs",
                "migrate",
                "simulate",
                "completion",
            ],
        ),
        (
            "airbyte-fleet migrate --",
            [
                "--database-url",
                "--state-dir",
                "--config",
                "--output",
                "--log-format",
                "--log-level",
                "--help",
            ],
        ),
        ("airbyte-fleet run --lea", ["--lease"]),
        ("airbyte-fleet run --ret", ["--retries", "--retry-backoff"]),  # generated from RunOptions
        ("airbyte-fleet run --poll-mode ", ["auto", "batched", "per-job"]),
        ("airbyte-fleet --log-level ", ["debug", "info", "warning", "error"]),
        ("airbyte-fleet serve --on-shutdown ", ["cancel", "detach"]),
        ("airbyte-fleet runs ", ["show"]),
        ("airbyte-fleet simulate --rate", ["--rate-429", "--rate-5xx"]),  # the simulator's own
        ("airbyte-fleet completion ", ["bash", "zsh", "fish"]),
        ("airbyte-fleet run --result-file resu", ["result.json"]),  # a path completes files
    ],
)
def test_bash_completes_commands_flags_and_choices(
    line: str, offered: list[str], tmp_path: Path
) -> None:
    (tmp_path / "result.json").write_text("{}")
    assert sorted(_bash_complete(line, tmp_path)) == sorted(offered)


def test_fish_completes_commands_and_flags_with_their_help(tmp_path: Path) -> None:
    fish = _shell("fish")
    script = tmp_path / "airbyte-fleet.fish"
    script.write_text(_script("fish"))

    def complete(line: str) -> dict[str, str]:
        done = subprocess.run(
            [
                fish,
                "--no-config",
                "-c",
                'source $argv[1]; complete -C"$argv[2]"',
                str(script),
                line,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return dict(row.partition("\t")[::2] for row in done.stdout.splitlines())

    commands = complete("airbyte-fleet ")
    assert commands["run"] == "trigger syncs, follow each to its end, report once"
    assert set(commands) == {
        "connections", "run", "serve", "schedules", "runs", "migrate", "simulate", "completion"
    }  # fmt: skip
    flags = complete("airbyte-fleet run --ret")
    assert set(flags) == {"--retries", "--retry-backoff"}
    assert flags["--retry-backoff"] == "first wait before a retry (default: 30s)"


def test_zsh_script_parses_and_is_found_on_fpath(tmp_path: Path) -> None:
    zsh = _shell("zsh")
    # Installed as `completion --help` says: a file named _airbyte-fleet in a folder on $fpath.
    folder = tmp_path / "completions"
    folder.mkdir()
    script = folder / "_airbyte-fleet"
    script.write_text(_script("zsh"))
    subprocess.run([zsh, "-n", str(script)], check=True, timeout=60)
    done = subprocess.run(
        [
            zsh,
            "-f",
            "-c",
            'fpath=("$1" $fpath); autoload -Uz compinit && compinit -u -D && '
            "print -r -- ${_comps[airbyte-fleet]}",
            "zsh",
            str(folder),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    assert done.stdout.strip() == "_airbyte-fleet"
    text = script.read_text()
    for flag in ("--retry-backoff", "--rate-429", "--log-level"):
        assert flag in text


def test_an_unknown_shell_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "airbyte_fleet", "completion", "tcsh"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert "invalid choice: 'tcsh' (choose from 'bash', 'zsh', 'fish')" in done.stderr
