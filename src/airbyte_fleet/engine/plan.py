"""Which connections a run touches, decided before anything is triggered.

A selection is read as a union of parts: the command line's own selection and each named group
are evaluated separately, and the plan holds every connection any of them picked. Within one part,
explicit ids are always taken, and the filters given intersect (name AND tag AND workspace), while
the values of one filter are alternatives (any glob, any tag, any workspace). So
``--group finance --group marketing`` runs both groups, whatever kind of filter each group uses.

Name globs are matched with :func:`fnmatch.fnmatchcase` on case-folded text, so ``postgres*``
matches ``Postgres → Snowflake``; tag names are compared case-insensitively too, because Airbyte's
UI shows tags as typed but users rarely remember the casing.

Order: explicit ids as given (the command line's, then each group's), then every filter match
sorted by name (case-folded) and id; a connection appears once, where it first appeared. Inactive
and locked connections are planned as skipped unless ``include_inactive``; deleted (deprecated)
ones are always skipped.

A plan can also arrive in parts (:func:`stream_plan`), so that a run triggers its first syncs
while later pages of the connection list are still being read: the explicit ids first (each looked
up, so an unknown one fails before anything runs), then each page's filter matches sorted by name,
page after page. Only the order differs from :func:`build_plan`'s (sorted per page, not across
the whole list); the connections are the same, and "nothing matched" is known only at the end.
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

import anyio

from airbyte_fleet._caller import selection_field, selection_fields
from airbyte_fleet._messages import chain, spell_out_controls
from airbyte_fleet.api import AirbyteClient, AuthError, Connection, NotFoundError
from airbyte_fleet.api.client import PAGE_LIMIT
from airbyte_fleet.engine.events import PlannedSync
from airbyte_fleet.engine.options import Selection
from airbyte_fleet.engine.stages import Stage, stage_cycle, stage_order
from airbyte_fleet.errors import ConfigError

__all__ = [
    "Plan",
    "PlanError",
    "PlanPart",
    "PlanParts",
    "build_plan",
    "group_cycle",
    "is_staged",
    "stage_cycle_message",
    "stream_plan",
]

_NO_GROUPS: Mapping[str, Selection] = MappingProxyType({})
# Past this many ids an error message stops listing them: it must stay one readable sentence.
_MAX_IDS_SHOWN = 10
_ALL_FIELDS = ("connections", "names", "tags", "workspaces", "groups", "all")
_FILTERS = ("connections", "names", "tags", "workspaces", "all")
# Airbyte "deletes" a connection by marking it deprecated; no job can ever start on it again, so
# --include-inactive does not bring it back.
_NEVER_RUNNABLE = frozenset({"deprecated"})


class PlanError(ConfigError):
    """The selection cannot be planned (unknown ids or groups, nothing selected or matched)."""


@dataclass(frozen=True)
class Plan:
    items: tuple[PlannedSync, ...]
    # Parts of the selection that contributed nothing (a glob or tag that matched no connection):
    # not errors, since other parts matched, but almost always a typo worth logging.
    warnings: tuple[str, ...] = ()
    connections_listed: int | None = field(default=None, compare=False)
    # A staged run's groups, each after the ones it waits for (empty: no group waits for another).
    stages: tuple[Stage, ...] = ()

    @property
    def runnable(self) -> tuple[PlannedSync, ...]:
        return tuple(item for item in self.items if item.runnable)

    @property
    def skipped(self) -> tuple[PlannedSync, ...]:
        return tuple(item for item in self.items if not item.runnable)

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-ready row per connection, in run order, for ``--dry-run``."""
        return [
            {
                "connection_id": item.connection_id,
                "name": item.connection_name,
                "workspace_id": item.workspace_id,
                "status": item.status,
                "tags": list(item.tags),
                "action": "run" if item.runnable else "skip",
                "skip_reason": item.skip_reason,
                "selected_by": item.selected_by,
            }
            for item in self.items
        ]

    def describe_stages(self) -> list[dict[str, Any]]:
        """One JSON-ready row per group of a staged run, in stage order, for ``--dry-run``."""
        names = {item.connection_id: item.connection_name for item in self.items}
        return [
            {
                "group": stage.group,
                "after": list(stage.after),
                "on_upstream_failure": stage.on_upstream_failure,
                "connections": [
                    {"connection_id": cid, "name": names.get(cid, "")} for cid in stage.syncs
                ],
                "waits_for": [
                    {"connection_id": cid, "name": names.get(cid, "")} for cid in stage.waits_for
                ],
            }
            for stage in self.stages
        ]


@dataclass(frozen=True)
class PlanPart:
    """One part of a plan that arrives in parts (:func:`stream_plan`), in run order. The last one
    has ``final`` (it may hold no sync) and the plan's ``warnings``."""

    items: tuple[PlannedSync, ...]
    final: bool = False
    warnings: tuple[str, ...] = ()
    connections_listed: int | None = None


# A plan's parts as they come (stream_plan); closing it stops the listing.
PlanParts = AsyncGenerator[PlanPart, None]


@dataclass(frozen=True)
class _Part:
    """One independently evaluated piece of the selection."""

    source: str
    selection: Selection

    @property
    def selects(self) -> bool:
        return bool(self.selection.connections or self.selection.filters_given)

    @cached_property
    def _workspaces(self) -> set[str]:
        return _ids(self.selection.workspaces)

    @cached_property
    def _tags(self) -> set[str]:
        return {tag.casefold() for tag in self.selection.tags}

    @cached_property
    def _globs(self) -> list[str]:
        return [glob.casefold() for glob in self.selection.names]

    def matches(self, connection: Connection) -> bool:
        if self._workspaces and _norm_id(connection.workspace_id) not in self._workspaces:
            return False
        if self._tags and not self._tags & {name.casefold() for name in connection.tag_names}:
            return False
        if self._globs:
            name = connection.name.casefold()
            if not any(fnmatch.fnmatchcase(name, glob) for glob in self._globs):
                return False
        return True


async def build_plan(
    client: AirbyteClient,
    selection: Selection,
    *,
    groups: Mapping[str, Selection] = _NO_GROUPS,
    include_inactive: bool = False,
    lookup_concurrency: int = 16,
) -> Plan:
    """Resolve *selection* (and the *groups* it names) to connections, in run order.

    Raises :class:`PlanError` before anything could be triggered; authentication and transport
    errors propagate unchanged.
    """
    if lookup_concurrency < 1:
        raise ValueError("lookup_concurrency must be at least 1")
    parts, warnings, explicit = _prepare(selection, groups)

    filter_parts = [part for part in parts if part.selection.filters_given]
    listed: list[Connection] | None = None
    if filter_parts:
        # One listing serves every part; it is narrowed to workspaces only if every part is.
        scopes = [_ids(part.selection.workspaces) for part in filter_parts]
        workspace_ids = sorted(set().union(*scopes)) if all(scopes) else None
        listed = await client.list_connections(workspace_ids=workspace_ids)

    by_id = {_norm_id(c.connection_id): c for c in listed or ()}
    found = await _look_up(
        client, [cid for cid in explicit if cid not in by_id], lookup_concurrency
    )
    missing = [cid for cid in explicit if cid not in by_id and cid not in found]
    if missing:
        raise PlanError(_missing_message(missing, {explicit[cid] for cid in missing}))

    chosen: dict[str, tuple[Connection, str]] = {}
    for cid, source in explicit.items():
        chosen[cid] = (by_id.get(cid) or found[cid], source)
    # Every connection each part selects, not only those it was first to pick: a staged run's
    # group needs them all.
    members: dict[str, list[str]] = {
        part.source: [_norm_id(cid) for cid in part.selection.connections] for part in parts
    }

    if listed is not None:
        ordered = sorted(listed, key=lambda c: (c.name.casefold(), c.name, c.connection_id))
        for part in filter_parts:
            matched = [c for c in ordered if part.matches(c)]
            members[part.source] += [_norm_id(c.connection_id) for c in matched]
            for connection in matched:
                chosen.setdefault(_norm_id(connection.connection_id), (connection, part.source))
            warnings.extend(_unused_terms(part, listed, matched))
        if not chosen:
            raise PlanError(_nothing_matched_message(filter_parts, len(listed)))
        # Filter matches across parts are one sorted run, not one block per group.
        head = {cid: chosen[cid] for cid in explicit}
        tail = sorted(
            (item for cid, item in chosen.items() if cid not in head),
            key=lambda item: (item[0].name.casefold(), item[0].name, item[0].connection_id),
        )
        items = [*head.values(), *tail]
    else:
        items = list(chosen.values())

    planned = tuple(
        _planned(c, skip_reason=_skip_reason(c, include_inactive), selected_by=source)
        for c, source in items
    )
    return Plan(
        items=planned,
        warnings=tuple(warnings),
        connections_listed=len(listed) if listed is not None else None,
        stages=_stages(parts, groups, members, planned, len(listed) if listed else None),
    )


def _prepare(
    selection: Selection, groups: Mapping[str, Selection]
) -> tuple[list[_Part], list[str], dict[str, str]]:
    """The selection's parts, the warnings known before any listing, and the explicit ids (in the
    order given, first occurrence wins) with the part that asked for each."""
    _check_after(groups)
    parts = _parts(_with_upstream(selection, groups), groups)
    if not any(part.selects for part in parts):
        # Name the groups that are empty themselves, not those that only include others.
        empty = [p.source for p in parts if p.source != "selection" and not p.selection.groups]
        empty = empty or [p.source for p in parts if p.source != "selection"]
        if empty:
            text = _join(empty)
            raise PlanError(
                f"{text[0].upper()}{text[1:]} {'selects' if len(empty) == 1 else 'select'} "
                "nothing; give it connections, names, tags, workspaces or all = true in the "
                f"config file, or pass {selection_fields(_FILTERS)}."
            )
        raise PlanError(f"Nothing selected; pass {selection_fields(_ALL_FIELDS, examples=True)}.")
    warnings = [
        f"{part.source} selects nothing"
        for part in parts
        if part.source != "selection" and not part.selects and not part.selection.groups
    ]

    # Explicit ids, in the order given, first occurrence wins; remember who asked for each.
    explicit: dict[str, str] = {}
    for part in parts:
        for connection_id in part.selection.connections:
            explicit.setdefault(_norm_id(connection_id), part.source)

    return parts, warnings, explicit


async def stream_plan(
    client: AirbyteClient,
    selection: Selection,
    *,
    groups: Mapping[str, Selection] = _NO_GROUPS,
    include_inactive: bool = False,
    lookup_concurrency: int = 16,
) -> PlanParts:
    """:func:`build_plan` in parts, as the connection list is read (see the module's doc): the
    explicit ids with the first page's matches, then each later page's new matches, the last part
    ``final``. Parts that would hold nothing are left out, but for the final one.

    Raises :class:`PlanError` as :func:`build_plan` does: unknown ids or groups before the first
    part, "nothing matched" in place of the final part (then no part held a sync).
    """
    if lookup_concurrency < 1:
        raise ValueError("lookup_concurrency must be at least 1")
    parts, warnings, explicit = _prepare(selection, groups)
    # Every explicit id is looked up, also one a filter would list: the first part cannot wait
    # for the whole list, and an unknown id must fail before anything is triggered.
    found = await _look_up(client, list(explicit), lookup_concurrency)
    missing = [cid for cid in explicit if cid not in found]
    if missing:
        raise PlanError(_missing_message(missing, {explicit[cid] for cid in missing}))
    chosen = set(explicit)
    pending = [
        _planned(found[cid], skip_reason=_skip_reason(found[cid], include_inactive), selected_by=by)
        for cid, by in explicit.items()
    ]
    filter_parts = [part for part in parts if part.selection.filters_given]
    if not filter_parts:
        yield PlanPart(tuple(pending), final=True, warnings=tuple(warnings))
        return

    scopes = [_ids(part.selection.workspaces) for part in filter_parts]
    workspace_ids = sorted(set().union(*scopes)) if all(scopes) else None
    terms = _Terms(filter_parts)
    listed = 0
    pages = client.iter_connection_pages(workspace_ids=workspace_ids)
    async with aclosing(pages):
        async for page in pages:
            listed += len(page)
            new: list[tuple[Connection, str]] = []
            for connection in page:
                source = terms.see(connection)
                cid = _norm_id(connection.connection_id)
                if source is not None and cid not in chosen:
                    chosen.add(cid)
                    new.append((connection, source))
            new.sort(key=lambda item: _name_key(item[0]))
            pending += [
                _planned(c, skip_reason=_skip_reason(c, include_inactive), selected_by=source)
                for c, source in new
            ]
            # A short page is the list's last (the client's rule): the final part need not wait
            # for the list to say so.
            if len(page) < PAGE_LIMIT:
                break
            if pending:
                yield PlanPart(tuple(pending), connections_listed=listed)
                pending = []
    if not chosen:
        raise PlanError(_nothing_matched_message(filter_parts, listed))
    yield PlanPart(
        tuple(pending),
        final=True,
        warnings=(*warnings, *terms.notes(listed)),
        connections_listed=listed,
    )


def _name_key(connection: Connection) -> tuple[str, str, str]:
    return (connection.name.casefold(), connection.name, connection.connection_id)


class _Terms:
    """What the filter parts made of the connections listed so far: which part picked each one,
    how many each part matched, and the globs and tags nothing listed has had yet (typos,
    mostly), for the warnings once the list is read."""

    def __init__(self, parts: Sequence[_Part]) -> None:
        self._parts = parts
        self._matched = [0] * len(parts)
        self._globs = [{glob: glob.casefold() for glob in p.selection.names} for p in parts]
        self._tags: set[str] = set()

    def see(self, connection: Connection) -> str | None:
        """Count *connection*; the first part that matches it, if any."""
        name = connection.name.casefold()
        self._tags.update(tag.casefold() for tag in connection.tag_names)
        source = None
        for i, part in enumerate(self._parts):
            unseen = self._globs[i]
            for glob, folded in list(unseen.items()):
                if fnmatch.fnmatchcase(name, folded):
                    del unseen[glob]
            if part.matches(connection):
                self._matched[i] += 1
                source = source or part.source
        return source

    def notes(self, listed: int) -> list[str]:
        notes: list[str] = []
        for i, part in enumerate(self._parts):
            where = "" if part.source == "selection" else f" in {part.source}"
            if not self._matched[i]:
                notes.append(
                    f"{_describe_part(part.selection)}{where} matched none of the {listed} "
                    "connections listed"
                )
                continue
            notes += [f"name '{glob}'{where} matched no connection" for glob in self._globs[i]]
            notes += [
                f"tag '{tag}'{where} is on no connection"
                for tag in part.selection.tags
                if tag.casefold() not in self._tags
            ]
        return notes


def _parts(selection: Selection, groups: Mapping[str, Selection]) -> list[_Part]:
    """The selection's own part, then each named group once (groups may name further groups)."""
    unknown = [name for name in _group_refs(selection, groups) if name not in groups]
    if unknown:
        names = ", ".join(f"'{spell_out_controls(name)}'" for name in unknown)
        # The caller may have no config file at all (the worker or Python without one): the
        # planner cannot tell, so the sentence covers both.
        known = (
            f"the config file defines {', '.join(map(spell_out_controls, sorted(groups)))}"
            if groups
            else "no groups are defined: no config file was read, or it has no [groups.NAME] table"
        )
        raise PlanError(
            f"Unknown group{'s' if len(unknown) > 1 else ''} {names} ({known}); check "
            f"{selection_field('groups')} or add a [groups.NAME] table to the config file."
        )
    cycle = group_cycle({name: body.groups for name, body in groups.items()}, selection.groups)
    if cycle:
        first, last, back = (spell_out_controls(name) for name in (cycle[0], cycle[-2], cycle[-1]))
        raise PlanError(
            f"Group {first} includes itself ({chain(cycle)}); remove '{back}' from the groups "
            f"of group {last}."
        )
    parts = [_Part("selection", selection)]
    seen: set[str] = set()
    pending = list(selection.groups)
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        parts.append(_Part(f"group {name}", groups[name]))
        pending.extend(groups[name].groups)
    return parts


def _after(body: Selection) -> list[str]:
    # A plain Selection (a Python caller's group) comes after nothing.
    after: list[str] = getattr(body, "after", [])
    return after


def _check_after(groups: Mapping[str, Selection]) -> None:
    """Every ``after`` names a group, and no groups wait for each other in a cycle (a config file
    is checked as it is read; a Python caller's or a request's groups only here)."""
    for name, body in groups.items():
        unknown = [up for up in _after(body) if up not in groups]
        if unknown:
            raise PlanError(
                f"Group {spell_out_controls(name)} comes after unknown group "
                f"'{spell_out_controls(unknown[0])}'; define [groups."
                f"{spell_out_controls(unknown[0])}] or remove it from the after of group "
                f"{spell_out_controls(name)}."
            )
    message = stage_cycle_message(
        {name: body.groups for name, body in groups.items()},
        {name: _after(body) for name, body in groups.items()},
    )
    if message:
        raise PlanError(message)


def stage_cycle_message(
    includes: Mapping[str, Sequence[str]], after: Mapping[str, Sequence[str]], *, where: str = ""
) -> str | None:
    """The one sentence for groups that would wait for each other for ever, or None: a group
    waits for the groups it comes after (*after*) and for those it includes (*includes*). A
    cycle of includes alone is left to its own sentence (a group that includes itself)."""
    if stage_cycle(includes) is not None:
        return None
    edges = {name: [*after.get(name, ()), *includes.get(name, ())] for name in after}
    cycle = stage_cycle(edges)
    if cycle is None:
        return None
    last, back = spell_out_controls(cycle[-2]), spell_out_controls(cycle[-1])
    key = "after" if cycle[-1] in after.get(cycle[-2], ()) else "groups"
    return (
        f"Groups{where} wait for each other in a cycle ({chain(cycle)}), so none could ever "
        f"start; remove '{back}' from {key} in [groups.{last}]."
    )


def _with_upstream(selection: Selection, groups: Mapping[str, Selection]) -> Selection:
    """*selection* with the groups its groups come after, transitively, when it (or the group)
    says ``with_upstream``; groups it does not define are left to :func:`_parts` to name."""
    named = list(selection.groups)
    pending = list(named)
    while pending:
        body = groups.get(pending.pop(0))
        if body is None or not (selection.with_upstream or body.with_upstream):
            continue
        for up in _after(body):
            if up not in named:
                named.append(up)
                pending.append(up)
    if len(named) == len(selection.groups):
        return selection
    return selection.model_copy(update={"groups": named})


def is_staged(selection: Selection, groups: Mapping[str, Selection]) -> bool:
    """Whether a run of *selection* is staged: one of the groups it runs comes after another of
    them. Such a run is planned whole before it starts (its groups need the whole graph)."""
    names = set(_group_refs(_with_upstream(selection, groups), groups))
    return any(up in names for name in names if name in groups for up in _after(groups[name]))


def _stages(
    parts: Sequence[_Part],
    groups: Mapping[str, Selection],
    members: Mapping[str, Sequence[str]],
    planned: Sequence[PlannedSync],
    listed: int | None,
) -> tuple[Stage, ...]:
    """The groups of a staged run, each after the ones it waits for; () when no group of the run
    comes after another. A connection two groups select runs once, in the earlier; a connection
    the command line itself selects has no stage and starts at once."""
    names = [part.source.removeprefix("group ") for part in parts if part.source != "selection"]
    in_run = set(names)
    after = {name: [up for up in _after(groups[name]) if up in in_run] for name in names}
    if not any(after.values()):
        return ()
    edges = {name: [*after[name], *groups[name].groups] for name in names}
    order = stage_order(names, edges)
    direct = {name: members.get(f"group {name}", []) for name in names}
    for name in order:
        if not direct[name] and not groups[name].groups:
            seen = f" of the {listed} these credentials can see" if listed is not None else ""
            raise PlanError(
                f"Group {spell_out_controls(name)} selects no connection{seen}, so a staged run "
                "cannot wait for it; fix its connections, names, tags or workspaces in the "
                "config file, or leave it out of the run."
            )
    free = set(members.get("selection", []))
    runs_in: dict[str, str] = {}
    needs: dict[str, set[str]] = {}
    for name in order:
        for cid in direct[name]:
            if cid not in free:
                runs_in.setdefault(cid, name)
        # Included groups come earlier in the order: their needs are known by now.
        needs[name] = set(direct[name]).union(*(needs[inc] for inc in groups[name].groups))
    ids = [(item.connection_id, _norm_id(item.connection_id)) for item in planned]
    return tuple(
        Stage(
            group=name,
            after=tuple(after[name]),
            on_upstream_failure=getattr(groups[name], "on_upstream_failure", "skip"),
            syncs=tuple(cid for cid, norm in ids if runs_in.get(norm) == name),
            waits_for=tuple(
                cid for cid, norm in ids if norm in needs[name] and runs_in.get(norm) != name
            ),
        )
        for name in order
    )


def group_cycle(includes: Mapping[str, Sequence[str]], starts: Iterable[str]) -> list[str] | None:
    """A chain of groups, from one of *starts*, that comes back to a group on it
    (``["a", "b", "a"]``), or ``None``. *includes* maps a group to the groups it names.

    Without this, groups that only include each other read as "selects nothing".
    """
    return stage_cycle(includes, starts)


def _group_refs(selection: Selection, groups: Mapping[str, Selection]) -> list[str]:
    refs: list[str] = []
    pending = list(selection.groups)
    while pending:
        name = pending.pop(0)
        if name in refs:
            continue
        refs.append(name)
        if name in groups:
            pending.extend(groups[name].groups)
    return refs


async def _look_up(
    client: AirbyteClient, connection_ids: Sequence[str], concurrency: int
) -> dict[str, Connection]:
    """``GET /connections/{id}`` for each id, concurrently; unknown ids are simply absent."""
    found: dict[str, Connection] = {}
    fatal: list[BaseException] = []
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(connection_id: str, scope: anyio.CancelScope) -> None:
        async with limiter:
            try:
                found[connection_id] = await client.get_connection(connection_id)
            except NotFoundError:
                pass
            except AuthError as exc:
                # 403 on one connection means these credentials cannot see it; that is the same
                # answer as "no such id" to the user. Any other auth failure ends the lookup.
                if exc.status != 403:
                    fatal.append(exc)
                    scope.cancel()
            except Exception as exc:
                # Cancel the rest ourselves and re-raise after the group, so callers see the
                # original error and not an ExceptionGroup.
                fatal.append(exc)
                scope.cancel()

    if connection_ids:
        async with anyio.create_task_group() as tg:
            for connection_id in connection_ids:
                tg.start_soon(one, connection_id, tg.cancel_scope)
    if fatal:
        raise fatal[0]
    return found


def _planned(connection: Connection, *, skip_reason: str | None, selected_by: str) -> PlannedSync:
    return PlannedSync(
        connection_id=connection.connection_id,
        connection_name=connection.name,
        workspace_id=connection.workspace_id,
        status=connection.status,
        tags=tuple(connection.tag_names),
        skip_reason=skip_reason,
        selected_by=selected_by,
    )


def _skip_reason(connection: Connection, include_inactive: bool) -> str | None:
    if connection.is_active:
        return None
    if connection.status in _NEVER_RUNNABLE:
        return f"connection is {connection.status} (deleted)"
    return None if include_inactive else f"connection is {connection.status}"


def _norm_id(value: str) -> str:
    # The same id pasted in upper case or without dashes must dedupe with the API's spelling.
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return value


def _ids(values: Iterable[str]) -> set[str]:
    return {_norm_id(value) for value in values}


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _shown(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_MAX_IDS_SHOWN])
    more = len(ids) - _MAX_IDS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _missing_message(missing: Sequence[str], sources: set[str]) -> str:
    plural = len(missing) > 1
    where = selection_field("connections")
    groups = sorted(source for source in sources if source != "selection")
    if groups:
        where = f"{where} and the connections of {_join(groups)}"
    return (
        f"Connection{'s' if plural else ''} {_shown(missing)} "
        f"{'do' if plural else 'does'} not exist or these credentials cannot see "
        f"{'them' if plural else 'it'}; check {where}."
    )


def _describe_part(sel: Selection) -> str:
    terms: list[str] = []
    if sel.names:
        terms.append(" or ".join(f"name '{glob}'" for glob in sel.names))
    if sel.tags:
        terms.append(" or ".join(f"tag '{tag}'" for tag in sel.tags))
    if sel.workspaces:
        terms.append(" or ".join(f"workspace {ws}" for ws in sel.workspaces))
    if not terms:
        return selection_field("all")
    return " and ".join(
        f"({term})" if " or " in term and len(terms) > 1 else term for term in terms
    )


def _nothing_matched_message(parts: Sequence[_Part], total: int) -> str:
    asked = "; ".join(
        _describe_part(part.selection)
        + ("" if part.source == "selection" else f" from {part.source}")
        for part in parts
    )
    return (
        f"The selection {asked} matched none of the {total} connection"
        f"{'' if total == 1 else 's'} these credentials can see; check the names, tags and "
        "workspaces with 'airbyte-fleet connections'."
    )


def _unused_terms(
    part: _Part, listed: Sequence[Connection], matched: Sequence[Connection]
) -> list[str]:
    """Globs and tags of *part* that no listed connection has (typos, mostly)."""
    where = "" if part.source == "selection" else f" in {part.source}"
    if not matched:
        return [
            f"{_describe_part(part.selection)}{where} matched none of the {len(listed)} "
            "connections listed"
        ]
    notes: list[str] = []
    names = [c.name.casefold() for c in listed]
    for glob in part.selection.names:
        if not any(fnmatch.fnmatchcase(name, glob.casefold()) for name in names):
            notes.append(f"name '{glob}'{where} matched no connection")
    tags = {tag.casefold() for c in listed for tag in c.tag_names}
    for tag in part.selection.tags:
        if tag.casefold() not in tags:
            notes.append(f"tag '{tag}'{where} is on no connection")
    return notes
