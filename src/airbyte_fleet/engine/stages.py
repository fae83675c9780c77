"""Staged runs: groups that wait for other groups (pure data and bookkeeping, no I/O).

The plan (``engine/plan.py``) turns the config's ``after`` into :class:`Stage` records, in an order
where every group comes after the groups it waits for; the engine only reads those. It is a DAG,
not a row of barriers: a group starts the moment every group it comes after has finished, and
groups that wait for nothing start with the run, all under the run's one concurrency limit.

A group *finishes* once every connection it needs has a final state: the ones that run in it
(``syncs``) and the ones that run in another group (``waits_for``: a connection two groups select
runs once, in the earliest; a group that includes others needs theirs). A group whose upstream
did not succeed is skipped with ``on_upstream_failure = "skip"`` (the default): each of its syncs
is skipped with the cause ``upstream_failed``; ``"run"`` runs it anyway.

:class:`StageBook` is the engine's ledger of this: which syncs are held, which groups may start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from airbyte_fleet.engine.outcome import OK_OUTCOMES, OUTCOMES

__all__ = [
    "GroupOutcome",
    "Stage",
    "StageBook",
    "StageStart",
    "UpstreamPolicy",
    "stage_cycle",
    "stage_order",
]

UpstreamPolicy = Literal["skip", "run"]
GroupOutcome = Literal["succeeded", "failed", "skipped", "interrupted"]


@dataclass(frozen=True, slots=True)
class Stage:
    """One group of a staged run."""

    group: str
    # The groups of this run it starts after (an ``after`` naming a group the run does not hold
    # is left out by the plan: that group's syncs are not waited for).
    after: tuple[str, ...] = ()
    on_upstream_failure: UpstreamPolicy = "skip"
    # Connection ids that run in this group, in plan order.
    syncs: tuple[str, ...] = ()
    # Connection ids this group needs that run in another group (it finishes after them too).
    waits_for: tuple[str, ...] = ()


def stage_cycle(
    edges: Mapping[str, Sequence[str]], starts: Iterable[str] | None = None
) -> list[str] | None:
    """A chain of groups that comes back to itself (``["raw", "marts", "raw"]``), or None.
    *edges* maps a group to the groups it waits for (or includes); only chains from *starts* (by
    default every group) are followed. Iterative: a config file can chain more groups than
    Python's recursion limit."""
    finished: set[str] = set()
    for start in edges if starts is None else starts:
        if start in finished or start not in edges:
            continue
        path, on_path = [start], {start}
        todo = [iter(edges[start])]
        while todo:
            name = next(todo[-1], None)
            if name is None:
                on_path.discard(path[-1])
                finished.add(path.pop())
                todo.pop()
            elif name in on_path:
                return [*path[path.index(name) :], name]
            elif name not in finished and name in edges:
                path.append(name)
                on_path.add(name)
                todo.append(iter(edges[name]))
    return None


def stage_order(names: Sequence[str], edges: Mapping[str, Sequence[str]]) -> list[str]:
    """*names* by stage: a group that waits for nothing first, then each group one stage after
    the latest it waits for (*edges*, which must have no cycle); within a stage, in the order
    given."""
    position = {name: i for i, name in enumerate(names)}
    depth: dict[str, int] = {}
    for name in names:
        # Iterative: a config file can chain more groups than Python's recursion limit.
        todo, visiting = [name], set()
        while todo:
            top = todo[-1]
            if top in depth:
                todo.pop()
                continue
            ups = [up for up in edges.get(top, ()) if up in position]
            missing = [up for up in ups if up not in depth]
            if not missing:
                depth[top] = 1 + max((depth[up] for up in ups), default=-1)
                todo.pop()
                continue
            if top in visiting:
                raise ValueError("the groups wait for each other in a cycle")
            visiting.add(top)
            todo.extend(missing)
    return sorted(names, key=lambda name: (depth[name], position[name]))


@dataclass(frozen=True, slots=True)
class StageStart:
    """What the engine must do for a group that may start now: start its held syncs, or, when
    ``skip_reason`` is set, skip each of them (cause ``upstream_failed``)."""

    group: str
    syncs: tuple[str, ...]
    skip_reason: str | None = None
    # Every connection it needs was final before this process began (a resume): it is not
    # announced again.
    carried: bool = False


@dataclass(slots=True)
class _Group:
    stage: Stage
    needs: int
    state: Literal["waiting", "running", "finished"] = "waiting"
    counts: dict[str, int] = field(default_factory=dict)
    outcome: GroupOutcome | None = None
    reason: str | None = None
    # How many of the connections it needs ended in a process before this one (a resume).
    earlier: int = 0

    @property
    def carried(self) -> bool:
        total = len(self.stage.syncs) + len(self.stage.waits_for)
        return total > 0 and self.earlier == total


class StageBook:
    """The engine's ledger of a staged run. Pure bookkeeping: the engine tells it what ended
    (:meth:`settled`) and asks what may start (:meth:`startable`)."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)
        self._groups = {s.group: _Group(s, needs=len(s.syncs) + len(s.waits_for)) for s in stages}
        # The group each held connection runs in, and who needs each connection.
        self._runs_in = {cid: s.group for s in stages for cid in s.syncs}
        self._needed_by: dict[str, list[str]] = {}
        for s in stages:
            for cid in (*s.syncs, *s.waits_for):
                self._needed_by.setdefault(cid, []).append(s.group)
        self._downstream: dict[str, list[str]] = {}
        for s in stages:
            for up in s.after:
                self._downstream.setdefault(up, []).append(s.group)
        self._settled: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.stages)

    def holds(self, connection_id: str) -> bool:
        """Whether *connection_id* must wait for its group to start."""
        group = self._runs_in.get(connection_id)
        return group is not None and self._groups[group].state == "waiting"

    def settled(self, connection_id: str, outcome: str, *, earlier: bool = False) -> None:
        """*connection_id* reached a final *outcome* (*earlier*: in a process before this one)."""
        if connection_id in self._settled:
            return
        self._settled.add(connection_id)
        for name in self._needed_by.get(connection_id, ()):
            group = self._groups[name]
            group.needs -= 1
            group.counts[outcome] = group.counts.get(outcome, 0) + 1
            if earlier:
                group.earlier += 1

    def startable(self) -> list[StageStart]:
        """Groups whose upstream has finished and that have not started, in stage order; each is
        marked running (its syncs the caller's to start or skip)."""
        found: list[StageStart] = []
        for stage in self.stages:
            group = self._groups[stage.group]
            if group.state != "waiting":
                continue
            ups = [self._groups[up] for up in stage.after if up in self._groups]
            if any(up.state != "finished" for up in ups):
                continue
            group.state = "running"
            failed = [up for up in ups if up.outcome != "succeeded"]
            reason = None
            if failed and stage.on_upstream_failure == "skip":
                first = failed[0]
                what = (
                    "was skipped"
                    if first.outcome == "skipped"
                    else f"did not succeed ({_describe(first.counts)})"
                )
                reason = f"upstream group {first.stage.group} {what}"
                group.reason = reason
            pending = tuple(cid for cid in stage.syncs if cid not in self._settled)
            found.append(StageStart(stage.group, pending, reason, carried=group.carried))
        return found

    def finishable(
        self, *, stopping: bool = False
    ) -> list[tuple[Stage, GroupOutcome, dict[str, int], str | None, bool]]:
        """Groups running whose every needed connection is final, marked finished: each with its
        outcome, counts, why it was skipped, and whether it was carried from an earlier process.
        *stopping*: the run is being stopped, so a group that did not succeed was interrupted."""
        done: list[tuple[Stage, GroupOutcome, dict[str, int], str | None, bool]] = []
        for stage in self.stages:
            group = self._groups[stage.group]
            if group.state != "running" or group.needs > 0:
                continue
            group.state = "finished"
            group.outcome = _outcome(group, stopping)
            done.append((stage, group.outcome, _counts(group.counts), group.reason, group.carried))
        return done

    def unfinished(self) -> Iterable[tuple[Stage, dict[str, int]]]:
        """Groups not finished when the run ends (it was stopped), marked finished."""
        for stage in self.stages:
            group = self._groups[stage.group]
            if group.state != "finished":
                group.state = "finished"
                group.outcome = "interrupted"
                yield stage, _counts(group.counts)

    def release_all(self) -> None:
        """The run stops: no group waits any more (the held syncs are the caller's to report)."""
        for group in self._groups.values():
            if group.state == "waiting":
                group.state = "running"


def _outcome(group: _Group, stopping: bool) -> GroupOutcome:
    if group.reason is not None:
        return "skipped"
    if all(o in OK_OUTCOMES for o in group.counts) and not (stopping and "skipped" in group.counts):
        return "succeeded"
    return "interrupted" if stopping else "failed"


def _counts(counts: Mapping[str, int]) -> dict[str, int]:
    """Counts in the result's order of outcomes, zeros left out."""
    known = {o: counts[o] for o in OUTCOMES if counts.get(o)}
    return known | {o: n for o, n in counts.items() if o not in known and n}


def _describe(counts: Mapping[str, int]) -> str:
    bad = [(o, n) for o, n in _counts(counts).items() if o not in OK_OUTCOMES]
    return ", ".join(f"{n} {o.replace('_', ' ')}" for o, n in bad) or "not finished"
