"""Locks that make an action run once across exporter replicas: held in the WA database itself
(MySQL ``GET_LOCK``, PostgreSQL advisory locks), or in a lock file for the SQLite demo."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

from exporter.sources.database import (
    Connection,
    MessagesSource,
    MySQLSource,
    PostgresSource,
    client_deadline,
    query,
)


class Held:
    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release

    def release(self) -> None:
        self._release()


class SessionLocks:
    """Named locks on one dedicated session, shared by every run, closed when none is held."""

    def __init__(self, source: MessagesSource, acquire_sql: str, release_sql: str,
                 name_of: Callable[[str], object], deadline: float) -> None:
        self._source = source
        self._deadline = deadline
        self._acquire = acquire_sql
        self._release = release_sql
        self._name_of = name_of
        self._mutex = threading.Lock()
        self._conn: Connection | None = None
        self._held: set[str] = set()

    def try_acquire(self, key: str) -> Held | None:
        with self._mutex, client_deadline(self._deadline):
            try:
                if self._conn is None:
                    self._conn = self._source.session()
                got = query(self._conn, self._acquire, {"name": self._name_of(key)})[0][0]
            except self._source.errors as exc:
                self._drop()
                raise self._source.describe_error(exc) from None
            if got not in (1, True):
                self._close_if_unused()
                return None
            self._held.add(key)
        return Held(lambda: self._release_key(key))

    def _release_key(self, key: str) -> None:
        with self._mutex, client_deadline(self._deadline):
            self._held.discard(key)
            if self._conn is not None:
                try:
                    query(self._conn, self._release, {"name": self._name_of(key)})
                except self._source.errors:
                    self._drop()  # the session is gone, and its locks with it
            self._close_if_unused()

    def _close_if_unused(self) -> None:
        if not self._held and self._conn is not None:
            self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self._held.clear()


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

        return Held(release)


def cluster_lock(source: MessagesSource, state_dir: Path) -> SessionLocks | FileLocks:
    label = f"wa-exporter:{source.prefix}:"
    deadline = source.settings.query_timeout + 2  # as every other query of the source
    if isinstance(source, MySQLSource):
        # MySQL lock names are at most 64 characters.
        return SessionLocks(source, "SELECT GET_LOCK(%(name)s, 0)",
                            "SELECT RELEASE_LOCK(%(name)s)",
                            lambda key: hashlib.sha256((label + key).encode()).hexdigest()[:60],
                            deadline)
    if isinstance(source, PostgresSource):
        return SessionLocks(source, "SELECT pg_try_advisory_lock(%(name)s)",
                            "SELECT pg_advisory_unlock(%(name)s)",
                            lambda key: int.from_bytes(hashlib.sha256(
                                (label + key).encode()).digest()[:8], "big", signed=True),
                            deadline)
    return FileLocks(state_dir / "locks")
