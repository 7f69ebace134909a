"""How the WA API client's requests reach the webapp: requests' own adapter, retrying through
urllib3 what the webapp cannot have taken, and a deadline on the whole of each try.

Connection errors (refused, reset, a connect timeout) and 5xx answers are tried again, up to
``wa_api.retry_attempts`` tries, after ``wa_api.retry_backoff``, then twice that, and so on.
A timeout is not, nor a TLS error, nor any other answer, so a GC request the webapp may
already have taken is never sent twice. Each try must be answered in full within its
deadline (``connect_timeout + read_timeout``): requests bounds each read, so a webapp that
sends a byte now and then would otherwise hold the call, and the GC run waiting on it, for
ever.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import ConnectionPool, HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ProtocolError, ReadTimeoutError
from urllib3.response import BaseHTTPResponse
from urllib3.util.retry import Retry

from exporter import __version__

log = logging.getLogger("exporter.sources.wa_api")  # the client's lines, written here


def session(attempts: int, backoff: float) -> requests.Session:
    """A session to the webapp: every request tried up to ``attempts`` times, as above; call
    it within :func:`deadline`."""
    http = requests.Session()
    for scheme in ("http://", "https://"):
        http.mount(scheme, _DeadlineAdapter(max_retries=_Retries(
            total=attempts - 1,
            backoff_factor=backoff,
            # Connection errors count whatever the method; these answers, for every method
            # the client sends (the GC calls are PUT, the login POST).
            status_forcelist=range(500, 1000),
            allowed_methods=frozenset({"GET", "POST", "PUT"}),
            respect_retry_after_header=False,
            other=0,  # a TLS error: trying again will not make the certificate verifiable
            raise_on_status=False)))  # the last 5xx answer is returned, with its WA error
    # Only our settings count: no proxies, CA bundles or .netrc credentials from the env.
    http.trust_env = False
    http.headers["User-Agent"] = f"wa-exporter/{__version__}"
    return http


class _Retries(Retry):
    """urllib3's retries, and ours in three ways: a read timeout is never retried (urllib3
    counts it with a reset connection), nor a try the deadline cut; the first retry already
    waits ``backoff_factor`` (urllib3's waits nothing); each retry is logged."""

    def increment(self, method: str | None = None, url: str | None = None,
                  response: BaseHTTPResponse | None = None, error: Exception | None = None,
                  _pool: ConnectionPool | None = None,
                  _stacktrace: TracebackType | None = None) -> Self:
        if isinstance(error, ReadTimeoutError):
            raise error.with_traceback(_stacktrace)
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def get_backoff_time(self) -> float:
        return self.backoff_factor * 2.0 ** (len(self.history) - 1) if self.history else 0.0

    def sleep(self, response: BaseHTTPResponse | None = None) -> None:
        """Between two tries; the deadline stops while it waits, and starts again after."""
        deadline: _Deadline | None = getattr(_THIS_THREAD, "deadline", None)
        if deadline is not None and not deadline.pause():
            raise ProtocolError("the answer did not arrive in full within the deadline")
        failed, delay = self.history[-1], self.get_backoff_time()
        log.warning("WA API call failed, retrying", extra={
            "path": failed.url, "attempt": len(self.history),
            "kind": "connect" if failed.error else "http",
            "err": reason(failed.error) if failed.error else f"HTTP {failed.status}",
            "retry_in_seconds": delay})
        time.sleep(delay)
        if deadline is not None:
            deadline.start()


# --- a deadline for the whole of each try -------------------------------------------------

class _Deadline:
    """Each try of one request ends ``seconds`` after it starts: the socket it is read from
    is shut down, which ends the read in progress. ``expired`` tells whether that happened."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = threading.Event()
        self.connection: HTTPConnection | None = None  # the try's, once it sends
        self._timer: threading.Timer | None = None

    def start(self) -> None:
        self.connection = None
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def pause(self) -> bool:
        """Stop the clock; False if it had already run out."""
        if self._timer is not None:
            self._timer.cancel()
        return not self.expired.is_set()

    def _expire(self) -> None:
        self.expired.set()
        sock = getattr(self.connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                # socket's own shutdown, also for TLS: SSLSocket's would close the TLS state
                # under the thread still reading it.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


_THIS_THREAD = threading.local()  # .deadline: the request this thread is making


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[threading.Event]:
    """Within the block, each try of this thread's request ends at ``seconds``; the event
    tells whether one did."""
    watch = _Deadline(seconds)
    _THIS_THREAD.deadline = watch
    watch.start()
    try:
        yield watch.expired
    finally:
        watch.pause()
        _THIS_THREAD.deadline = None


class _Noted:
    """A urllib3 connection that tells this thread's deadline which connection a try uses."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        watch: _Deadline | None = getattr(_THIS_THREAD, "deadline", None)
        if watch is not None:
            watch.connection = self  # type: ignore[assignment]
        super().request(*args, **kwargs)  # type: ignore[misc]


class _NotedConnection(_Noted, HTTPConnection):
    pass


class _NotedTlsConnection(_Noted, HTTPSConnection):
    pass


class _NotedPool(HTTPConnectionPool):
    ConnectionCls = _NotedConnection


class _NotedTlsPool(HTTPSConnectionPool):
    ConnectionCls = _NotedTlsConnection


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, with the connections above."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _NotedPool, "https": _NotedTlsPool}


def reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, without object addresses."""
    inner: BaseException = exc
    while True:
        nested = getattr(inner, "reason", None)
        if not isinstance(nested, BaseException) and inner.args and isinstance(
                inner.args[0], BaseException):
            nested = inner.args[0]
        if not isinstance(nested, BaseException) or nested is inner:
            break
        inner = nested
    text = re.sub(r"<[^<>]* object at 0x[0-9a-f]+>:?\s*", "", str(inner))
    return " ".join(text.split())[:200] or type(inner).__name__
