"""The public ``Simulator`` object: a running simulated Airbyte plus test hooks."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from ._app import build_app
from ._clock import Clock, RealClock
from ._exchange import Exchange
from ._options import Faults, SimulatorOptions
from ._state import SimState
from ._timeline import JobScript

__all__ = ["Simulator"]

# In-flight requests (e.g. a slow POST /jobs) get this long to finish on stop().
_SHUTDOWN_GRACE_SECONDS = 1.0


class Simulator:
    """A local Airbyte public API. Use from the event loop that serves it (not thread-safe)."""

    def __init__(
        self,
        options: SimulatorOptions | None = None,
        clock: Clock | None = None,
        *,
        record_exchanges: bool = True,
    ) -> None:
        """``record_exchanges=False`` keeps no ``exchanges`` (nor ``posts_for``): a simulator
        steered from another process, which can read neither, serves 100,000 syncs without
        holding every request and answer."""
        self._state = SimState(
            options or SimulatorOptions(), clock or RealClock(), record_exchanges=record_exchanges
        )
        self._runner: web.AppRunner | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving and return the root URL (``http://host:port``, no path)."""
        if self._runner is not None:
            raise RuntimeError("simulator already started")
        runner = web.AppRunner(
            build_app(self._state),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_GRACE_SECONDS,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        self._state.root_url = f"http://{url_host}:{bound_port}"
        # down_window is measured from here.
        self._state.started_at = self._state.clock.now()
        return self._state.root_url

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        root_url = await self.start(host, port)
        try:
            yield root_url
        finally:
            await self.stop()

    # -- introspection ------------------------------------------------------------------------

    @property
    def options(self) -> SimulatorOptions:
        return self._state.options

    @property
    def clock(self) -> Clock:
        return self._state.clock

    @property
    def root_url(self) -> str:
        if not self._state.root_url:
            raise RuntimeError("simulator not started")
        return self._state.root_url

    @property
    def faults(self) -> Faults:
        """Live fault settings; assign attributes or call ``update()`` to change them."""
        return self._state.faults

    @property
    def exchanges(self) -> list[Exchange]:
        """Every recorded exchange in completion order (the live list; stays empty when built
        with ``record_exchanges=False``)."""
        return self._state.exchanges

    def count(self, method: str, route: str) -> int:
        """Exchanges (faulted ones included) for a spec route such as ``/jobs/{jobId}``."""
        return self._state.count(method, route)

    @property
    def token_requests(self) -> int:
        """Token requests answered 200."""
        return self._state.token_requests

    @property
    def workspaces(self) -> list[dict[str, Any]]:
        return self._state.world.workspace_views()

    @property
    def connections(self) -> list[dict[str, Any]]:
        return self._state.world.connection_views()

    @property
    def jobs(self) -> list[dict[str, Any]]:
        """Every job's public JSON view as of now, in creation order."""
        return self._state.job_views()

    def job(self, job_id: int) -> dict[str, Any]:
        return self._state.world.job(job_id).view(self._state.clock.now())

    def jobs_for(self, connection_id: str) -> list[dict[str, Any]]:
        """The connection's jobs as of now, in creation order (public JSON views)."""
        return self._state.jobs_for(connection_id)

    def posts_for(self, connection_id: str) -> list[Exchange]:
        """Completed ``POST /jobs`` exchanges whose JSON body names this connection, faulted
        ones included (a slow POST still in flight is not recorded yet)."""
        return self._state.posts_for(connection_id)

    def stats(self) -> dict[str, Any]:
        return copy.deepcopy(self._state.stats())

    # -- test hooks ---------------------------------------------------------------------------

    def set_connection_status(self, connection_id: str, status: str) -> dict[str, Any]:
        return self._state.world.set_connection_status(connection_id, status)

    def script(self, connection_id: str, script: JobScript) -> int:
        """Queue a script for the connection's next job; returns the queue length."""
        return self._state.script(connection_id, script)

    def start_job(self, connection_id: str, job_type: str = "sync") -> dict[str, Any]:
        """Create a job that is already running, as if triggered elsewhere (no HTTP).

        With ``max_running`` it takes a slot even when all are busy (so the cap can be exceeded
        briefly); jobs posted later queue until enough slots are free again.

        Raises ``LookupError`` for an unknown connection, ``ConnectionNotActiveError`` or
        ``JobAlreadyRunningError`` when Airbyte would refuse it.
        """
        return self._state.start_job(connection_id, job_type)

    def issue_token(self) -> str:
        return self._state.tokens.issue()

    def expire_tokens(self) -> int:
        """Invalidate every issued token; returns how many there were."""
        return self._state.tokens.expire_all()
