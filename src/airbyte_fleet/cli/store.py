"""The run store from the command line: which one (the SQLite journal in the state directory, or
PostgreSQL), opened and read with sentences a user can act on, and the lease a ``run`` holds on
its run while it runs it.

Every message names the store as the user gave it: the state directory, or the database's URL
without its password.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import anyio

from airbyte_fleet._defaults import DEFAULT_STATE_DIR
from airbyte_fleet._logging import get_logger
from airbyte_fleet.config import StoreSettings
from airbyte_fleet.coordination import (
    CoordinationError,
    Coordinator,
    Lease,
    LeaseHeldError,
    LeaseKeeper,
    open_coordinator,
)
from airbyte_fleet.errors import ConfigError
from airbyte_fleet.journal import (
    JournalDamagedError,
    JournalError,
    NoJournalError,
    RunStore,
    open_store,
    store_location,
)
from airbyte_fleet.resolve import store_settings
from airbyte_fleet.runner import RunSession
from airbyte_fleet.settings_file import FileConfig

__all__ = ["RunHold", "StorePlace", "holding"]

log = get_logger("airbyte_fleet.cli")

# How often a resume asks again for a lease another process holds: often enough to start soon
# after a dead holder's lease runs out, rarely enough not to load the database.
_POLL_SHORTEST = 0.05
_POLL_LONGEST = 1.0


class StorePlace:
    """Where the command keeps runs, from the flags, the environment and the config file."""

    def __init__(
        self,
        args: argparse.Namespace,
        file: FileConfig,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.settings: StoreSettings = store_settings(
            file,
            env,
            database_url=getattr(args, "database_url", None),
            lease=getattr(args, "lease", None),
        )
        self.state_dir = Path(
            args.state_dir or env.get("AIRBYTE_FLEET_STATE_DIR") or DEFAULT_STATE_DIR
        )

    @property
    def url(self) -> str | None:
        return self.settings.url

    @property
    def on_postgres(self) -> bool:
        return self.url is not None

    @property
    def shown(self) -> str:
        """The store in a message: the state directory, or the URL without its password."""
        if self.url is None:
            return str(self.state_dir)
        return store_location(self.url, self.state_dir)

    # ----------------------------------------------------------------- opening

    def open(self, *, create: bool = True, wanted: str | None = None) -> RunStore:
        """The store. *create* False (reading): never create one; with *wanted*, no store means
        no such run, else :class:`NoJournalError` for the caller."""
        try:
            return open_store(database_url=self.url, state_dir=self.state_dir, create=create)
        except NoJournalError:
            if wanted is None:
                raise
            raise ConfigError(f"There is no run '{wanted}': no runs yet in {self.shown}.") from None
        except JournalDamagedError as exc:
            raise ConfigError(str(exc)) from None
        except (OSError, sqlite3.Error) as exc:
            raise self.cannot_use(exc) from None

    def cannot_use(self, exc: BaseException) -> ConfigError:
        if not self.on_postgres:
            return ConfigError(
                f"Cannot use the state directory '{self.state_dir}' ({exc}); pass --state-dir "
                "with a writable folder."
            )
        return ConfigError(
            f"Cannot use the database {self.shown} ({exc}); check that it is up and that "
            "--database-url (or AIRBYTE_FLEET_DATABASE_URL) names it."
        )

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """A store that cannot be read is one sentence and exit 2, never a traceback."""
        try:
            yield
        except JournalDamagedError as exc:
            raise ConfigError(str(exc)) from None
        except JournalError as exc:
            if self.on_postgres:
                raise ConfigError(
                    f"Cannot read the runs in {self.shown} ({exc}); try again once the database "
                    "answers."
                ) from None
            raise ConfigError(
                f"Cannot read the journal in '{self.state_dir}' ({exc}); try again, or pass "
                "--state-dir with another folder."
            ) from None

    def coordinator(self) -> Coordinator:
        try:
            return open_coordinator(
                database_url=self.url,
                state_dir=self.state_dir,
                lease_seconds=self.settings.lease,
            )
        except (CoordinationError, OSError, sqlite3.Error) as exc:
            raise self.cannot_use(exc) from None


# ----------------------------------------------------------------------------- the lease


class RunHold:
    """This process's lease on one run, for as long as the command runs it: renewed in the
    background; lost (the process was cut off for longer than the lease, and another may have
    taken the run) lets the session go at once, as a crash would."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.lost = False
        self._session: RunSession | None = None

    def attach(self, session: RunSession) -> None:
        """Let *session* go when the lease is lost from now on (the caller checks :attr:`lost`
        before running it)."""
        self._session = session

    def on_lost(self, run_id: str) -> None:
        # The keeper has logged it; the command's last line says it to the user.
        self.lost = True
        if self._session is not None:
            self._session.let_go()

    def on_cancel(self, run_id: str) -> None:
        log.warning("cancel_requested", run_id=run_id)
        if self._session is not None:
            self._session.interrupt()

    @property
    def lost_sentence(self) -> str:
        return (
            f"Run {self.run_id} could not keep its lease (the store did not answer in time, or "
            "another process took the run over), so this process stopped without touching the "
            f"run's jobs; 'airbyte-fleet run --resume {self.run_id}' carries it on once the "
            "store answers, unless another process already does."
        )


@contextlib.asynccontextmanager
async def holding(
    place: StorePlace, store: RunStore, run_id: str, *, wait: bool
) -> AsyncIterator[RunHold]:
    """Hold *run_id*'s lease while the block runs, with *store* fenced by it (a write after the
    lease passed to another process is refused). *wait*: a lease another process holds may be
    a dead process's, so wait up to two lease times for it to run out; then, or without *wait*,
    exit 2 with one sentence."""
    coordinator = place.coordinator()
    try:
        await _acquire(place, coordinator, run_id, wait=wait)
        hold = RunHold(run_id)
        store.fence(run_id, coordinator.owner)
        failure: Exception | None = None
        async with LeaseKeeper(
            coordinator, on_lost=hold.on_lost, on_cancel=hold.on_cancel
        ) as keeper:
            keeper.add(run_id)
            try:
                yield hold
            except Exception as exc:
                # Raised past the keeper's task group, which would wrap it in an exception group
                # that no caller (nor exit_code_for) recognises.
                failure = exc
            finally:
                keeper.remove(run_id)
                if not hold.lost:
                    await _hand_back(place, store, coordinator, run_id)
        if failure is not None:
            raise failure
    finally:
        coordinator.close()


async def _acquire(
    place: StorePlace, coordinator: Coordinator, run_id: str, *, wait: bool
) -> Lease:
    lease_seconds = place.settings.lease
    patience = 2 * lease_seconds if wait else 0.0
    poll = min(max(lease_seconds / 10, _POLL_SHORTEST), _POLL_LONGEST)
    deadline = anyio.current_time() + patience
    said = False
    while True:
        try:
            return await anyio.to_thread.run_sync(coordinator.acquire, run_id)
        except CoordinationError as exc:
            raise place.cannot_use(exc) from None
        except LeaseHeldError as exc:
            holder = exc.holder
            left = deadline - anyio.current_time()
            if left <= 0:
                raise ConfigError(
                    f"Run {run_id} is being run by {holder.owner}; stop that process or wait "
                    "for it to end."
                ) from None
            if not said:
                until = holder.until.isoformat(timespec="seconds")
                log.info(
                    "waiting_for_lease",
                    run_id=run_id,
                    owner=holder.owner,
                    until=until,
                    message=f"waiting for run {run_id}'s lease, held by {holder.owner} until "
                    f"{until}",
                )
                said = True
            await anyio.sleep(min(poll, left))


async def _hand_back(
    place: StorePlace, store: RunStore, coordinator: Coordinator, run_id: str
) -> None:
    """Let go of the lease so that a resume elsewhere starts at once, after every batched event
    is written: once the lease is gone, the fence would refuse them."""
    try:
        await anyio.to_thread.run_sync(store.flush)
    except (OSError, sqlite3.Error) as exc:
        # The run's end is already durable or its failure already said; the lease then simply
        # runs out, and a resume reads Airbyte for what was not written.
        log.warning("store_flush_failed", run_id=run_id, error=str(exc))
    try:
        await anyio.to_thread.run_sync(coordinator.release, [run_id])
    except CoordinationError as exc:
        log.warning(
            "lease_not_released",
            run_id=run_id,
            error=exc.message,
            message=f"the lease on run {run_id} runs out by itself within "
            f"{place.settings.lease:g} s",
        )
