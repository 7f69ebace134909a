"""Worker threads for work done off the caller's thread: ``ThreadPoolExecutor`` on daemon
threads.

A collector leaves behind work that outlives its timeout (a hung Docker engine, a dead
network mount), and a request handler may wait on a database. ``ThreadPoolExecutor`` joins
its threads when the process exits, so such work would hold up a SIGTERM for as long as it
hangs; daemon threads are left behind with it.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)
# (its future, or None for a call made with ``execute``; the function; its arguments)
_Call = tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...]]


class DaemonExecutor(Executor):
    """``workers`` daemon threads, started on the first ``submit`` and kept until
    ``shutdown``, that run the submitted calls in order."""

    def __init__(self, workers: int, name: str) -> None:
        self.workers = workers
        self.name = name
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shut_down = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._put((future, functools.partial(fn, **kwargs) if kwargs else fn, args))
        return future

    def execute(self, fn: Callable[..., Any], /, *args: Any) -> None:
        """Run ``fn(*args)`` with no future to report to: for a caller that handles its own
        errors and answers (the HTTP workers, a request at a time), without the cost of a
        ``Future`` and its ``Condition`` per call. What ``fn`` raises is logged."""
        self._put((None, fn, args))

    def _put(self, call: _Call) -> None:
        with self._lock:
            if self._shut_down:
                raise RuntimeError(f"{self.name}: cannot submit after shutdown")
            if not self._threads:
                for number in range(self.workers):
                    name = self.name if self.workers == 1 else f"{self.name}-{number}"
                    self._threads.append(threading.Thread(target=self._work, name=name,
                                                          daemon=True))
                    self._threads[-1].start()
            self._calls.put(call)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut_down = True
            threads = list(self._threads)
        while cancel_futures:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                break
            if call is not None and call[0] is not None:
                call[0].cancel()
        for _ in threads:
            self._calls.put(None)  # each thread ends when it takes one, after the calls before
        if wait:
            for thread in threads:
                thread.join()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args = call
            if future is None:
                try:
                    fn(*args)
                except Exception:
                    log.exception("unexpected error in a worker thread",
                                  extra={"pool": self.name})
                continue
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while it waited
            try:
                result = fn(*args)
            except BaseException as exc:  # the caller's, through the future
                future.set_exception(exc)
            else:
                future.set_result(result)
