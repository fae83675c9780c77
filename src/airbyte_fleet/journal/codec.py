"""Events to JSON and back, through pydantic: one ``TypeAdapter`` per event kind.

The stored form is a JSON object: ``"event"`` (the kind) first, then every field whose value is not
None (every field that can be None defaults to None, so nothing is lost). Fields kept out of log
lines (``planned``, ``options``) are included and floats are not rounded, so a decoded event equals
the one that was encoded.

Per kind rather than one adapter over a tagged union: events carry their kind as a ClassVar, so a
union needs a callable discriminator, a Python call per event; a store knows each row's kind
without parsing it anyway. ``bench/journal_codec.py`` (40,002 events of 10,000 syncs, 2 cores):
per kind 2.9 µs to encode and 4.2 µs to decode an event, the union 3.7 and 6.7, the hand-written
codec this replaced 10.9 and 29.3.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

from pydantic import TypeAdapter, ValidationError
from pydantic_core import CoreConfig, SchemaValidator

from airbyte_fleet.engine.events import Event

__all__ = ["EventDecodeError", "UnknownEventKind", "decode_event", "encode_event", "event_kinds"]


class EventDecodeError(ValueError):
    """A stored event cannot be read back: not JSON, or not the shape its kind has."""


class UnknownEventKind(EventDecodeError):
    """The event's kind is not one this version knows (a newer version wrote it).

    Readers skip such events: a kind this version does not know cannot change what it concludes.
    """

    def __init__(self, kind: object) -> None:
        super().__init__(f"unknown event kind {kind!r}")
        self.kind = kind


def _subclasses(root: type[Event]) -> Iterator[type[Event]]:
    for sub in root.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def event_kinds() -> dict[str, type[Event]]:
    """Every concrete event class by its kind (a class that names its own ``kind``; ``SyncEvent``
    only inherits ``Event``'s placeholder)."""
    found: dict[str, type[Event]] = {}
    for sub in _subclasses(Event):
        if "kind" in vars(sub):
            found.setdefault(sub.kind, sub)
    return found


class _Kind(NamedTuple):
    """One kind's codec: pydantic's adapter (encoding, and decoding a mapping) and the validator
    that decodes its JSON."""

    adapter: TypeAdapter[Any]
    from_json: SchemaValidator


# pydantic-core keeps one process-wide cache of up to 16,384 strings met while parsing JSON, on by
# default. Every replayed event brings new values (run ids, connection names, error text): a worker
# answering GET /runs/{id} for finished runs filled it by about one string a run, its memory never
# flat before ~16,000 runs. Keys (field names, a few dozen) are worth caching, values are not. The
# cost, over the 40,002 events of a 10,000-sync run (bench/journal_codec.py): decoding alone, keys
# only is 2.7 µs an event against 2.9 caching every string; with every decoded event kept, caching
# every string is ~15% faster (equal values then share one object); a whole replay from SQLite into
# a result takes ~0.6 s either way. from_json then validate_python, the other way to keep values
# out, is slower (3.8–4.4 µs). TypeAdapter refuses a config for a dataclass (the class may carry its
# own), so the validator is built from the adapter's schema here.
_JSON_CONFIG = CoreConfig(cache_strings="keys")

# Built on first use of a kind: most processes only ever meet a few, and each adapter costs a
# schema build. Filled by whole-dict swaps, so a reader on another thread never sees half of one.
_KINDS: dict[str, _Kind] = {}


def _codec(kind: object) -> _Kind:
    global _KINDS
    if isinstance(kind, str):
        found = _KINDS.get(kind)
        if found is not None:
            return found
        # Looked up again on a miss, so event classes defined after the first lookup are found.
        cls = event_kinds().get(kind)
        if cls is not None:
            adapter: TypeAdapter[Any] = TypeAdapter(cls)
            found = _Kind(adapter, SchemaValidator(adapter.core_schema, _JSON_CONFIG))
            _KINDS = {**_KINDS, kind: found}
            return found
    raise UnknownEventKind(kind)


def encode_event(event: Event) -> str:
    """The event as one line of JSON, complete enough for :func:`decode_event`."""
    # fallback=str: a value JSON cannot hold (in options) is kept as its text, not a failed write.
    body = _codec(event.kind).adapter.dump_json(event, exclude_none=True, fallback=str)
    # Every event has fields, so the body is never "{}": the kind goes in front of the first one.
    return f'{{"event":"{event.kind}",{body[1:].decode()}'


def decode_event(data: str | bytes | Mapping[str, Any], *, kind: str | None = None) -> Event:
    """The typed event that *data* (:func:`encode_event`'s text, or a mapping such as
    :meth:`Event.to_dict` gives) describes.

    *kind*: the kind when the caller already knows it (a store keeps it beside the text), which
    saves parsing the JSON twice. Keys the event class does not know are ignored, so events written
    by a newer version still decode. Raises :class:`UnknownEventKind` for a kind this version does
    not know and :class:`EventDecodeError` for anything else that cannot be read.
    """
    try:
        if kind is None and not isinstance(data, Mapping):
            data = json.loads(data)
            if not isinstance(data, Mapping):
                raise EventDecodeError("not an event: not a JSON object")
        if isinstance(data, Mapping):
            kind = kind or data.get("event")
            if not isinstance(kind, str):
                raise EventDecodeError("not an event: no 'event' kind")
            event: Event = _codec(kind).adapter.validate_python(data)
        else:
            event = _codec(kind).from_json.validate_json(data)
    except ValidationError as exc:
        # The first problem, on one line: this ends up in a log line, not in front of a user.
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the event"
        raise EventDecodeError(f"cannot decode a {kind} event: {where}: {first['msg']}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EventDecodeError(f"cannot decode a stored event: {exc}") from None
    return event
