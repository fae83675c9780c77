"""The journal's event codec at 10,000 syncs: the hand-written one it had, against pydantic's.

Encodes and decodes the events of one 10,000-sync run (started, then per sync: triggering,
triggered, status changed, succeeded; then finished: ~40,000 events) and prints microseconds per
event, side by side, best of --repeat rounds:

* ``old``: the codec ``engine/journal.py`` had before issue 9 (typing introspection walked by
  hand), kept below verbatim as the reference;
* ``per-kind``: ``airbyte_fleet.journal.codec``, one ``TypeAdapter`` per event kind (what the
  journal uses; a store reads each row's kind from its own column);
* ``union``: one ``TypeAdapter`` over the tagged union of every event class, with a callable
  discriminator (events carry their kind as a ClassVar, not a field);
* ``cache-all``: per kind, decoding with the adapter's own ``validate_json``, which keeps every
  string it meets (values too) in pydantic-core's process-wide cache (the codec before issue 13's
  last fix: a worker's memory grew with each run it replayed); ``per-kind`` caches keys only;
* ``from-json``: per kind, ``pydantic_core.from_json`` (keys cached) then ``validate_python``.

Not a test: numbers go into the report and BENCHMARKS.md.

    .venv/bin/python bench/journal_codec.py --syncs 10000 --repeat 3
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
import types
import typing
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag, TypeAdapter
from pydantic_core import from_json

from airbyte_fleet.engine.events import (
    Event,
    PlannedSync,
    RunFinished,
    RunStarted,
    SyncStatusChanged,
    SyncSucceeded,
    SyncTriggered,
    SyncTriggering,
)
from airbyte_fleet.journal.codec import decode_event, encode_event, event_kinds

# --------------------------------------------------------------------------- the old codec


def _ts(value: datetime) -> str:
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat(timespec="microseconds")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return _ts(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


_SCALARS = frozenset({str, int, float, bool})
_FIELDS: dict[type[Event], tuple[tuple[str, bool], ...]] = {}


def _fields(cls: type[Event]) -> tuple[tuple[str, bool], ...]:
    found = _FIELDS.get(cls)
    if found is None:
        found = _FIELDS[cls] = tuple((f.name, f.default is None) for f in dataclasses.fields(cls))
    return found


def old_event_to_json(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"event": event.kind}
    for name, none_by_default in _fields(type(event)):
        value = getattr(event, name)
        if value is None:
            if not none_by_default:
                out[name] = None
        elif type(value) in _SCALARS:
            out[name] = value
        else:
            out[name] = _plain(value)
    return out


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _decode(options[0], value) if len(options) == 1 else value
    if hint is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    if origin is tuple and isinstance(value, list):
        item = args[0] if args else Any
        return tuple(_decode(item, v) for v in value)
    if origin is list and isinstance(value, list):
        item = args[0] if args else Any
        return [_decode(item, v) for v in value]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _build(hint, value)
    return value


def _build(cls: type[Any], data: dict[str, Any]) -> Any:
    hints = _hints(cls)
    kwargs = {
        f.name: _decode(hints.get(f.name, Any), data[f.name])
        for f in dataclasses.fields(cls)
        if f.init and f.name in data
    }
    return cls(**kwargs)


_KINDS = event_kinds()


def old_encode(event: Event) -> str:
    # What Journal.__call__ did with event_to_json's mapping.
    return json.dumps(
        old_event_to_json(event), separators=(",", ":"), ensure_ascii=False, default=str
    )


def old_decode(text: str, kind: str) -> Event:
    # What Journal.events then reconstruct_event did (the registry lookup is a dict hit).
    data = json.loads(text)
    event: Event = _build(_KINDS[data["event"]], data)
    return event


# --------------------------------------------------------------------------- the union variant


def _discriminate(value: Any) -> str | None:
    if isinstance(value, dict):
        kind = value.get("event")
        return kind if isinstance(kind, str) else None
    return getattr(value, "kind", None)


_UNION: TypeAdapter[Any] = TypeAdapter(
    Annotated[
        Union[tuple(Annotated[cls, Tag(kind)] for kind, cls in _KINDS.items())],  # noqa: UP007
        Discriminator(_discriminate),
    ]
)


def union_encode(event: Event) -> str:
    body = _UNION.dump_json(event, exclude_none=True, fallback=str)
    return f'{{"event":"{event.kind}",{body[1:].decode()}'


def union_decode(text: str, kind: str) -> Event:
    event: Event = _UNION.validate_json(text)
    return event


def new_decode(text: str, kind: str) -> Event:
    return decode_event(text, kind=kind)


# --------------------------------------------------------------------------- string cache variants

_PER_KIND: dict[str, TypeAdapter[Any]] = {kind: TypeAdapter(cls) for kind, cls in _KINDS.items()}


def cache_all_decode(text: str, kind: str) -> Event:
    event: Event = _PER_KIND[kind].validate_json(text)
    return event


def from_json_decode(text: str, kind: str) -> Event:
    event: Event = _PER_KIND[kind].validate_python(from_json(text, cache_strings="keys"))
    return event


# --------------------------------------------------------------------------- the run


def run_events(syncs: int) -> list[Event]:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    clock = iter(range(10**9))

    def at() -> dict[str, Any]:
        n = next(clock)
        return {"run_id": "big", "at": t0 + timedelta(milliseconds=n), "elapsed_s": n / 1000}

    ids = [f"conn-{i:05d}" for i in range(syncs)]
    planned = tuple(PlannedSync(c, f"name {c}", "ws-1", tags=("nightly",)) for c in ids)
    options = {"job_type": "sync", "max_concurrency": 50, "retries": 1, "wait": True}
    events: list[Event] = [
        RunStarted(
            **at(),
            total=syncs,
            job_type="sync",
            max_concurrency=50,
            planned=planned,
            options=options,
            selection={"all": True},
        )
    ]
    for i, cid in enumerate(ids):
        sync = {"connection_id": cid, "connection_name": f"name {cid}", "workspace_id": "ws-1"}
        events += [
            SyncTriggering(**at(), **sync),
            SyncTriggered(**at(), **sync, job_id=1000 + i, status="pending"),
            SyncStatusChanged(
                **at(), **sync, job_id=1000 + i, status="running", old_status="pending"
            ),
            SyncSucceeded(
                **at(), **sync, job_id=1000 + i, status="succeeded", rows_synced=i, bytes_synced=i
            ),
        ]
    events.append(RunFinished(**at(), outcome="succeeded", counts={"succeeded": syncs}))
    return events


Codec = tuple[Callable[[Event], str], Callable[[str, str], Event]]
CODECS: dict[str, Codec] = {
    "old": (old_encode, old_decode),
    "per-kind": (encode_event, new_decode),
    "union": (union_encode, union_decode),
    "cache-all": (encode_event, cache_all_decode),
    "from-json": (encode_event, from_json_decode),
}


def _best(rounds: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        began = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - began)
    return best


def _encode_all(encode: Callable[[Event], str], events: list[Event]) -> list[str]:
    return [encode(e) for e in events]


def _decode_all(decode: Callable[[str, str], Event], texts: list[tuple[str, str]]) -> list[Event]:
    return [decode(t, k) for t, k in texts]


def measure(events: list[Event], rounds: int) -> Iterator[tuple[str, float, float]]:
    for name, (encode, decode) in CODECS.items():
        texts = [(encode(e), e.kind) for e in events]
        decoded = [decode(t, k) for t, k in texts]
        # Every variant must give back exactly what it was given, or its speed means nothing.
        assert decoded == events, f"{name} does not round-trip"
        enc = _best(rounds, functools.partial(_encode_all, encode, events))
        dec = _best(rounds, functools.partial(_decode_all, decode, texts))
        yield name, enc, dec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syncs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best one counts")
    args = parser.parse_args()
    events = run_events(args.syncs)
    print(f"{len(events)} events for {args.syncs} syncs, best of {args.repeat} rounds")
    print(f"{'codec':<10} {'encode µs/event':>16} {'decode µs/event':>16} {'both, s':>9}")
    for name, enc, dec in measure(events, args.repeat):
        per = 1e6 / len(events)
        print(f"{name:<10} {enc * per:>16.2f} {dec * per:>16.2f} {enc + dec:>9.3f}")


if __name__ == "__main__":
    main()
