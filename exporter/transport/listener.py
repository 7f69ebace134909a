"""The listening socket, the event loop thread, the connections and the worker pool."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from email.utils import formatdate

from exporter.transport.connection import Connection
from exporter.transport.messages import Handler, Limits
from exporter.transport.workers import Workers

log = logging.getLogger("exporter.transport")

SWEEP_SECONDS = 0.1  # how often deadlines are checked: the slack on every timeout


class _Date:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._text = ""

    def __call__(self) -> str:
        now = int(time.time())
        if now != self._second:
            self._second, self._text = now, formatdate(now, usegmt=True)
        return self._text


class HttpServer:
    """The listening socket, the event loop thread, the connections and the worker pool."""

    def __init__(self, sock: socket.socket, handler: Handler, tls: ssl.SSLContext | None,
                 limits: Limits, name: str) -> None:
        self.sock = sock
        self.handler = handler
        self.tls = tls
        self.limits = limits
        self.name = name
        self.cap = limits.connection_cap()
        self.date: Callable[[], str] = _Date()
        self.loop = asyncio.new_event_loop()
        self.workers = Workers(self.loop, handler.handle, limits.workers, handler.per_client)
        self._connections: dict[Connection, None] = {}
        # At the cap, a new connection evicts the oldest of these (in their handshake,
        # sending headers, idle), else the slowest of those still sending a body.
        self._evictable: OrderedDict[Connection, None] = OrderedDict()
        self._reading_body: dict[Connection, None] = {}
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    # connection bookkeeping (event loop thread only)

    def admit(self, connection: Connection) -> bool:
        """Track a new connection; at the cap, make room by evicting, or refuse it."""
        if len(self._connections) >= self.cap:
            victim = next(iter(self._evictable), None) or self._slowest_body()
            if victim is None:
                log.debug("connection refused: every connection is being answered",
                          extra={"client": connection.client, "cap": self.cap})
                connection.abort()
                return False
            log.debug("connection evicted to admit a new one",
                      extra={"client": victim.client, "state": victim.state, "cap": self.cap})
            victim.abort()
        self._connections[connection] = None
        return True

    def _slowest_body(self) -> Connection | None:
        """The connection reading a body that has made the least progress: a client that
        drips its body holds its slot only until someone needs it."""
        now = time.monotonic()
        return min(self._reading_body, key=lambda c: c.progress(now), default=None)

    def forget(self, connection: Connection) -> None:
        self._connections.pop(connection, None)
        self._evictable.pop(connection, None)
        self._reading_body.pop(connection, None)

    def track(self, connection: Connection) -> None:
        """File the connection under what an eviction may do to it, after a change of state."""
        if connection.closed:
            return
        self._evictable.pop(connection, None)
        self._reading_body.pop(connection, None)
        if connection.state == Connection.READING_BODY:
            self._reading_body[connection] = None
        elif connection.state != Connection.BUSY:
            self._evictable[connection] = None  # newest last: eviction takes the oldest

    @property
    def connections(self) -> int:
        return len(self._connections)

    # life cycle

    def start(self) -> None:
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="http",
                                        daemon=True)
        self._thread.start()
        ready.result()

    def _run(self, ready: Future[None]) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(self._loop_error)
        try:
            self._server = self.loop.run_until_complete(self.loop.create_server(
                lambda: Connection(self), sock=self.sock, backlog=1024))
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        self.loop.call_soon(self._sweep)
        self.loop.run_forever()
        self.loop.close()

    def _sweep(self) -> None:
        """Close every connection past its deadline; again in SWEEP_SECONDS."""
        now = time.monotonic()
        for connection in [c for c in self._connections if c.deadline <= now]:
            connection.expire()
        self.loop.call_later(SWEEP_SECONDS, self._sweep)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        # asyncio reports failed accepts (EMFILE) and transport errors here; one line each.
        log.warning("http server event", extra={"err": str(context.get("exception") or
                                                            context.get("message"))})

    def stop(self) -> None:
        if self._thread is None:
            self.sock.close()
            return
        done: Future[None] = Future()

        def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for connection in list(self._connections):
                connection.abort()
            self.loop.call_soon(self.loop.stop)
            done.set_result(None)

        self.loop.call_soon_threadsafe(shutdown)
        done.result(10)
        self._thread.join(10)
        self.workers.stop()
