"""PostgreSQL: lists the databases through the maintenance database, then connects to each
candidate (a PostgreSQL connection reaches one database only) for its figures. Every wait on
the server is bounded twice: ``statement_timeout``/``lock_timeout`` on the server, and a
client-side deadline (:func:`client_deadline`) for a server that never answers."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import sqlalchemy as sa

from exporter.config import DatabaseSettings, MessagesSettings
from exporter.sources.database.base import (
    MESSAGES_TABLE,
    Estimate,
    MessagesSource,
    RowSource,
    ServerReading,
    checked_out,
    count_messages,
    like_prefix,
    pooled_engine,
    session_engine,
)

URL = sa.URL.create("postgresql+psycopg2")

DISCOVER = sa.text("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                   "AND datname LIKE :pattern ORDER BY datname")
DATABASES = sa.text("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                    "ORDER BY datname")
# The planner's estimate, the live-row count of the cumulative statistics, whether those
# statistics have seen a VACUUM or ANALYZE since they were last reset or lost, whether they
# are kept at all, and the table's size.
TABLE_FIGURES = sa.text(
    "SELECT reltuples::bigint, pg_stat_get_live_tuples(oid), "
    "pg_stat_get_vacuum_count(oid) + pg_stat_get_autovacuum_count(oid) "
    "+ pg_stat_get_analyze_count(oid) + pg_stat_get_autoanalyze_count(oid) > 0, "
    "current_setting('track_counts')::boolean, pg_total_relation_size(oid) "
    "FROM pg_class WHERE oid = to_regclass(:table)")
IDLE_SESSION_TIMEOUT = sa.text(
    "SELECT setting::bigint FROM pg_settings WHERE name = 'idle_session_timeout'")

_deadline = threading.local()


@contextmanager
def client_deadline(seconds: float) -> Iterator[None]:
    """Give up waiting on PostgreSQL after ``seconds``, even if the server never answers."""
    _deadline.at = time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline.at = None


def _wait_with_deadline(conn: Any) -> None:
    """psycopg2 wait callback: like ``wait_select``, but bounded by :func:`client_deadline`."""
    import psycopg2.extensions as ext

    poller = select.poll()
    while True:
        state = conn.poll()
        if state == ext.POLL_OK:
            return
        if state not in (ext.POLL_READ, ext.POLL_WRITE):
            raise ext.OperationalError(f"unexpected state from poll(): {state}")
        poller.register(conn.fileno(), select.POLLIN if state == ext.POLL_READ else select.POLLOUT)
        deadline = getattr(_deadline, "at", None)
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            raise ext.QueryCanceledError("client-side timeout: the server did not answer in time")
        poller.poll(None if remaining is None else max(1, int(remaining * 1000)))
        poller.unregister(conn.fileno())


def postgres_estimate(reltuples: int, live: int, anchored: bool, track_counts: bool
                      ) -> Estimate:
    """PostgreSQL's best cheap row figure for a table.

    ``n_live_tup`` follows every committed insert and delete within the statistics flush
    delay, whatever autovacuum does; ``reltuples`` moves only on VACUUM or ANALYZE, so
    with autovacuum off it never follows a GC. ``n_live_tup`` is a running total from the
    last VACUUM or ANALYZE, which set it: if the statistics were reset
    (``pg_stat_reset()``) or lost (a crash) since, none is on record and it counts from
    zero, so ``reltuples`` is used instead; likewise with ``track_counts`` off, which
    stops the counting. A table never vacuumed nor analyzed (``reltuples`` -1) has no
    estimate to check against: it is counted exactly."""
    if track_counts and anchored:
        return max(live, 0), RowSource.N_LIVE_TUP
    if reltuples >= 0:
        return reltuples, RowSource.RELTUPLES
    return None, RowSource.COUNT


class PostgresSource(MessagesSource):
    """Lists databases through the maintenance database, then connects to each candidate."""

    def __init__(self, db: DatabaseSettings, settings: MessagesSettings) -> None:
        super().__init__(db, settings)
        import psycopg2  # only the driver this engine needs is loaded
        import psycopg2.extensions

        psycopg2.extensions.set_wait_callback(_wait_with_deadline)
        self.errors = (psycopg2.Error, *self.errors)
        self._engines: dict[str, sa.Engine] = {}
        self._lock = threading.Lock()
        ms = round(settings.query_timeout * 1000)
        self._connect_args: dict[str, Any] = {
            "host": db.hostname, "port": db.port,
            "connect_timeout": max(2, round(min(settings.query_timeout, 10))),
            "application_name": "wa-exporter",
            "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if db.username:
            self._connect_args["user"] = db.username
        if db.password:
            self._connect_args["password"] = db.password.reveal()
        if db.ssl_ca or db.ssl_cert:
            self._connect_args["sslmode"] = "verify-full" if db.ssl_verify else "require"
            for key, value in (("sslrootcert", db.ssl_ca), ("sslcert", db.ssl_cert),
                               ("sslkey", db.ssl_key)):
                if value:
                    self._connect_args[key] = str(value)
        self._sessions = session_engine(
            URL, {**self._connect_args, "dbname": settings.maintenance_database})

    def session(self, timeout: float | None = None) -> sa.Connection:
        # Bounded by the caller's client_deadline(), which covers connecting too.
        return self._sessions.connect()

    def engine_for(self, database: str) -> sa.Engine:
        """One engine per database: a PostgreSQL connection reaches one database only."""
        with self._lock:
            engine = self._engines.get(database)
            if engine is None:
                engine = self._engines[database] = pooled_engine(
                    URL, {**self._connect_args, "dbname": database},
                    checkout_timeout=self.settings.query_timeout + 2)
            return engine

    def _forget(self, keep: set[str]) -> None:
        with self._lock:
            gone = [self._engines.pop(name) for name in list(self._engines)
                    if name not in keep and name != self.settings.maintenance_database]
        for engine in gone:
            engine.dispose()

    @contextmanager
    def _connect(self, database: str) -> Iterator[sa.Connection]:
        with client_deadline(self.settings.query_timeout + 2), \
                checked_out(self.engine_for(database)) as conn:
            yield conn

    def read(self) -> ServerReading:
        reading = ServerReading()
        try:
            with self._connect(self.settings.maintenance_database) as conn:
                names = list(conn.execute(DISCOVER,
                                          {"pattern": like_prefix(self.prefix)}).scalars())
        except self.errors as exc:
            raise self.describe_error(exc) from None
        candidates = {n for n in names if self._wanted(n)}
        self._forget(candidates)
        for database in sorted(candidates):
            try:
                with self._connect(database) as conn:
                    row = conn.execute(TABLE_FIGURES, {"table": MESSAGES_TABLE}).first()
                    if row is None:
                        continue
                    reltuples, live, anchored, track_counts, size = row
                    reading.tables[database] = self._measure(
                        database,
                        postgres_estimate(int(reltuples), int(live), bool(anchored),
                                          bool(track_counts)),
                        int(size), partial(count_messages, conn))
            except self.errors as exc:
                error = self.describe_error(exc)
                if error.kind == "connect" and "does not exist" in str(error):
                    continue  # dropped between listing and connecting
                reading.errors[database] = error
        return reading

    def list_databases(self) -> list[str]:
        try:
            with self._connect(self.settings.maintenance_database) as conn:
                return list(conn.execute(DATABASES).scalars())
        except self.errors as exc:
            raise self.describe_error(exc) from None

    def idle_timeout(self, conn: sa.Connection) -> float | None:
        # WA_DB_CONNECTION_IDLE_TIMEOUT is MySQL-only; PostgreSQL's own limit is the
        # session's idle_session_timeout (PostgreSQL 14+, 0 = none), as set for its database
        # or role.
        ms = conn.execute(IDLE_SESSION_TIMEOUT).scalar()
        return int(ms) / 1000 if ms is not None and int(ms) > 0 else None

    def close(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.dispose()
        self._sessions.dispose()
