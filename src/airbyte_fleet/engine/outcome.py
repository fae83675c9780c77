"""The outcome rule, written once: what a sync's events and a run's syncs come to.

The engine's ``run_finished`` counts, the result, the journal's run summaries, resume and the
metrics all read outcomes through here, so they can never disagree about what a run did.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from airbyte_fleet.engine.events import Event

__all__ = [
    "OK_OUTCOMES",
    "OUTCOMES",
    "Outcome",
    "RunOutcome",
    "SkipCause",
    "final_outcome",
    "run_outcome",
    "unsettled_outcome",
]

Outcome = Literal["succeeded", "failed", "cancelled", "timed_out", "skipped", "triggered", "error"]
OUTCOMES: tuple[Outcome, ...] = (
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "skipped",
    "triggered",
    "error",
)
# Outcomes that leave the run green: the sync did what was asked, or policy chose not to run it.
OK_OUTCOMES: frozenset[str] = frozenset({"succeeded", "triggered", "skipped"})

RunOutcome = Literal["succeeded", "failed", "interrupted"]

# Why a sync was skipped before any trigger of this run reached Airbyte. Resume reads the cause,
# never the error text: only ``interrupted`` means "run it when the run is carried on".
#   inactive: the plan found the connection inactive, locked or deleted;
#   already_running: a job was running and ``if_running=skip`` said leave it;
#   claimed: the trigger hook said another run owns the connection and this one should not wait;
#   interrupted: the run was stopped before this sync's turn came;
#   upstream_failed: its group comes after a group that did not succeed, and says skip. Final
#     like the rest: a resume leaves it skipped (re-run the group to run it).
SkipCause = Literal["inactive", "already_running", "claimed", "interrupted", "upstream_failed"]


def final_outcome(event: Event) -> Outcome | None:
    """The result's outcome for a final sync event; None for every other event.

    ``sync_failed`` and ``sync_skipped`` can also stand for a sync that could not be run at all
    (their ``outcome`` field says ``error``).
    """
    # Imported here: events import this module for SkipCause, and the rule needs their classes.
    from airbyte_fleet.engine.events import (
        SyncCancelled,
        SyncFailed,
        SyncSkipped,
        SyncSucceeded,
        SyncTimedOut,
    )

    if isinstance(event, SyncSucceeded):
        return "succeeded"
    if isinstance(event, SyncFailed):
        return "error" if event.outcome == "error" else "failed"
    if isinstance(event, SyncTimedOut):
        return "timed_out"
    if isinstance(event, SyncCancelled):
        return "cancelled"
    if isinstance(event, SyncSkipped):
        return "error" if event.outcome == "error" else "skipped"
    return None


def unsettled_outcome(*, has_job: bool, wait: bool) -> Outcome:
    """The outcome of a sync that had no final event when its run ended.

    Without waiting (``--no-wait``) a sync whose job exists did all it was asked; anything else
    is an error, so that no connection is ever dropped silently.
    """
    return "triggered" if not wait and has_job else "error"


def run_outcome(outcomes: Iterable[str], *, interrupted: bool, failed: bool = False) -> RunOutcome:
    """*failed*: the run was stopped by a failure of its own (its store refused an event)."""
    if failed:
        return "failed"
    if interrupted:
        return "interrupted"
    return "succeeded" if all(o in OK_OUTCOMES for o in outcomes) else "failed"
