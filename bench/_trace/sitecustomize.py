"""Loaded by the worker that ``bench/worker_memory.py`` measures (it puts this folder on the
worker's ``PYTHONPATH``): on each SIGUSR1, after a full garbage collection, an account of where
the memory is, written to ``$AIRBYTE_FLEET_BENCH_TRACE_DIR``.

Always: ``memory-N.json``, the resident size, the bytes SQLite holds (its page caches and
statements, from libsqlite3 itself: memory tracemalloc cannot see) and the interpreter's live
blocks. With ``AIRBYTE_FLEET_BENCH_TRACE=1`` (``--trace``) tracemalloc also runs from the first
import, and each signal adds ``snapshot-N.pickle``, ``types-N.json`` (live objects by type) and,
from the second on, ``holders-N.json``: for the types that gained most objects since the
previous signal, who holds their newest objects (chains of referrers, 3 deep).
``snapshot-N.done`` appears last, so the harness knows all is written.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import signal
import sys
import tracemalloc
import types
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

_DIR = os.environ.get("AIRBYTE_FLEET_BENCH_TRACE_DIR")
_GROWING_TYPES = 12
_PER_TYPE = 3
_DEPTH = 3


def _sqlite_memory() -> int | None:
    """Bytes SQLite holds (page caches, statements) in this process, from libsqlite3 itself."""
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        used = ctypes.CDLL(name).sqlite3_memory_used
    except (OSError, AttributeError):
        return None
    used.restype = ctypes.c_int64
    return int(used())


def _status_kb(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return None


def _rss_kb() -> int | None:
    return _status_kb("VmRSS")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _malloc() -> dict[str, int] | None:
    """glibc's own account of malloc (every arena): bytes handed out (C and Rust libraries, and
    Python's larger objects; pymalloc's arenas are mmapped apart) and bytes free but kept."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return {"in_use": info.uordblks + info.hblkhd, "free_kept": info.fordblks}


def _type_name(obj: object) -> str:
    kind = type(obj)
    return f"{kind.__module__}.{kind.__qualname__}"


def _describe(obj: object) -> str:
    name = _type_name(obj)
    if isinstance(obj, dict):
        keys = [repr(k)[:40] for k in list(obj)[:4]]
        return f"{name} of {len(obj)} (keys {', '.join(keys)}{', …' if len(obj) > 4 else ''})"
    if isinstance(obj, list | tuple | set | frozenset):
        return f"{name} of {len(obj)}"
    if isinstance(obj, types.ModuleType):
        return f"module {obj.__name__}"
    return name


def _holders(obj: object, ignore: set[int], depth: int) -> list[Any]:
    if depth == 0:
        return []
    found: list[Any] = []
    refs = gc.get_referrers(obj)
    # The walk's own lists (this one, and its callers') refer to what they hold too.
    ignore.add(id(refs))
    ignore.add(id(found))
    try:
        for ref in refs:
            if id(ref) in ignore or isinstance(ref, FrameType):
                continue
            found.append({"held_by": _describe(ref), "which": _holders(ref, ignore, depth - 1)})
            if len(found) >= 4:
                break
    finally:
        ignore.discard(id(refs))
        ignore.discard(id(found))
    return found


_TRACE = os.environ.get("AIRBYTE_FLEET_BENCH_TRACE") == "1"
# An experiment, not a setting of airbyte-fleet: every SQLite connection the worker opens gets
# this page cache size (KiB), to see how much of the RSS growth is SQLite's cache filling up.
_SQLITE_CACHE_KIB = os.environ.get("AIRBYTE_FLEET_BENCH_SQLITE_CACHE_KIB")

if _DIR and _SQLITE_CACHE_KIB:
    import sqlite3

    _connect = sqlite3.connect

    def _connect_with_cache(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = _connect(*args, **kwargs)
        conn.execute(f"PRAGMA cache_size = -{int(_SQLITE_CACHE_KIB)}")
        return conn

    sqlite3.connect = _connect_with_cache


def _census(folder: Path, taken: int, previous: Counter[str]) -> Counter[str]:
    """Live objects by type; and who holds the newest of those that grew since last time."""
    live = gc.get_objects()
    counts = Counter(_type_name(obj) for obj in live)
    (folder / f"types-{taken}.json").write_text(json.dumps(dict(counts.most_common())))
    if previous:
        grown = [
            (name, counts[name] - previous.get(name, 0))
            for name in counts
            if counts[name] > previous.get(name, 0)
        ]
        grown.sort(key=lambda item: -item[1])
        report = []
        for name, more in grown[:_GROWING_TYPES]:
            newest = [obj for obj in live if _type_name(obj) == name][-_PER_TYPE:]
            ignore = {id(live), id(newest)}
            held = [
                {"object": _describe(obj)[:200], "held_by": _holders(obj, ignore, _DEPTH)}
                for obj in newest
            ]
            report.append({"type": name, "more": more, "newest": held})
            del newest
        (folder / f"holders-{taken}.json").write_text(json.dumps(report, indent=1))
    return counts


if _DIR:
    if _TRACE:
        tracemalloc.start(int(os.environ.get("AIRBYTE_FLEET_BENCH_TRACE_FRAMES", "12")))
    _taken = 0
    _previous: Counter[str] = Counter()

    def _account(signum: int, frame: FrameType | None) -> None:
        global _taken, _previous
        _taken += 1
        folder = Path(_DIR)  # type: ignore[arg-type]
        # A full collection also empties the interpreter's free lists (tuples, dicts, floats),
        # whose blocks tracemalloc would otherwise count as live where they were first made.
        gc.collect()
        memory = {
            "rss_kb": _rss_kb(),
            "sqlite_bytes": _sqlite_memory(),
            "rss_anon_kb": _status_kb("RssAnon"),
            "rss_file_kb": _status_kb("RssFile"),
            "malloc": _malloc(),
            "python_blocks": sys.getallocatedblocks(),
            "python_traced_bytes": tracemalloc.get_traced_memory()[0] if _TRACE else None,
            # Which tree was measured (the harness may point PYTHONPATH at another one).
            "package": getattr(sys.modules.get("airbyte_fleet"), "__file__", None),
        }
        (folder / f"memory-{_taken}.json").write_text(json.dumps(memory))
        if _TRACE:
            snapshot = tracemalloc.take_snapshot().filter_traces(
                [tracemalloc.Filter(False, tracemalloc.__file__)]
            )
            snapshot.dump(str(folder / f"snapshot-{_taken}.pickle"))
            del snapshot  # not to be counted in the census
            _previous = _census(folder, _taken, _previous)
        (folder / f"snapshot-{_taken}.done").write_text("")

    signal.signal(signal.SIGUSR1, _account)
