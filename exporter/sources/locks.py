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

import sqlalchemy as sa

from exporter.sources.database import (
    MessagesSource,
    MySQLSource,
    PostgresSource,
    client_deadline,
)


class Held:
    def __init__(self, release: Callable[[], None]) -> None:
        self._release = release

    def release(self) -> None:
        self._release()


class SessionLocks:
    """Named locks on one dedicated session, shared by every run, closed when none is held."""

    def __init__(self, connect: Callable[[], sa.Connection], acquire_sql: str, release_sql: str,
                 name_of: Callable[[str], object],
                 describe: Callable[[BaseException], Exception], deadline: float) -> None:
        self._connect = connect
        self._deadline = deadline
        self._describe = describe
        self._acquire = sa.text(acquire_sql)
        self._release = sa.text(release_sql)
        self._name_of = name_of
        self._mutex = threading.Lock()
        self._conn: sa.Connection | None = None
        self._held: set[str] = set()

    def try_acquire(self, key: str) -> Held | None:
        with self._mutex, client_deadline(self._deadline):
            try:
                if self._conn is None:
                    self._conn = self._connect()
                got = self._conn.execute(self._acquire, {"name": self._name_of(key)}).scalar()
                self._conn.commit()
            except sa.exc.SQLAlchemyError as exc:
                self._drop()
                raise self._describe(exc) from None
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
                    self._conn.execute(self._release, {"name": self._name_of(key)})
                    self._conn.commit()
                except sa.exc.SQLAlchemyError:
                    self._drop()  # the session is gone, and its locks with it
            self._close_if_unused()

    def _close_if_unused(self) -> None:
        if not self._held and self._conn is not None:
            self._conn.close()
            self._conn = None

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._conn.invalidate()
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
        return SessionLocks(source.engine.connect, "SELECT GET_LOCK(:name, 0)",
                            "SELECT RELEASE_LOCK(:name)",
                            lambda key: hashlib.sha256((label + key).encode()).hexdigest()[:60],
                            source.describe_error, deadline)
    if isinstance(source, PostgresSource):
        engine = source.engine_for(source.settings.maintenance_database)
        return SessionLocks(engine.connect, "SELECT pg_try_advisory_lock(:name)",
                            "SELECT pg_advisory_unlock(:name)",
                            lambda key: int.from_bytes(hashlib.sha256(
                                (label + key).encode()).digest()[:8], "big", signed=True),
                            source.describe_error, deadline)
    return FileLocks(state_dir / "locks")
