"""Stand-in for the REST API of the WhatsApp Business API on-premises client (the webapp).

Implements login, health, message GC (deleting ``status = 'read'`` rows from a real ``messages``
table and POSTing the completion callback) and media GC, plus runtime-switchable fault modes
under ``/_standin/``. See README.md next to this file.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import datetime as dt
import hashlib
import json
import os
import secrets
import socket
import ssl
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from .client_stats import CLIENT_ADMIN_ACTIONS, CLIENT_ROUTES, ClientStatsEndpoints
from .schema import create_messages_table, messages

API_VERSION = "2.53.2"
DEFAULT_TOKEN_TTL = 7 * 86400.0
MEDIA_MAX_AGE = 30 * 86400.0
GC_BATCH_SIZE = 10_000

ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v1/users/login"): "login",
    ("GET", "/v1/health"): "health",
    ("PUT", "/v1/services/message/gc"): "message_gc",
    ("PUT", "/v1/services/media/gc"): "media_gc",
    **CLIENT_ROUTES,
}
ENDPOINT_PATHS: dict[str, str] = {key: path for (_, path), key in ROUTES.items()}
ADMIN_PREFIX = "/_standin/"
ADMIN_ACTIONS = frozenset({
    "expire_tokens", "fail_next", "slow", "hang", "trickle", "gc_fail", "gc_fail_rounds",
    "gc_no_callback", "gc_fail_nodes", "gc_report_deleted", "gc_delay", "gc_max_rows_per_round",
    "gc_batch_pause",
    "media_gc_delay", "media_gc_fail", "media_gc_no_callback", "set_callback",
    "clear_faults", "reset_stats", "reset", "wait_gc_idle",
}) | CLIENT_ADMIN_ACTIONS
ADMIN_GETTERS = frozenset({"stats", "faults", "callbacks"})
GC_ROUND_STATUSES = ("failed", "complete")  # how a round with errors calls back

Json = dict[str, Any]


def node_id(name: str) -> str:
    """``name:<12 hex>``, the shape of a multiconnect node id (hostname:container id); stable."""
    return f"{name}:{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def format_expiry(when: dt.datetime) -> str:
    """``2026-12-03 14:00:00+00:00``, the format of ``expires_after``."""
    return str(when.astimezone(dt.UTC).replace(microsecond=0))


def endpoint_key(name: str) -> str:
    """Accept an endpoint key (``message_gc``), its path (``/v1/services/message/gc``) or ``*``."""
    if name == "*" or name in ENDPOINT_PATHS:
        return name
    for key, path in ENDPOINT_PATHS.items():
        if name == path:
            return key
    raise ValueError(f"unknown endpoint {name!r}; use one of {[*ENDPOINT_PATHS, '*']}")


def _zero_stats() -> Json:
    return {
        "logins": 0, "login_failures": 0, "unauthorized": 0,
        "message_gc_calls": 0, "gc_rounds_completed": 0, "gc_rounds_failed": 0,
        "rows_deleted": 0, "delete_batches": 0, "callbacks_sent": 0, "callback_errors": 0,
        "media_gc_calls": 0, "media_gc_rejected": 0, "media_files_deleted": 0,
        "faults_injected": 0, "requests": {},
    }


@dataclass
class _Failure:
    remaining: int
    status: int
    code: int
    title: str
    details: str


@dataclass
class _ErrorRounds:
    """The next ``remaining`` message-GC calls report ``details`` as an error: ``failed``
    (nothing deleted) or ``complete`` (rows deleted, errors in the callback all the same)."""

    remaining: int
    status: str
    details: str


@dataclass(frozen=True)
class _GcJob:
    """What one message-GC call does, fixed when the call is answered."""

    delay: float
    max_rows: int | None
    batch_pause: float
    fail: str | None  # error details of a failed round (deletes nothing)
    partial: str | None  # error details of a round that deletes but reports errors
    no_callback: bool
    failing_nodes: frozenset[str]  # multiconnect: these nodes call back failed, the rest complete
    failing_details: str
    report_deleted: Any  # what the callbacks say was deleted instead of the true count
    url: str | None
    headers: dict[str, str]


@dataclass(frozen=True)
class _MediaJob:
    """What one media-GC call does, fixed when the call is answered."""

    delay: float
    fail: str | None  # error details: deletes nothing and calls back failed
    no_callback: bool
    url: str | None
    headers: dict[str, str]


@dataclass
class _Faults:
    gc_delay: float
    gc_max_rows_per_round: int | None
    gc_batch_pause: float
    media_gc_delay: float
    fail_next: dict[str, _Failure] = field(default_factory=dict)
    slow: dict[str, float] = field(default_factory=dict)
    hang: set[str] = field(default_factory=set)
    trickle: dict[str, float] = field(default_factory=dict)  # endpoint -> seconds a byte
    gc_fail: str | None = None  # error details while the mode is on
    gc_no_callback: bool = False
    gc_error_rounds: _ErrorRounds | None = None
    gc_failing_nodes: frozenset[str] = frozenset()
    gc_failing_details: str = ""
    gc_report_deleted: Any = None
    media_gc_fail: str | None = None
    media_gc_no_callback: bool = False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections must not pin threads forever
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)
        if isinstance(self.connection, ssl.SSLSocket):
            # The listening socket does not handshake on accept: a stalled client would block
            # every other accept. Handshake here, in the connection's own thread.
            try:
                self.connection.do_handshake()
            except OSError:
                self.server.track(self.connection, add=False)
                raise

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    def _dispatch(self) -> None:
        self.server.standin._handle(self)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def reply(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.standin.log_requests:
            super().log_message(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stop() must not wait for hung handlers
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], standin: StandIn) -> None:
        self.standin = standin
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def drop_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.standin.log_requests:
            super().handle_error(request, client_address)


class StandIn(ClientStatsEndpoints):
    """The stand-in server, run in a background thread: ``with StandIn(url) as wa: wa.url``."""

    def __init__(
        self,
        db_url: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Mapping[str, str] | None = None,
        token_ttl: float = DEFAULT_TOKEN_TTL,
        multiconnect: Sequence[str] | None = None,
        callback_url: str | None = None,
        callback_headers: Mapping[str, str] | None = None,
        media_dir: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        api_version: str = API_VERSION,
        gc_delay: float = 0.0,
        gc_max_rows_per_round: int | None = None,
        gc_batch_size: int = GC_BATCH_SIZE,
        gc_batch_pause: float = 0.0,
        media_gc_delay: float = 0.0,
        media_max_age: float = MEDIA_MAX_AGE,
        create_schema: bool = False,
        log_requests: bool = False,
    ) -> None:
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        self.db_url = db_url
        self.host, self.port = host, port
        self.users = dict(users if users is not None else {"admin": "secret"})
        self.token_ttl = token_ttl
        self.node_ids = [node_id(n) for n in multiconnect or ()]
        self.callback_url = callback_url
        self.callback_headers = dict(callback_headers or {})
        self.media_dir = Path(media_dir) if media_dir is not None else None
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.api_version = api_version
        self.gc_batch_size = gc_batch_size
        self.media_max_age = media_max_age
        self.create_schema = create_schema
        self.log_requests = log_requests
        self._defaults = (gc_delay, gc_max_rows_per_round, gc_batch_pause, media_gc_delay)

        self._cond = threading.Condition()  # guards all mutable state below
        self._faults = self._fresh_faults()
        self._stats = _zero_stats()
        self._tokens: dict[str, dt.datetime] = {}
        self._callback_log: list[Json] = []
        self._gc_running = 0
        self._media_running = False
        self._hanging = 0
        self._workers: list[threading.Thread] = []
        self._gc_serial = threading.Lock()  # one message-GC round touches the table at a time
        self._stopping = threading.Event()
        self._engine: sa.Engine | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("StandIn is not started")
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def start(self) -> StandIn:
        if self.db_url:
            connect_args = {"check_same_thread": False} if self.db_url.startswith("sqlite") else {}
            self._engine = sa.create_engine(self.db_url, pool_pre_ping=True,
                                            connect_args=connect_args)
            if self.create_schema:
                create_messages_table(self._engine)
        self._stopping.clear()
        server = _Server((self.host, self.port), self)
        if self.tls_cert and self.tls_key:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
            server.socket = ctx.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="wa-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; hung and slow requests are dropped, GC workers are interrupted."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        server.shutdown()
        server.drop_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for worker in self._workers:
            worker.join(timeout=5)
        self._workers.clear()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault modes and introspection (also POST /_standin/<name> with kwargs as JSON) --------

    def expire_tokens(self) -> None:
        with self._cond:
            self._tokens.clear()

    def fail_next(self, endpoint: str, count: int = 1, status: int = 500, code: int = 1014,
                  title: str = "Internal error", details: str = "Injected failure") -> None:
        """The next ``count`` calls of ``endpoint`` answer ``status`` with a WA error body."""
        key = endpoint_key(endpoint)
        with self._cond:
            if count <= 0:
                self._faults.fail_next.pop(key, None)
            else:
                self._faults.fail_next[key] = _Failure(int(count), int(status), int(code), title,
                                                       details)

    def slow(self, endpoint: str, seconds: float) -> None:
        """Delay answers of ``endpoint`` by ``seconds`` (0 clears)."""
        key = endpoint_key(endpoint)
        with self._cond:
            if seconds > 0:
                self._faults.slow[key] = float(seconds)
            else:
                self._faults.slow.pop(key, None)

    def hang(self, endpoint: str, on: bool = True) -> None:
        """Accept calls of ``endpoint`` but never answer; clearing drops the hung connections."""
        key = endpoint_key(endpoint)
        with self._cond:
            (self._faults.hang.add if on else self._faults.hang.discard)(key)
            self._cond.notify_all()

    def trickle(self, endpoint: str, every: float = 2.0) -> None:
        """Answer ``endpoint`` with its headers at once, then its body one byte every
        ``every`` seconds (0 clears): each read is quick, the whole answer never comes."""
        key = endpoint_key(endpoint)
        with self._cond:
            if every > 0:
                self._faults.trickle[key] = float(every)
            else:
                self._faults.trickle.pop(key, None)

    def gc_fail(self, on: bool = True, details: str = "Message garbage collection failed") -> None:
        """Message GC deletes nothing and its callback reports ``"status":"failed"``."""
        with self._cond:
            self._faults.gc_fail = details if on else None

    def gc_fail_rounds(self, rounds: int, status: str = "failed",
                       details: str = "Message garbage collection did not finish") -> None:
        """The next ``rounds`` message-GC calls report an error in their callbacks, later ones
        are clean: ``status`` ``failed`` deletes nothing, ``complete`` deletes as usual and
        still lists the error (0 rounds clears)."""
        if status not in GC_ROUND_STATUSES:
            raise ValueError(f"status must be one of {', '.join(GC_ROUND_STATUSES)}")
        with self._cond:
            self._faults.gc_error_rounds = (_ErrorRounds(int(rounds), status, details)
                                            if rounds > 0 else None)

    def gc_no_callback(self, on: bool = True) -> None:
        """Message GC deletes rows but sends no callback."""
        with self._cond:
            self._faults.gc_no_callback = bool(on)

    def gc_fail_nodes(self, nodes: Sequence[str],
                      details: str = "Message garbage collection failed") -> None:
        """Multiconnect: the named coreapps (``wacore2``, or their node ids) call back
        ``"status":"failed"`` with an error, the others complete as usual ([] clears)."""
        ids = frozenset(n if n in self.node_ids else node_id(n) for n in nodes)
        unknown = ids - set(self.node_ids)
        if unknown:
            raise ValueError(f"not a node of this stand-in: {', '.join(sorted(unknown))}")
        with self._cond:
            self._faults.gc_failing_nodes = ids
            self._faults.gc_failing_details = details

    def gc_report_deleted(self, count: Any = None) -> None:
        """Message-GC callbacks report ``count`` as ``messages_deleted`` (on every node)
        instead of what was deleted: a count no table could hold, or not a count at all
        (``1e23``); None goes back to the truth."""
        with self._cond:
            self._faults.gc_report_deleted = count

    def media_gc_fail(self, on: bool = True,
                      details: str = "Could not delete media files") -> None:
        """Media GC deletes nothing and calls back failed, under ``media`` as Meta documents."""
        with self._cond:
            self._faults.media_gc_fail = details if on else None

    def media_gc_no_callback(self, on: bool = True) -> None:
        """Media GC deletes files but sends no callback."""
        with self._cond:
            self._faults.media_gc_no_callback = bool(on)

    def gc_delay(self, seconds: float) -> None:
        with self._cond:
            self._faults.gc_delay = float(seconds)

    def gc_max_rows_per_round(self, rows: int | None) -> None:
        with self._cond:
            self._faults.gc_max_rows_per_round = None if rows is None else int(rows)

    def gc_batch_pause(self, seconds: float) -> None:
        """A pause after each DELETE batch: a GC that deletes slowly."""
        with self._cond:
            self._faults.gc_batch_pause = float(seconds)

    def media_gc_delay(self, seconds: float) -> None:
        with self._cond:
            self._faults.media_gc_delay = float(seconds)

    def set_callback(self, url: str | None, headers: Mapping[str, str] | None = None) -> None:
        with self._cond:
            self.callback_url = url
            self.callback_headers = dict(headers or {})

    def clear_faults(self) -> None:
        """Back to the constructor's settings; hung requests are released (dropped)."""
        with self._cond:
            self._faults = self._fresh_faults()
            self._cond.notify_all()

    def reset_stats(self) -> None:
        with self._cond:
            self._stats = _zero_stats()
            self._callback_log.clear()
            self._cond.notify_all()

    def reset(self) -> None:
        self.clear_faults()
        self.reset_stats()

    def stats(self) -> Json:
        with self._cond:
            return self._stats_locked()

    def faults(self) -> Json:
        with self._cond:
            f = self._faults
            return {
                "fail_next": {k: vars(v).copy() for k, v in f.fail_next.items()},
                "slow": dict(f.slow), "hang": sorted(f.hang), "trickle": dict(f.trickle),
                "gc_fail": f.gc_fail,
                "gc_fail_rounds": vars(f.gc_error_rounds).copy() if f.gc_error_rounds else None,
                "gc_no_callback": f.gc_no_callback, "gc_delay": f.gc_delay,
                "gc_fail_nodes": sorted(f.gc_failing_nodes),
                "gc_report_deleted": f.gc_report_deleted,
                "media_gc_fail": f.media_gc_fail,
                "media_gc_no_callback": f.media_gc_no_callback,
                "gc_max_rows_per_round": f.gc_max_rows_per_round,
                "gc_batch_pause": f.gc_batch_pause,
                "media_gc_delay": f.media_gc_delay,
            }

    def callbacks(self) -> list[Json]:
        """Every callback attempt: url, payload, and the answer's status or the error."""
        with self._cond:
            return copy.deepcopy(self._callback_log)

    def wait_until(self, predicate: Callable[[Json], bool], timeout: float = 10.0) -> bool:
        """Wait until ``predicate(stats())`` holds; every counter change re-checks it."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self._stats_locked()), timeout)

    def wait_gc_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no message or media GC is running (callbacks included)."""
        return self.wait_until(lambda s: not s["gc_running"] and not s["media_gc_running"],
                               timeout)

    # -- internals -------------------------------------------------------------------------

    def _fresh_faults(self) -> _Faults:
        gc_delay, max_rows, batch_pause, media_delay = self._defaults
        return _Faults(gc_delay=gc_delay, gc_max_rows_per_round=max_rows,
                       gc_batch_pause=batch_pause, media_gc_delay=media_delay)

    def _stats_locked(self) -> Json:
        s = copy.deepcopy(self._stats)
        s.update(gc_running=self._gc_running, media_gc_running=self._media_running,
                 hanging=self._hanging)
        return s

    def _bump(self, **counts: int) -> None:
        with self._cond:
            for name, n in counts.items():
                self._stats[name] += n
            self._cond.notify_all()

    @property
    def _meta(self) -> Json:
        return {"api_status": "stable", "version": self.api_version}

    def _error(self, code: int, title: str, details: str) -> Json:
        return {"meta": self._meta, "errors": [{"code": code, "title": title, "details": details}]}

    def _handle(self, h: _Handler) -> None:
        path = urlsplit(h.path).path
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        if path.startswith(ADMIN_PREFIX):
            self._admin(h, path[len(ADMIN_PREFIX):], body)
            return
        key = ROUTES.get((h.command, path))
        if key is None:
            if path in ENDPOINT_PATHS.values():
                h.reply(405, self._error(1025, "Invalid request", f"{h.command} not allowed"))
            else:
                h.reply(404, self._error(1006, "Resource not found", f"Unknown path {path}"))
            return
        with self._cond:
            self._stats["requests"][key] = self._stats["requests"].get(key, 0) + 1
            self._cond.notify_all()
        if self._inject_faults(h, key):
            return
        if key == "login":
            self._login(h)
        elif self._authorized(h):
            {"health": self._health, "message_gc": self._message_gc,
             "media_gc": self._media_gc, **self.client_handlers()}[key](h)

    def _inject_faults(self, h: _Handler, key: str) -> bool:
        """Apply hang / slow / fail_next to this call; True if the call is used up."""
        with self._cond:
            def hung() -> bool:
                return key in self._faults.hang or "*" in self._faults.hang

            if hung():
                self._hanging += 1
                self._cond.notify_all()
                self._cond.wait_for(lambda: self._stopping.is_set() or not hung())
                self._hanging -= 1
                self._cond.notify_all()
                h.close_connection = True
                return True
            delay = self._faults.slow.get(key, self._faults.slow.get("*", 0.0))
            every = self._faults.trickle.get(key, self._faults.trickle.get("*", 0.0))
        if every:
            self._trickle(h, every)
            return True
        if delay and self._stopping.wait(delay):
            h.close_connection = True
            return True
        with self._cond:
            name = key if key in self._faults.fail_next else "*"
            failure = self._faults.fail_next.get(name)
            if failure is not None:
                failure.remaining -= 1
                if failure.remaining <= 0:
                    del self._faults.fail_next[name]
                self._stats["faults_injected"] += 1
        if failure is None:
            return False
        h.reply(failure.status, self._error(failure.code, failure.title, failure.details))
        return True

    def _trickle(self, h: _Handler, every: float) -> None:
        body = b" " * 100_000
        h.close_connection = True
        try:
            h.send_response(200)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            for byte in range(len(body)):
                if self._stopping.wait(every):
                    return
                h.wfile.write(body[byte:byte + 1])
                h.wfile.flush()
        except OSError:
            return  # the client gave up

    def _admin(self, h: _Handler, name: str, body: bytes) -> None:
        if h.command == "GET" and name in ADMIN_GETTERS:
            h.reply(200, getattr(self, name)())
        elif h.command == "POST" and name in ADMIN_ACTIONS:
            try:
                kwargs = json.loads(body) if body.strip() else {}
                if not isinstance(kwargs, dict):
                    raise TypeError("body must be a JSON object of keyword arguments")
                result = getattr(self, name)(**kwargs)
            except (TypeError, ValueError) as exc:
                h.reply(400, {"ok": False, "error": str(exc)})
                return
            h.reply(200, {"ok": True, "result": result})
        else:
            h.reply(404, {"ok": False, "error": f"no admin endpoint {h.command} {name}"})

    def _login(self, h: _Handler) -> None:
        user, password = _basic_credentials(h.headers.get("Authorization", ""))
        expected = self.users.get(user or "")
        if password is None or expected is None or not secrets.compare_digest(
                password.encode(), expected.encode()):
            self._bump(login_failures=1)
            h.reply(401, self._error(1005, "Access denied", "Invalid credentials."))
            return
        token = secrets.token_urlsafe(32)
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.token_ttl)
        with self._cond:
            self._tokens[token] = expires
        self._bump(logins=1)
        h.reply(200, {"users": [{"token": token, "expires_after": format_expiry(expires)}]})

    def _authorized(self, h: _Handler) -> bool:
        scheme, _, token = h.headers.get("Authorization", "").partition(" ")
        with self._cond:
            expires = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if expires is not None and expires > dt.datetime.now(dt.UTC):
            return True
        self._bump(unauthorized=1)
        h.reply(401, self._error(1005, "Access denied", "Invalid or expired token."))
        return False

    def _health(self, h: _Handler) -> None:
        if not self.node_ids:
            health: Json = {"gateway_status": "connected"}
        else:  # multiconnect answers per node, as the real client does
            health = {n: {"gateway_status": "connected", "role": "coreapp"} for n in self.node_ids}
            health[node_id("wamaster1")] = {"role": "primary_master"}
        h.reply(200, {"health": health, "meta": self._meta})

    def _message_gc(self, h: _Handler) -> None:
        with self._cond:
            f = self._faults
            error = f.gc_error_rounds
            if error is not None:
                error.remaining -= 1
                if error.remaining <= 0:
                    f.gc_error_rounds = None
            fail = f.gc_fail or (error.details if error and error.status == "failed" else None)
            job = _GcJob(delay=f.gc_delay, max_rows=f.gc_max_rows_per_round,
                         batch_pause=f.gc_batch_pause, fail=fail,
                         partial=error.details if error and error.status == "complete" else None,
                         no_callback=f.gc_no_callback, failing_nodes=f.gc_failing_nodes,
                         failing_details=f.gc_failing_details,
                         report_deleted=f.gc_report_deleted, url=self.callback_url,
                         headers=dict(self.callback_headers))
            self._stats["message_gc_calls"] += 1
            self._gc_running += 1
        self._spawn(self._message_gc_worker, (job,))
        gc: Json = ({n: {"status": "processing"} for n in self.node_ids} if self.node_ids
                    else {"status": "processing"})
        h.reply(200, {"services": {"message": {"gc": gc}}, "meta": self._meta})

    def _message_gc_worker(self, job: _GcJob) -> None:
        try:
            if self._stopping.wait(job.delay):
                return
            try:
                if job.fail is not None:
                    raise _GcFailed(job.fail)
                with self._gc_serial:
                    deleted = self._delete_read_rows(job.max_rows, job.batch_pause)
                errors = [] if job.partial is None else [_gc_error(job.partial)]
                payloads = [self._gc_payload(
                    {"status": "failed", "errors": [_gc_error(job.failing_details)]}
                    if node in job.failing_nodes else
                    {"messages_deleted": n if job.report_deleted is None else job.report_deleted,
                     "status": "complete", **({"errors": errors} if errors else {})}, node)
                            for node, n in self._split(deleted)]
                failed = bool(errors or job.failing_nodes)
                self._bump(gc_rounds_completed=int(not failed), gc_rounds_failed=int(failed))
            except (_GcFailed, sa.exc.SQLAlchemyError) as exc:
                details = (str(exc) if isinstance(exc, _GcFailed)
                           else f"Database error: {getattr(exc, 'orig', None) or exc}")
                nodes: list[str | None] = [*self.node_ids] or [None]
                payloads = [self._gc_payload({"status": "failed", "errors": [_gc_error(details)]},
                                             node) for node in nodes]
                self._bump(gc_rounds_failed=1)
            if job.url and not job.no_callback and not self._stopping.is_set():
                for payload in payloads:
                    self._send_callback(job.url, job.headers, payload)
        finally:
            with self._cond:
                self._gc_running -= 1
                self._cond.notify_all()

    def _delete_read_rows(self, limit: int | None, pause: float) -> int:
        """Delete read rows in id-ordered batches, ``pause`` seconds after each: portable
        across MySQL, PostgreSQL, SQLite."""
        if self._engine is None:
            return 0
        deleted = 0
        read = messages.c.status == "read"
        while not self._stopping.is_set() and (limit is None or deleted < limit):
            n = self.gc_batch_size if limit is None else min(self.gc_batch_size, limit - deleted)
            # MySQL refuses LIMIT inside IN (...) and selecting from the DELETE's own table, so
            # find the batch's highest id first and delete by id range.
            window = sa.select(messages.c.id).where(read).order_by(messages.c.id).limit(n)
            with self._engine.begin() as conn:
                upper = conn.execute(sa.select(sa.func.max(window.subquery().c.id))).scalar()
                if upper is None:
                    break
                count = conn.execute(messages.delete().where(read, messages.c.id <= upper)).rowcount
            deleted += count
            self._bump(rows_deleted=count, delete_batches=1)
            if pause and self._stopping.wait(pause):
                break
        return deleted

    def _split(self, total: int) -> list[tuple[str | None, int]]:
        if not self.node_ids:
            return [(None, total)]
        share, extra = divmod(total, len(self.node_ids))
        return [(n, share + (i < extra)) for i, n in enumerate(self.node_ids)]

    @staticmethod
    def _gc_payload(gc: Json, node: str | None) -> Json:
        if node is not None:
            gc["node"] = node
        return {"services": [{"message": {"gc": gc}}]}

    def _send_callback(self, url: str, headers: Mapping[str, str], payload: Json) -> None:
        request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        # Receivers in tests use self-signed certificates, like the real deployment's.
        context = ssl._create_unverified_context() if url.startswith("https") else None
        entry: Json = {"url": url, "payload": payload}
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                entry["status"] = response.status
        except urllib.error.HTTPError as exc:
            entry["status"] = exc.code
        except (urllib.error.URLError, OSError) as exc:
            entry["error"] = str(exc)
        ok = 200 <= entry.get("status", 0) < 300
        with self._cond:
            self._callback_log.append(entry)
        self._bump(callbacks_sent=int(ok), callback_errors=int(not ok))

    def _media_gc(self, h: _Handler) -> None:
        with self._cond:
            busy = self._media_running
            if busy:
                self._stats["media_gc_rejected"] += 1
            else:
                self._media_running = True
                self._stats["media_gc_calls"] += 1
            f = self._faults
            job = _MediaJob(delay=f.media_gc_delay, fail=f.media_gc_fail,
                            no_callback=f.media_gc_no_callback, url=self.callback_url,
                            headers=dict(self.callback_headers))
        if busy:
            h.reply(409, self._error(1015, "Too many requests",
                                     "Media garbage collection is already running"))
            return
        self._spawn(self._media_gc_worker, (job,))
        h.reply(200, {"services": {"media": {"gc": {"status": "processing"}}},
                      "meta": self._meta})

    def _media_gc_worker(self, job: _MediaJob) -> None:
        """Delete media unused for 30 days, then call back as Meta's reference shows: the
        completion under ``message`` with ``items_deleted``, a failure under ``media``."""
        try:
            if self._stopping.wait(job.delay):
                return
            if job.fail is not None:
                payload: Json = {"services": [{"media": {"gc": {
                    "items_deleted": 0, "errors": [_gc_error(job.fail)], "status": "failed"}}}]}
            else:
                deleted = self._delete_old_media()
                self._bump(media_files_deleted=deleted)
                payload = {"services": [{"message": {"gc": {
                    "items_deleted": deleted, "status": "complete"}}}]}
            if job.url and not job.no_callback and not self._stopping.is_set():
                self._send_callback(job.url, job.headers, payload)
        finally:
            with self._cond:
                self._media_running = False
                self._cond.notify_all()

    def _delete_old_media(self) -> int:
        if self.media_dir is None:
            return 0
        cutoff = time.time() - self.media_max_age
        deleted = 0
        for path in self.media_dir.rglob("*"):
            with contextlib.suppress(OSError):
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    path.unlink()
                    deleted += 1
        return deleted

    def _spawn(self, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        worker = threading.Thread(target=target, args=args, daemon=True)
        with self._cond:
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(worker)
        worker.start()


class _GcFailed(Exception):
    pass


def _gc_error(details: str) -> Json:
    """An error as Meta's GC callbacks carry it: ``code`` and ``details``, no ``title`` (only
    the errors of an HTTP answer have one)."""
    return {"code": 1014, "details": details}


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        user, sep, password = base64.b64decode(encoded.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    return (user, password) if sep else (None, None)
