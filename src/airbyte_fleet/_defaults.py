"""Defaults the command line's help shows, in a module that imports nothing: ``--help`` must not
load the journal (and through it the client) only to print a folder name."""

from __future__ import annotations

__all__ = ["DEFAULT_STATE_DIR"]

# Where `run`, `runs` and `serve` keep the journal (and the worker its ledger and schedule state)
# when neither --state-dir nor AIRBYTE_FLEET_STATE_DIR says otherwise: relative, so each project
# folder has its own history.
DEFAULT_STATE_DIR = ".airbyte-fleet"
