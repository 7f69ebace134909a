"""The threads that run request handlers off the event loop, one small pool per lane.

The handler puts each request in a lane (the exporter: scrapes and pages in one, webhooks
in another), so work that waits — a webhook decision on a slow database — never holds up
a scrape. A lane may bound what one client address holds in it (the exporter: bcrypt
checks), so that a client sending guesses as fast as it can queues behind itself only. The
answers come back to the event loop in batches: a worker wakes the loop only when no earlier
answer is still waiting for it, so under load one wake-up carries many.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from http import HTTPStatus

from exporter.transport.messages import Request, Response, error
from exporter.workers import DaemonExecutor

log = logging.getLogger("exporter.transport")

Deliver = Callable[[Request, Response], None]


class Workers:
    """``size`` threads per lane, started on a lane's first request, running ``handle``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, handle: Callable[[Request], Response],
                 size: int, per_client: Mapping[str, int] | None = None) -> None:
        self.loop = loop
        self.handle = handle
        self.size = size
        self.per_client = dict(per_client or {})
        # (lane, client address) -> its requests in that lane, for the lanes bounded per
        # client; changed on the event loop thread only (at submit and at delivery).
        self._held: dict[tuple[str, str], int] = {}
        self._lanes: dict[str, DaemonExecutor] = {}
        self._answers: deque[tuple[Request, Response, Deliver]] = deque()
        self._answers_lock = threading.Lock()
        self._wake_pending = False

    def submit(self, lane: str, request: Request, deliver: Deliver) -> None:
        """Run the handler for ``request`` in ``lane``; ``deliver`` gets the answer on the
        event loop (event loop thread only)."""
        bound = self.per_client.get(lane)
        if bound is not None:
            key = (lane, request.client)
            held = self._held.get(key, 0)
            if held >= bound:
                busy = error(HTTPStatus.TOO_MANY_REQUESTS, "too many requests of yours waiting")
                busy.headers["Retry-After"] = "1"
                self.loop.call_soon(deliver, request, busy)
                return
            self._held[key] = held + 1
            deliver = functools.partial(self._leave, key, deliver)
        pool = self._lanes.get(lane)
        if pool is None:
            pool = self._lanes[lane] = DaemonExecutor(self.size, f"http-{lane}")
        pool.execute(self._run, request, deliver)

    def _leave(self, key: tuple[str, str], deliver: Deliver, request: Request,
               response: Response) -> None:
        held = self._held.pop(key) - 1
        if held:
            self._held[key] = held
        deliver(request, response)

    def stop(self) -> None:
        for pool in self._lanes.values():
            pool.shutdown(wait=False, cancel_futures=True)

    def _run(self, request: Request, deliver: Deliver) -> None:
        try:
            response = self.handle(request)
        except Exception:
            log.exception("internal error serving request", extra={"path": request.path})
            response = Response(HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n",
                                close=True)
        with self._answers_lock:
            self._answers.append((request, response, deliver))
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the server stopped
                self.loop.call_soon_threadsafe(self._deliver_answers)

    def _deliver_answers(self) -> None:
        with self._answers_lock:
            answers = list(self._answers)
            self._answers.clear()
            self._wake_pending = False
        for request, response, deliver in answers:
            deliver(request, response)
