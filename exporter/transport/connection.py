"""One client connection: its state, its deadline, its parser, its queue of requests."""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Protocol, cast

import httptools

from exporter.transport.messages import (
    STATUS_LINES,
    Handler,
    Headers,
    Limits,
    Request,
    Response,
    error,
)
from exporter.transport.workers import Workers

log = logging.getLogger("exporter.transport")

MAX_PIPELINED = 16  # requests queued behind the one being answered; more get a 429


class Listener(Protocol):
    """What a connection needs of the server that accepted it: its settings, the pool that
    runs the handler, and the bookkeeping that admits, tracks (for eviction) and forgets it."""

    tls: ssl.SSLContext | None
    limits: Limits
    handler: Handler
    workers: Workers
    loop: asyncio.AbstractEventLoop
    name: str
    date: Callable[[], str]  # the Date header's value

    def admit(self, connection: Connection) -> bool: ...

    def track(self, connection: Connection) -> None: ...

    def forget(self, connection: Connection) -> None: ...


class Connection(asyncio.Protocol):
    """One client connection: its state, its timer and its parser."""

    # States; at the cap an eviction ends one of the first three (the oldest), else one
    # still reading a body (the slowest); a connection being answered is never evicted.
    HANDSHAKE, WAITING, IDLE, READING_BODY, BUSY = ("handshake", "waiting", "idle",
                                                      "reading_body", "busy")

    def __init__(self, server: Listener) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.state = self.WAITING
        self.closed = False
        # When the connection is closed unless something happens first (``inf``: never), and
        # why; the server's sweep checks every connection, cheaper than a timer per request.
        self.deadline = math.inf
        self.deadline_reason = ""
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._request: Request | None = None
        self._body = bytearray()
        self._request_started = 0.0
        self._header_bytes = 0
        self._parsed_header_bytes = 0
        self._refusal: Response | None = None
        # The answer that ends the connection (a refusal), written once every request
        # queued before it has been answered.
        self._last_word: tuple[Request, Response] | None = None
        self._queue: deque[Request] = deque()
        self._working = False
        self._write_paused = False
        self._reading_paused = False
        self._stop_parsing = False
        self._in_message = False
        self._request_headers = Headers()
        self._handshake: asyncio.Task[None] | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The event loop sets TCP_NODELAY on accepted TCP sockets: no Nagle delay on answers.
        raw = self.transport = cast(asyncio.Transport, transport)  # uvloop's: no subclass
        peer = raw.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        if not self.server.admit(self):
            return
        if self.server.tls is not None:
            raw.pause_reading()  # nothing may reach the parser before TLS is up:
            # nor later, from the raw connection: an event loop may hand its bytes back to
            # the protocol it had when a handshake fails (uvloop does), and plain HTTP on the
            # TLS port would then be answered in plain text
            raw.set_protocol(_BeforeTls())
            self._set_state(self.HANDSHAKE)
            # Kept: the loop holds only a weak reference to a task.
            self._handshake = self.server.loop.create_task(self._start_tls(raw, self.server.tls))
        else:
            self._await_request(self.server.limits.read_header_timeout)

    async def _start_tls(self, raw: asyncio.Transport, context: ssl.SSLContext) -> None:
        try:
            secured = await self.server.loop.start_tls(
                raw, self, context, server_side=True,
                ssl_handshake_timeout=self.server.limits.tls_handshake_timeout)
        except Exception as exc:
            # Plain HTTP on the TLS port, a missing client certificate, a stalled handshake.
            log.debug("TLS handshake failed", extra={"client": self.client, "err": str(exc)
                                                     or type(exc).__name__})
            raw.abort()
            self.connection_lost(None)
            return
        if self.closed or secured is None:
            if secured is not None:
                secured.abort()
            return
        self.transport = secured
        self._await_request(self.server.limits.read_header_timeout)

    def data_received(self, data: bytes) -> None:
        if self._stop_parsing or self.closed:
            return
        if self.state == self.IDLE:
            self._set_state(self.WAITING)
            self._set_deadline(self.server.limits.read_header_timeout,
                               "headers not received in time")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade or CONNECT request: answered like any other, then the connection ends.
            self._stop_parsing = True
            if self._request is not None:
                self._request.keep_alive = False
        except (httptools.HttpParserError, ValueError) as exc:
            self._stop_parsing = True
            refusal = self._refusal or error(HTTPStatus.BAD_REQUEST, "malformed HTTP request")
            log.debug("bad request", extra={"client": self.client, "err": str(exc)})
            self._refuse(refusal)
            return
        if self._request is None and (self._in_message or self.state == self.WAITING):
            self._header_bytes += len(data)  # headers still due: bounded, as httptools is not
            if self._header_bytes > self.server.limits.max_header_bytes:
                self._stop_parsing = True
                self._refuse(error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                    "request headers too large"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._working:
            self._next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._clear_deadline()
        self.server.forget(self)

    # parser callbacks (httptools)

    def on_message_begin(self) -> None:
        self._url = b""
        self._body = bytearray()
        self._request = None
        self._request_started = time.monotonic()
        self._request_headers = Headers()
        self._in_message = True
        self._parsed_header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value) + 4)
        self._request_headers.add(name.decode("latin-1"), value.decode("latin-1"))

    def _count_header_bytes(self, size: int) -> None:
        """Bound the headers as they are parsed, whole requests included: the count of the
        bytes received in :meth:`data_received` sees only headers still incomplete."""
        self._parsed_header_bytes += size
        if self._parsed_header_bytes > self.server.limits.max_header_bytes:
            self._refusal = error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                  "request headers too large")
            raise ValueError("request headers too large")

    def on_headers_complete(self) -> None:
        parser = self._parser
        url = httptools.parse_url(self._url)
        request = Request(
            method=parser.get_method().decode("ascii", "replace"),
            path=url.path.decode("latin-1"), query=(url.query or b"").decode("latin-1"),
            version=parser.get_http_version(), headers=self._request_headers,
            client=self.client, keep_alive=parser.should_keep_alive())
        self._request = request
        self._header_bytes = 0
        if not self._working:
            self._await_body()
        refusal = self.server.handler.check(request)
        if refusal is not None:
            self._refusal = refusal
            raise ValueError("refused before the body")
        if request.headers.get("Expect").lower() == "100-continue" and self.transport is not None:
            # curl asks before sending a body over 1 KiB and would otherwise wait a second.
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body += body
        if len(self._body) > self.server.handler.max_body_bytes:
            self._refusal = error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
            raise ValueError("body too large")

    def on_message_complete(self) -> None:
        request = self._request
        assert request is not None
        if len(self._queue) >= MAX_PIPELINED:
            # Answered 429 after the requests queued before it; the connection then closes.
            self._refusal = error(HTTPStatus.TOO_MANY_REQUESTS, "too many pipelined requests")
            raise ValueError("too many pipelined requests")
        request.body = bytes(self._body)
        self._request = None
        self._in_message = False
        self._body = bytearray()
        self._queue.append(request)
        if not self._working:
            self._next()
        elif self.transport is not None and not self._reading_paused:
            # Requests pile up behind a busy one: read no more until they are answered.
            self._reading_paused = True
            self.transport.pause_reading()

    # request handling

    def _next(self) -> None:
        """Start the next queued request, or wait for one; once none is left, the last word
        if there is one."""
        if self.closed or self._working:
            return
        if self._write_paused:
            self._set_deadline(self.server.limits.read_timeout, "answer not read in time")
            return
        if not self._queue:
            if self._last_word is not None:
                last, self._last_word = self._last_word, None
                self._write(*last)
            elif self._stop_parsing:
                return
            elif self._request is not None:  # pipelined behind the last answer: body still due
                self._await_body()
            elif self._in_message:  # its headers still due
                self._await_request(self.server.limits.read_header_timeout)
            else:
                self._await_request(self.server.limits.idle_timeout, idle=True)
            return
        request = self._queue.popleft()
        self._working = True
        self._set_state(self.BUSY)
        self._clear_deadline()
        self.server.workers.submit(self.server.handler.lane(request), request, self._answer)

    def _answer(self, request: Request, response: Response) -> None:
        self._working = False
        if self.closed:
            log.debug("client left before its answer", extra={"client": self.client,
                                                              "path": request.path})
            return
        self._write(request, response)
        if self._reading_paused and not self._queue and not self.closed \
                and not self._stop_parsing:
            assert self.transport is not None
            self._reading_paused = False
            self.transport.resume_reading()
        self._next()

    def _refuse(self, response: Response) -> None:
        """Answer ``response`` after the requests already queued (pipelined before the one
        refused), then close: nothing after it is parsed."""
        request = self._request or Request("GET", "", "", "1.1", Headers(), self.client)
        response.close = True
        self._last_word = (request, response)
        self._next()

    def _write(self, request: Request, response: Response) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            log.debug("client left before its answer", extra={"client": self.client})
            return
        self.server.handler.decorate(request, response)
        # Also after the last answer there will be, once parsing has stopped.
        close = response.close or not request.keep_alive or (
            self._stop_parsing and not self._queue and self._last_word is None)
        lines = [STATUS_LINES.get(response.status) or f"HTTP/1.1 {response.status} ",
                 f"Server: {self.server.name}", f"Date: {self.server.date()}",
                 f"Content-Type: {response.content_type}",
                 f"Content-Length: {len(response.body)}"]
        lines += [f"{key}: {value}" for key, value in response.headers.items()]
        if close:
            lines.append("Connection: close")
        elif request.version == "1.0":
            lines.append("Connection: keep-alive")  # HTTP/1.0 clients must be told it stays open
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        transport.write(head if request.method == "HEAD" else head + response.body)
        if close:
            self._stop_parsing = True
            self._queue.clear()
            self._clear_deadline()
            transport.close()

    # state and timers

    def _await_body(self) -> None:
        """The rest of the request is due within ``read_timeout`` of its first byte, in all,
        however it trickles."""
        self._set_state(self.READING_BODY)
        left = self.server.limits.read_timeout - (time.monotonic() - self._request_started)
        self._set_deadline(max(left, 0.0), "request not received in time")

    def _await_request(self, timeout: float, idle: bool = False) -> None:
        self._set_state(self.IDLE if idle else self.WAITING)
        self._set_deadline(timeout, "idle timeout" if idle else "headers not received in time")

    def _set_state(self, state: str) -> None:
        self.state = state
        self.server.track(self)

    def progress(self, now: float) -> float:
        """Bytes per second of the request being read, since its first byte: how an
        eviction at the cap picks, among connections reading a body, the one that is
        getting nowhere (one byte a second) before one that is merely large."""
        received = self._parsed_header_bytes + len(self._body)
        return received / max(now - self._request_started, 0.001)

    def _set_deadline(self, seconds: float, why: str) -> None:
        self.deadline = time.monotonic() + seconds
        self.deadline_reason = why

    def _clear_deadline(self) -> None:
        self.deadline = math.inf

    def expire(self) -> None:
        log.debug("connection closed", extra={"client": self.client,
                                              "reason": self.deadline_reason})
        self.abort()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.connection_lost(None)


class _BeforeTls(asyncio.Protocol):
    """The raw connection's protocol until TLS is up: nothing it receives is a request."""

    def data_received(self, data: bytes) -> None:
        pass
