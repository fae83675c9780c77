"""The worker's listening sockets: at most a set number of connections open at once.

aiohttp's sites accept whatever arrives. Clients that connect and then send nothing (or a
header a byte at a time) used to hold their file descriptors until the process had none left,
and asyncio then logged a traceback for every failed ``accept()``. Here one task a socket
accepts, and each open connection holds a slot, up to a cap kept below the open-file limit. At
the cap, a new client takes the slot of the oldest one that has not yet sent a whole request
head (a client with a request under way keeps its slot); when every slot is busy with requests,
new clients wait in the kernel's backlog. aiohttp's ``keepalive_timeout``
(``AIRBYTE_FLEET_HEADER_TIMEOUT``) ends silent connections besides. Should descriptors run out
anyway (something else took them), that is logged once a minute at most, the oldest silent
connection is dropped, and accepting resumes when a descriptor is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

from airbyte_fleet._logging import get_logger

__all__ = ["Listener", "connection_cap", "listen"]

log = get_logger("airbyte_fleet.service")

# Descriptors the worker needs besides its API connections and Airbyte's pool: standard streams,
# the event loop, the journal and ledger databases (with their WAL files), files it writes.
RESERVED_FDS = 64
# The fewest API connections allowed, however low the open-file limit.
MIN_CAP = 8
# Connections waiting in the kernel to be accepted while the worker is at its cap.
BACKLOG = 1024
# After the process ran out of descriptors: how soon to try accepting again, and how often at
# most to say so in the log.
RETRY_SECONDS = 0.25
LOG_EVERY_SECONDS = 60.0
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_HEAD_END = b"\r\n\r\n"

ProtocolFactory = Callable[[], asyncio.Protocol]


def connection_cap(wanted: int, *, pool: int) -> int:
    """*wanted*, held below the soft open-file limit minus Airbyte's connection *pool* and the
    worker's own descriptors."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return min(wanted, max(MIN_CAP, soft - pool - RESERVED_FDS))


class _Connection(asyncio.Protocol):
    """An accepted connection: aiohttp's protocol, passed through. Until the head of its first
    request has arrived it is *waiting*, and may be dropped to make room."""

    def __init__(self, inner: asyncio.Protocol, listener: Listener) -> None:
        self._inner = inner
        self._listener = listener
        self._transport: asyncio.BaseTransport | None = None
        self._tail = b""  # the end of what came so far, to find the head's end across reads
        self._ended = False
        self.waiting = True

    def drop(self) -> None:
        if isinstance(self._transport, asyncio.Transport):
            self._transport.abort()

    def end(self) -> None:
        if not self._ended:
            self._ended = True
            self._listener.ended(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.waiting:
            seen = self._tail + data
            if _HEAD_END in seen:
                self.waiting = False
                self._listener.heard(self)
            else:
                self._tail = seen[-len(_HEAD_END) + 1 :]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._inner.connection_lost(exc)
        finally:
            self.end()


class Listener:
    """Accepts connections on its sockets for *factory*, *cap* at most open at once."""

    def __init__(self, sockets: list[socket.socket], factory: ProtocolFactory, cap: int) -> None:
        self.sockets = sockets
        self.cap = cap
        self._factory = factory
        self._slots = asyncio.Semaphore(cap)
        self._open: set[_Connection] = set()
        # Connections that have not sent a request head yet, oldest first (dicts keep order).
        self._waiting: dict[_Connection, None] = {}
        self._logged_at: float | None = None
        self._tasks = [
            asyncio.create_task(self._accept(sock), name=f"accept {sock.getsockname()}")
            for sock in sockets
        ]

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self.sockets]

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def close(self) -> None:
        """Stop accepting and close the sockets; open connections are left to aiohttp."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sock in self.sockets:
            sock.close()

    def heard(self, connection: _Connection) -> None:
        self._waiting.pop(connection, None)

    def ended(self, connection: _Connection) -> None:
        self._waiting.pop(connection, None)
        self._open.discard(connection)
        self._slots.release()

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._out_of_fds(exc)
                    self._drop_oldest_waiting()
                    await asyncio.sleep(RETRY_SECONDS)
                # Anything else is about that one connection (aborted before it was accepted).
                continue
            if self._slots.locked():
                # At the cap, a client that has not said what it wants yields to one that may:
                # otherwise a crowd of silent clients keeps out every probe until they time out.
                self._drop_oldest_waiting()
            await self._slots.acquire()
            await self._serve(conn)

    def _drop_oldest_waiting(self) -> None:
        oldest = next(iter(self._waiting), None)
        if oldest is not None:
            del self._waiting[oldest]
            oldest.drop()

    async def _serve(self, conn: socket.socket) -> None:
        """Hand *conn* to aiohttp; its slot is freed when the connection is lost."""
        connection = _Connection(self._factory(), self)
        self._open.add(connection)
        self._waiting[connection] = None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: connection, conn)
        except OSError:
            conn.close()
            connection.end()

    def _out_of_fds(self, exc: OSError) -> None:
        now = time.monotonic()
        if self._logged_at is not None and now - self._logged_at < LOG_EVERY_SECONDS:
            return
        self._logged_at = now
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        log.error(
            "out_of_file_descriptors",
            error=exc.strerror,
            open_connections=self.open_connections,
            limit=soft,
            note="not accepting connections until a descriptor is free; raise the open-file "
            "limit (ulimit -n) or lower AIRBYTE_FLEET_MAX_CLIENTS",
        )


async def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address *host* names ('' or None: all interfaces)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    try:
        # getaddrinfo lists an address once per protocol; one socket each is enough.
        for family, address in dict.fromkeys((info[0], info[4]) for info in infos):
            sock = socket.create_server(address, family=family, backlog=BACKLOG)
            sock.setblocking(False)
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def listen(factory: ProtocolFactory, host: str, port: int, *, cap: int) -> Listener:
    """Listen on *host*:*port* for *factory*'s protocol until :meth:`Listener.close`.

    Raises :class:`OSError` when the address cannot be bound."""
    return Listener(await _bind(host, port), factory, cap)
