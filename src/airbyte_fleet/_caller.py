"""Who is calling, so that a message names what that caller can change.

The same error ("nothing selected", "the job was left running") reaches three kinds of caller:
someone at a command line (``--connection ID``), Python code (``selection={"connections": [...]}``)
and an HTTP client of the worker (``"selection": {"connections": [...]}``). The entry point says
which with :func:`calling_as`; the planner and the engine, which know none of them, word their
advice with :func:`option`, :func:`selection_field` and :func:`resume_hint`.

A context variable rather than a parameter: the advice is written deep in the planner and the
engine, which should not carry a presentation concern through every call, and tasks started
inside a run inherit it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Literal

__all__ = [
    "Caller",
    "calling_as",
    "context_for",
    "option",
    "resume_hint",
    "selection_field",
    "selection_fields",
]

Caller = Literal["cli", "python", "http"]

_caller: ContextVar[Caller] = ContextVar("airbyte_fleet_caller", default="cli")

# Selection field -> the `run` flag that fills it, and what it takes.
_FLAGS = {
    "connections": ("--connection", "ID"),
    "names": ("--name", "GLOB"),
    "tags": ("--tag", "NAME"),
    "workspaces": ("--workspace", "ID"),
    "groups": ("--group", "NAME"),
    "all": ("--all", ""),
}


@contextlib.contextmanager
def calling_as(caller: Caller) -> Iterator[None]:
    """Within the block (and the tasks it starts), messages speak to *caller*."""
    token = _caller.set(caller)
    try:
        yield
    finally:
        _caller.reset(token)


def context_for(caller: Caller) -> contextvars.Context:
    """A copy of the current context in which messages speak to *caller*, to start a task in."""
    context = contextvars.copy_context()
    context.run(_caller.set, caller)
    return context


def option(name: str, value: bool | str) -> str:
    """How the caller sets run option *name* to *value*: ``--cancel-adopted``,
    ``cancel_adopted=True`` or ``"cancel_adopted": true``."""
    caller = _caller.get()
    if caller == "python":
        return f"{name}={value!r}"
    if caller == "http":
        return f'"{name}": {json.dumps(value)} in options'
    flag = name.replace("_", "-")
    if value is True:
        return f"--{flag}"
    if value is False:
        return f"--no-{flag}"
    return f"--{flag} {value}"


def selection_field(field: str) -> str:
    """How the caller names selection *field*: ``--connection``, ``selection['connections']``
    or ``"connections" in selection``."""
    caller = _caller.get()
    if caller == "python":
        return f"selection[{field!r}]"
    if caller == "http":
        return f'"{field}" in selection'
    return _FLAGS[field][0]


def selection_fields(fields: tuple[str, ...], *, examples: bool = False) -> str:
    """Several selection fields as one "a, b or c" (with what each takes, when *examples*)."""
    caller = _caller.get()
    if caller == "cli":
        names = [
            f"{flag} {what}".rstrip() if examples else flag
            for flag, what in (_FLAGS[f] for f in fields)
        ]
    else:
        names = [f"{f!r}" if caller == "python" else f'"{f}"' for f in fields]
    joined = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
    if caller == "cli":
        return joined
    return f"{joined} in selection"


def resume_hint(run_id: str) -> str | None:
    """How the caller carries on run *run_id* later, or None where it cannot: the Python API
    keeps no journal (an orchestrator's retry adopts the jobs still running instead)."""
    caller = _caller.get()
    if caller == "python":
        return None
    return f"'airbyte-fleet run --resume {run_id}'"
