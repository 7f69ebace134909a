"""Locks that make an action run once across exporter replicas: held in the WA database itself
(MySQL ``GET_LOCK``, PostgreSQL advisory locks), or in a lock file for the SQLite demo."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from exporter.sources.database import (
    DatabaseError,
    MessagesSource,
    MySQLSource,
    PostgresSource,
    client_deadline,
)

log = logging.getLogger(__name__)


class Held:
    """A lock this replica holds. ``release_after`` frees it for other runs at once but keeps
    other replicas from starting the same action for the rest of its cooldown."""

    def __init__(self, release: Callable[[], None],
                 release_after: Callable[[float], None] | None = None) -> None:
        self._release = release
        self._release_after = release_after

    def release(self) -> None:
        self._release()

    def release_after(self, seconds: float) -> None:
        if self._release_after is None:
            self._release()
        else:
            self._release_after(seconds)


COOLDOWN = "cooldown:"
PING = sa.text("SELECT 1")


def keepalive_interval(idle_timeout: float | None) -> float:
    """How often to ping a session that holds locks and is otherwise idle: at half the
    server's idle timeout, and at least every minute (firewalls and NAT drop idle TCP
    connections too, whatever the server says)."""
    if idle_timeout is None:
        return 60.0
    return max(1.0, min(60.0, idle_timeout / 2))


class SessionLocks:
    """Named locks on one dedicated session, shared by every run, closed when none is held.

    A run holds ``<key>``. When it ends, the replica takes ``cooldown:<key>`` for the rest
    of the action's cooldown and frees ``<key>``: another replica that gets the run lock
    then finds the cooldown lock taken and skips. While the session holds any lock, a
    keeper thread pings it (it is otherwise idle for a whole run and cooldown), so that no
    idle timeout drops it and the locks with it, and frees cooldown locks when they expire."""

    def __init__(self, source: MessagesSource, acquire_sql: str, release_sql: str,
                 name_of: Callable[[str], object], deadline: float,
                 probe_sql: str = "") -> None:
        self._source = source
        self._probe = sa.text(probe_sql)
        self._deadline = deadline
        self._keepalive = keepalive_interval(None)
        self._acquire = sa.text(acquire_sql)
        self._release = sa.text(release_sql)
        self._name_of = name_of
        self._mutex = threading.Lock()
        self._changed = threading.Condition(self._mutex)
        self._conn: sa.Connection | None = None
        self._held: set[str] = set()
        self._cooling: dict[str, float] = {}  # cooldown lock -> monotonic time it expires
        self._keeper: threading.Thread | None = None

    def try_acquire(self, key: str) -> Held | None:
        with self._mutex, client_deadline(self._deadline):
            if not self._take(key):
                self._close_if_unused()
                return None
            self._held.add(key)
            self._ensure_keeper()
        return Held(lambda: self._release_key(key), lambda seconds: self._cool(key, seconds))

    def cooling_elsewhere(self, key: str) -> bool:
        """Whether another replica ran ``key`` within its cooldown (ask holding ``key``)."""
        cool = COOLDOWN + key
        with self._mutex, client_deadline(self._deadline):
            if cool in self._cooling:
                return False  # this replica's own cooldown: its state file decides
            if not self._take(cool):
                return True
            self._give_back(cool)
            return False

    def held_anywhere(self, key: str) -> bool:
        """Whether any session — another replica's, or this one's — holds ``key`` now, asked
        on a short session of its own without taking the lock (``upgrade-check``)."""
        with client_deadline(self._deadline):
            conn = None
            try:
                conn = self._source.session(self._deadline)
                return bool(conn.execute(self._probe, {"name": self._name_of(key)}).scalar())
            except self._source.errors as exc:
                raise self._source.describe_error(exc) from None
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()

    def _take(self, name: str) -> bool:
        """Try the lock ``name``; a database error becomes a :class:`DatabaseError`."""
        try:
            if self._conn is None:
                self._conn = self._source.session(self._deadline)
                self._keepalive = keepalive_interval(self._source.idle_timeout(self._conn))
            got = self._conn.execute(self._acquire, {"name": self._name_of(name)}).scalar()
        except self._source.errors as exc:
            self._drop()
            raise self._source.describe_error(exc) from None
        return got in (1, True)

    def _give_back(self, name: str) -> None:
        if self._conn is not None:
            try:
                self._conn.execute(self._release, {"name": self._name_of(name)})
            except self._source.errors:
                self._drop()  # the session is gone, and its locks with it

    def _release_key(self, key: str) -> None:
        with self._mutex, client_deadline(self._deadline):
            self._held.discard(key)
            self._give_back(key)
            self._close_if_unused()

    def _cool(self, key: str, seconds: float) -> None:
        cool = COOLDOWN + key
        with self._mutex, client_deadline(self._deadline):
            try:
                cooling = cool in self._cooling or self._take(cool)
            except DatabaseError:
                cooling = False  # the session is gone: nothing left to hold
            if cooling:
                self._cooling[cool] = time.monotonic() + seconds
                self._ensure_keeper()
            self._held.discard(key)
            self._give_back(key)
            self._close_if_unused()

    def _ensure_keeper(self) -> None:
        """Start the keeper if it is not running, and wake it (a lock was added). Under the
        mutex."""
        if self._keeper is None:
            self._keeper = threading.Thread(target=self._keep, name="lock-keeper", daemon=True)
            self._keeper.start()
        self._changed.notify()

    def _keep(self) -> None:
        """While the session holds anything — a run lock (a GC in rounds can take an hour)
        or a cooldown lock — ping it every ``keepalive`` seconds, and free cooldown locks
        when they expire."""
        with self._mutex:
            next_ping = time.monotonic() + self._keepalive
            while self._cooling or self._held:
                now = time.monotonic()
                with client_deadline(self._deadline):
                    for cool in [c for c, until in self._cooling.items() if until <= now]:
                        del self._cooling[cool]
                        self._give_back(cool)
                    if self._conn is not None and now >= next_ping:
                        next_ping = now + self._keepalive
                        try:
                            self._conn.execute(PING)
                        except self._source.errors as exc:
                            self._retake(str(self._source.describe_error(exc)))
                if self._cooling or self._held:
                    wake = min([next_ping, *self._cooling.values()])
                    self._changed.wait(max(0.0, wake - time.monotonic()))
            self._keeper = None
            self._close_if_unused()

    def _retake(self, why: str) -> None:
        """The session died under the locks it held (a network cut, a server restart): open
        a new one and take them again, so other replicas are kept out once more. Those that
        cannot be taken again — another replica holds them now, or the database is out of
        reach — are let go with a warning. Under the mutex."""
        held, cooling = set(self._held), dict(self._cooling)
        self._drop()
        lost: list[str] = []
        for name in [*held, *cooling]:
            try:
                got = self._take(name)
            except DatabaseError:  # out of reach: _take dropped the new session, and all
                lost = [*held, *cooling]
                break
            if not got:
                lost.append(name)
            elif name in held:
                self._held.add(name)
            else:
                self._cooling[name] = cooling[name]
        if lost:
            log.warning("cluster lock session lost; these locks could not be taken again, "
                        "other replicas may start them", extra={
                            "lost": ", ".join(sorted(lost)), "err": why})
        else:
            log.warning("cluster lock session lost and renewed; its locks are held again",
                        extra={"locks": len(held) + len(cooling), "err": why})
        self._close_if_unused()

    def _close_if_unused(self) -> None:
        if not self._held and not self._cooling and self._conn is not None:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self._held.clear()
        self._cooling.clear()


class FileLocks:
    """``flock`` on a file per key: replicas on one host sharing the state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def try_acquire(self, key: str) -> Held | None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None

        def release() -> None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

        # Replicas sharing this directory share the state file, and its cooldowns with it.
        return Held(release)

    def cooling_elsewhere(self, key: str) -> bool:
        return False

    def held_anywhere(self, key: str) -> bool:
        """Whether a process sharing this directory holds ``key`` (a lock taken and given back
        at once: ``flock`` offers no test that takes nothing)."""
        held = self.try_acquire(key)
        if held is None:
            return True
        held.release()
        return False


# pg_try_advisory_lock(bigint) shows in pg_locks as classid = the key's high 32 bits and
# objid = its low 32 bits, objsubid = 1.
PG_ADVISORY_HELD = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND objsubid = 1 AND classid::bigint = (:name >> 32) & 4294967295"
    " AND objid::bigint = :name & 4294967295)")


def cluster_lock(source: MessagesSource, state_dir: Path, timeout: float
                 ) -> SessionLocks | FileLocks:
    """``timeout`` bounds connecting and each lock query (``actions.lock_timeout``): the
    queries never wait on the server, so a slower answer means the database is out of reach,
    and a webhook decision must not wait a whole ``query_timeout`` for that."""
    label = f"wa-exporter:{source.prefix}:"
    if isinstance(source, MySQLSource):
        # MySQL lock names are at most 64 characters.
        return SessionLocks(source, "SELECT GET_LOCK(:name, 0)", "SELECT RELEASE_LOCK(:name)",
                            lambda key: hashlib.sha256((label + key).encode()).hexdigest()[:60],
                            timeout, probe_sql="SELECT IS_USED_LOCK(:name) IS NOT NULL")
    if isinstance(source, PostgresSource):
        return SessionLocks(source, "SELECT pg_try_advisory_lock(:name)",
                            "SELECT pg_advisory_unlock(:name)",
                            lambda key: int.from_bytes(hashlib.sha256(
                                (label + key).encode()).digest()[:8], "big", signed=True),
                            timeout, probe_sql=PG_ADVISORY_HELD)
    return FileLocks(state_dir / "locks")
