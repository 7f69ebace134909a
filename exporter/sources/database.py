"""Reaching the WA client's database server: discover its databases and measure ``messages``.

One :class:`MessagesSource` per engine (MySQL/MariaDB, PostgreSQL, SQLite). Each finds
every database whose name starts with ``WA_DB_NAME_PREFIX`` and holds a ``messages``
table, and reads its row count (exact below a bound, the engine's estimate above it)
and its size. Every query runs under a server-side timeout and a client-side deadline,
so a locked table or a black-holed connection ends in a :class:`DatabaseError`.
"""

from __future__ import annotations

import logging
import os
import re
import select
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache, partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from exporter.config import DatabaseSettings, MessagesSettings, scrub
from exporter.errors import SourceError

log = logging.getLogger(__name__)

MESSAGES_TABLE = "messages"
MAX_LISTED = 20  # databases named in a message, so a shared server cannot flood the log
# A DB-API connection of whichever driver the engine uses (PyMySQL, psycopg2, sqlite3).
Connection = Any


class DatabaseError(SourceError):
    """A database could not be reached (``connect``), queried (``query``) or answered in time
    (``timeout``)."""


class RowSource(StrEnum):
    """Where a row figure came from."""

    COUNT = "count"  # an exact COUNT(*)
    N_LIVE_TUP = "n_live_tup"  # PostgreSQL's cumulative statistics, kept on every commit
    RELTUPLES = "reltuples"  # PostgreSQL's planner estimate, set by VACUUM and ANALYZE only
    TABLE_ROWS = "table_rows"  # MySQL/MariaDB information_schema.TABLES


@dataclass(frozen=True)
class TableReading:
    database: str
    rows: int
    size_bytes: int
    source: RowSource

    @property
    def exact(self) -> bool:
        return self.source is RowSource.COUNT


# A row estimate and where it came from; None when the engine has none.
Estimate = tuple[int | None, RowSource]


@dataclass
class ServerReading:
    tables: dict[str, TableReading] = field(default_factory=dict)
    errors: dict[str, DatabaseError] = field(default_factory=dict)


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching names that start with ``prefix`` literally."""
    return re.sub(r"([\\%_])", r"\\\1", prefix) + "%"


def query(conn: Connection, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Every row of one statement. Without ``params`` the text is sent as it is: PyMySQL and
    psycopg2 would read a ``%`` in it (a database named ``wa_50%``) as a placeholder."""
    cur = conn.cursor()
    try:
        if params is None:
            cur.execute(sql)
        else:
            cur.execute(sql, params)
        return list(cur.fetchall())
    finally:
        cur.close()


def pooled_engine(driver: str, connect_args: dict[str, Any], *, recycle: float | None = None,
                  checkout_timeout: float, on_connect: Callable[[Connection], None] | None = None,
                  dbapi_connect: Callable[..., Connection] | None = None) -> sa.Engine:
    """A SQLAlchemy engine that keeps one connection between refreshes (a refresh every
    minute should not pay a TLS handshake each time): pinged before reuse, and renewed after
    ``recycle`` seconds, before a server's idle timeout drops it. Every driver setting,
    timeouts included, goes through ``connect_args``; ``dbapi_connect``, if given, makes the
    DB-API connection from them instead of the driver's ``connect``; ``on_connect`` gets
    each new DB-API connection."""
    engine = sa.create_engine(
        sa.URL.create(driver), poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=0,
        pool_timeout=checkout_timeout, pool_pre_ping=True,
        pool_recycle=-1 if recycle is None else recycle, isolation_level="AUTOCOMMIT",
        connect_args=connect_args)
    if dbapi_connect is not None:
        sa.event.listen(engine, "do_connect",
                        lambda _dialect, _record, cargs, cparams: dbapi_connect(*cargs, **cparams))
    if on_connect is not None:
        sa.event.listen(engine, "connect", lambda dbapi_conn, _record: on_connect(dbapi_conn))
    return engine


@contextmanager
def checked_out(engine: sa.Engine) -> Iterator[sa.Connection]:
    """The engine's connection; one that saw any error is invalidated, never reused (after a
    client-side deadline its protocol state is unknown)."""
    conn = engine.connect()
    try:
        yield conn
    except BaseException:
        conn.invalidate()
        raise
    finally:
        conn.close()


def count_rows(conn: sa.Connection, table: str) -> int:
    # On the DB-API cursor: for PyMySQL, SQLAlchemy would double a '%' in the table's schema
    # (text()) or %-format the statement with empty parameters (exec_driver_sql).
    return int(query(conn.connection, f"SELECT COUNT(*) FROM {table}")[0][0])


def _close(conn: Connection) -> None:
    with suppress(Exception):
        conn.close()


class MessagesSource:
    """Discovers the WA databases on one server and measures their ``messages`` tables."""

    # The driver's exception classes: what a query or a connection attempt may raise.
    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, db: DatabaseSettings, settings: MessagesSettings) -> None:
        self.db = db
        self.settings = settings
        self.prefix = db.name_prefix

    def read(self) -> ServerReading:
        raise NotImplementedError

    def session(self, timeout: float | None = None) -> Connection:
        """A new connection of its own (for the cluster lock), in autocommit mode; with
        ``timeout``, connecting and every answer on it are bounded by that instead."""
        raise NotImplementedError

    def close(self) -> None:
        """Close every pooled connection."""

    def list_databases(self) -> list[str]:
        """Every database this login can see, whatever its name: to explain a prefix that
        matches none. Raises :class:`DatabaseError`."""
        raise NotImplementedError

    def explain_none_found(self) -> str:
        """Why discovery found no WA database: the prefix and the databases this login sees."""
        try:
            visible = self.list_databases()
        except DatabaseError as exc:
            seen = f"listing the databases failed too: {exc}"
        else:
            shown = ", ".join(visible[:MAX_LISTED]) or "none"
            more = f" and {len(visible) - MAX_LISTED} more" if len(visible) > MAX_LISTED else ""
            seen = f"the databases this login sees: {shown}{more}"
        return (f"no database whose name starts with WA_DB_NAME_PREFIX={self.prefix!r} holds a "
                f"{MESSAGES_TABLE} table; {seen}; fix: set WA_DB_NAME_PREFIX as in the WA "
                "client's db.env, or grant WA_DB_USERNAME access to its databases")

    def idle_timeout(self, conn: Connection) -> float | None:
        """Seconds after which the server ends ``conn`` if it stays idle, when known."""
        return None

    def _wanted(self, name: str) -> bool:
        return name.startswith(self.prefix)

    def describe_error(self, exc: BaseException) -> DatabaseError:
        """A typed error whose text is short and never holds the password."""
        if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
            exc = exc.orig  # the driver's own error, without SQLAlchemy's statement and link
        kind = classify(exc)
        args: tuple[object, ...] = tuple(getattr(exc, "args", ()))
        if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
            text = f"{args[1]} (MySQL error {args[0]})"
        else:
            text = str(exc)
        text = " ".join(text.split())[:300] or type(exc).__name__
        return DatabaseError(scrub(text, self.db.password), kind=kind)

    def _measure(self, database: str, estimate: Estimate, size: int,
                 count: Callable[[], int]) -> TableReading:
        """Exact ``COUNT(*)`` while the estimate is below the bound (or there is none), else
        the estimate."""
        rows, source = estimate
        if rows is None or rows < self.settings.exact_count_below:
            return TableReading(database, count(), size, RowSource.COUNT)
        return TableReading(database, rows, size, source)


def classify(exc: BaseException) -> str:
    """Map a driver error to ``connect``, ``query`` or ``timeout``."""
    if isinstance(exc, DatabaseError):
        return exc.kind
    text = str(exc).lower()
    code = getattr(exc, "pgcode", None)
    args = getattr(exc, "args", ())
    mysql_code = args[0] if args and isinstance(args[0], int) else None
    if code in ("57014", "55P03") or mysql_code in (1205, 1969, 3024) or "timed out" in text \
            or "timeout" in text or "max_statement_time" in text:
        return "timeout"
    if mysql_code in (2003, 2005, 2006, 2013, 1045, 1044, 2002) or isinstance(
            exc, ConnectionError) or "could not connect" in text or "connection refused" in text \
            or "server closed the connection" in text or "connection to server" in text \
            or "password authentication failed" in text or "does not exist" in text:
        return "connect"
    return "query"


# --- MySQL / MariaDB ------------------------------------------------------------------------


def mysql_quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def preferred_tls_context() -> ssl.SSLContext:
    """The TLS context of PyMySQL's preferred mode, without the system CA store.

    From PyMySQL 1.2 on, a connection without TLS settings tries TLS if the server offers it
    and builds a context for that: ``ssl.create_default_context()``, then no hostname check,
    no verification (``CERT_NONE``), no ``VERIFY_X509_STRICT``, no SSLv2/3. The default
    context loads the system CA store (about 0.8 MiB of C memory) that, verifying nothing,
    it never reads; this is the same context without it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.verify_flags &= ~ssl.VERIFY_X509_STRICT
    context.options |= ssl.OP_NO_SSLv2 | ssl.OP_NO_SSLv3
    keylog = os.environ.get("SSLKEYLOGFILE")
    if keylog and not sys.flags.ignore_environment:  # as create_default_context() does
        context.keylog_filename = keylog
    return context


@cache
def pymysql_connection() -> Callable[..., Connection]:
    """PyMySQL's connection class, with one TLS context shared by every connection that has
    no TLS settings of its own.

    PyMySQL 1.2 builds a context for each such connection and keeps it as long as the
    connection (:func:`preferred_tls_context`, about 1 MiB with the CA store in it). The
    exporter holds up to three MySQL connections at once (the collector's, GC's count, the
    cluster lock's session) and opens the lock's again for each run; one context, made
    once, serves them all (docs/soak.md). A connection with WA_DB_SSL_* settings still gets
    a context of its own from PyMySQL, as before."""
    import pymysql  # only the driver this engine needs is loaded

    lock = threading.Lock()
    shared: list[ssl.SSLContext] = []

    class SharedTlsConnection(pymysql.connections.Connection):  # type: ignore[misc]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if sslp:
                return super()._create_ssl_ctx(sslp)
            with lock:
                if not shared:
                    shared.append(preferred_tls_context())
                return shared[0]

    return SharedTlsConnection


class MySQLSource(MessagesSource):
    """One connection kept for the server; ``information_schema`` finds and estimates tables."""

    def __init__(self, db: DatabaseSettings, settings: MessagesSettings) -> None:
        super().__init__(db, settings)
        import pymysql  # only the driver this engine needs is loaded

        self._connection = pymysql_connection()
        self.errors = (pymysql.err.Error, sa.exc.DBAPIError, sa.exc.TimeoutError)
        timeout = settings.query_timeout
        self._connect_args: dict[str, Any] = {
            "host": db.hostname, "port": db.port, "charset": "utf8mb4", "autocommit": True,
            # As bytes: PyMySQL encodes a str password as latin-1, so 'é' is refused and
            # '☃' raises; the mysql CLI sends what was typed, UTF-8.
            "password": db.password.reveal().encode() if db.password else b"",
            "connect_timeout": max(1, round(min(timeout, 10))),
            "read_timeout": max(1, round(db.read_timeout_s or timeout + 2)),
            "write_timeout": max(1, round(timeout + 2)),
        }
        if db.username:
            self._connect_args["user"] = db.username
        if db.ssl_ca or db.ssl_cert:
            self._connect_args["ssl"] = {
                k: str(v) for k, v in (("ca", db.ssl_ca), ("cert", db.ssl_cert),
                                       ("key", db.ssl_key)) if v}
            self._connect_args["ssl_verify_cert"] = db.ssl_verify
            self._connect_args["ssl_verify_identity"] = db.ssl_verify
        # Renewed before the server's idle timeout drops the kept connection under us.
        recycle = None
        if db.connection_idle_timeout_ms:
            recycle = max(1.0, db.connection_idle_timeout_ms / 1000 * 0.8)
        self.engine = pooled_engine("mysql+pymysql", self._connect_args, recycle=recycle,
                                    checkout_timeout=timeout + 2,
                                    on_connect=self._session_limits,
                                    dbapi_connect=self._connection)

    def session(self, timeout: float | None = None) -> Connection:
        args = self._connect_args
        if timeout is not None:
            seconds = max(1, round(timeout))
            args = {**args, "connect_timeout": seconds, "read_timeout": seconds,
                    "write_timeout": seconds}
        conn = self._connection(**args)
        try:
            self._session_limits(conn)
        except BaseException:
            _close(conn)
            raise
        return conn

    def _session_limits(self, conn: Connection) -> None:
        seconds = max(1, round(self.settings.query_timeout))
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = str(cur.fetchone()[0])
            if "mariadb" in version.lower():
                cur.execute(f"SET SESSION max_statement_time = {seconds}")
            else:
                cur.execute(f"SET SESSION max_execution_time = {seconds * 1000}")
                # MySQL 8 caches information_schema statistics for a day by default.
                cur.execute("SET SESSION information_schema_stats_expiry = 0")
            cur.execute(f"SET SESSION lock_wait_timeout = {seconds}")
            cur.execute(f"SET SESSION innodb_lock_wait_timeout = {seconds}")

    def read(self) -> ServerReading:
        reading = ServerReading()
        try:
            with checked_out(self.engine) as conn:
                found = conn.execute(sa.text(
                    "SELECT TABLE_SCHEMA, TABLE_ROWS, "
                    "COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) "
                    "FROM information_schema.TABLES "
                    "WHERE TABLE_NAME = :table AND TABLE_TYPE = 'BASE TABLE' "
                    "AND TABLE_SCHEMA LIKE :pattern"),
                    {"table": MESSAGES_TABLE, "pattern": like_prefix(self.prefix)}).all()
        except self.errors as exc:
            raise self.describe_error(exc) from None
        for schema, estimate, size in found:
            if not self._wanted(schema):
                continue
            try:
                with checked_out(self.engine) as conn:
                    table = f"{mysql_quote(schema)}.{mysql_quote(MESSAGES_TABLE)}"
                    reading.tables[schema] = self._measure(
                        schema,
                        (None if estimate is None else int(estimate), RowSource.TABLE_ROWS),
                        int(size), partial(count_rows, conn, table))
            except self.errors as exc:
                reading.errors[schema] = self.describe_error(exc)
        return reading

    def list_databases(self) -> list[str]:
        try:
            with checked_out(self.engine) as conn:
                return list(conn.execute(sa.text(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME "
                    "NOT IN ('information_schema', 'mysql', 'performance_schema', 'sys') "
                    "ORDER BY SCHEMA_NAME")).scalars())
        except self.errors as exc:
            raise self.describe_error(exc) from None

    def idle_timeout(self, conn: Connection) -> float | None:
        # The guide's WA_DB_CONNECTION_IDLE_TIMEOUT says it for MySQL.
        ms = self.db.connection_idle_timeout_ms
        return ms / 1000 if ms else None

    def close(self) -> None:
        self.engine.dispose()


# --- PostgreSQL -----------------------------------------------------------------------------

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


# The planner's estimate, the live-row count of the cumulative statistics, whether those
# statistics have seen a VACUUM or ANALYZE since they were last reset or lost, whether they
# are kept at all, and the table's size.
POSTGRES_TABLE_FIGURES = (
    "SELECT reltuples::bigint, pg_stat_get_live_tuples(oid), "
    "pg_stat_get_vacuum_count(oid) + pg_stat_get_autovacuum_count(oid) "
    "+ pg_stat_get_analyze_count(oid) + pg_stat_get_autoanalyze_count(oid) > 0, "
    "current_setting('track_counts')::boolean, pg_total_relation_size(oid) "
    "FROM pg_class WHERE oid = to_regclass(:table)")


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
        self._psycopg2 = psycopg2
        self.errors = (psycopg2.Error, sa.exc.DBAPIError, sa.exc.TimeoutError)
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

    def connect(self, database: str) -> Connection:
        """A new connection to ``database`` in autocommit mode."""
        conn = self._psycopg2.connect(dbname=database, **self._connect_args)
        conn.autocommit = True
        return conn

    def session(self, timeout: float | None = None) -> Connection:
        # Bounded by the caller's client_deadline(), which covers connecting too.
        return self.connect(self.settings.maintenance_database)

    def engine_for(self, database: str) -> sa.Engine:
        """One engine per database: a PostgreSQL connection reaches one database only."""
        with self._lock:
            engine = self._engines.get(database)
            if engine is None:
                engine = self._engines[database] = pooled_engine(
                    "postgresql+psycopg2", {**self._connect_args, "dbname": database},
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
                names = list(conn.execute(sa.text(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT "
                    "datistemplate AND datname LIKE :pattern ORDER BY datname"),
                    {"pattern": like_prefix(self.prefix)}).scalars())
        except self.errors as exc:
            raise self.describe_error(exc) from None
        candidates = {n for n in names if self._wanted(n)}
        self._forget(candidates)
        for database in sorted(candidates):
            try:
                with self._connect(database) as conn:
                    row = conn.execute(sa.text(POSTGRES_TABLE_FIGURES),
                                       {"table": MESSAGES_TABLE}).first()
                    if row is None:
                        continue
                    reltuples, live, anchored, track_counts, size = row
                    reading.tables[database] = self._measure(
                        database,
                        postgres_estimate(int(reltuples), int(live), bool(anchored),
                                          bool(track_counts)),
                        int(size), partial(count_rows, conn, MESSAGES_TABLE))
            except self.errors as exc:
                error = self.describe_error(exc)
                if error.kind == "connect" and "does not exist" in str(error):
                    continue  # dropped between listing and connecting
                reading.errors[database] = error
        return reading

    def list_databases(self) -> list[str]:
        try:
            with self._connect(self.settings.maintenance_database) as conn:
                return list(conn.execute(sa.text(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT "
                    "datistemplate ORDER BY datname")).scalars())
        except self.errors as exc:
            raise self.describe_error(exc) from None

    def idle_timeout(self, conn: Connection) -> float | None:
        # WA_DB_CONNECTION_IDLE_TIMEOUT is MySQL-only; PostgreSQL's own limit is the
        # session's idle_session_timeout (PostgreSQL 14+, 0 = none), as set for its database
        # or role.
        found = query(conn, "SELECT setting::bigint FROM pg_settings "
                      "WHERE name = 'idle_session_timeout'")
        ms = int(found[0][0]) if found else 0
        return ms / 1000 if ms > 0 else None

    def close(self) -> None:
        with self._lock:
            engines, self._engines = list(self._engines.values()), {}
        for engine in engines:
            engine.dispose()


# --- SQLite (the demo) ----------------------------------------------------------------------


class SQLiteSource(MessagesSource):
    """``WA_DB_HOSTNAME`` is a directory; each ``<name>.db`` file in it is a database."""

    def __init__(self, db: DatabaseSettings, settings: MessagesSettings) -> None:
        super().__init__(db, settings)
        import sqlite3

        self._sqlite3 = sqlite3
        self.errors = (sqlite3.Error,)

    def read(self) -> ServerReading:
        reading = ServerReading()
        directory = Path(self.db.hostname)
        if not directory.is_dir():
            raise DatabaseError(f"{directory} is not a directory", kind="connect")
        for path in sorted(directory.glob("*.db")):
            database = path.stem
            if not self._wanted(database):
                continue
            try:
                conn = self._sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True,
                                             timeout=self.settings.query_timeout)
                try:
                    if not query(conn, "SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                 "AND name = ?", (MESSAGES_TABLE,)):
                        continue
                    reading.tables[database] = self._measure(
                        database, (None, RowSource.COUNT), self._size(conn),
                        partial(self._count, conn))
                finally:
                    conn.close()
            except self.errors as exc:
                reading.errors[database] = self.describe_error(exc)
        return reading

    def list_databases(self) -> list[str]:
        directory = Path(self.db.hostname)
        if not directory.is_dir():
            raise DatabaseError(f"{directory} is not a directory", kind="connect")
        return sorted(path.stem for path in directory.glob("*.db"))

    def _count(self, conn: Connection) -> int:
        return int(query(conn, f"SELECT COUNT(*) FROM {MESSAGES_TABLE}")[0][0])

    def _size(self, conn: Connection) -> int:
        try:
            return int(query(conn, "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN "
                             "(SELECT name FROM sqlite_master WHERE tbl_name = ?)",
                             (MESSAGES_TABLE,))[0][0])
        except self._sqlite3.OperationalError:  # built without the dbstat table: whole file
            page_size = query(conn, "PRAGMA page_size")[0][0]
            pages = query(conn, "PRAGMA page_count")[0][0]
            return int(page_size) * int(pages)


SOURCES: dict[str, type[MessagesSource]] = {
    "MYSQL": MySQLSource, "PGSQL": PostgresSource, "SQLITE": SQLiteSource,
}


def open_source(db: DatabaseSettings, settings: MessagesSettings) -> MessagesSource:
    return SOURCES[db.engine](db, settings)


def open_counting_source(db: DatabaseSettings, messages: MessagesSettings) -> MessagesSource:
    """A source that always counts exactly: an engine's estimate may not move while GC
    deletes, which would end a round by row count too early."""
    return open_source(db, messages.model_copy(update={"exact_count_below": sys.maxsize}))


def empty_prefix_warning(databases: list[str]) -> str:
    """What an empty ``WA_DB_NAME_PREFIX`` does, naming the databases it took as WA's."""
    shown = ", ".join(databases[:MAX_LISTED]) or "none yet"
    more = f" and {len(databases) - MAX_LISTED} more" if len(databases) > MAX_LISTED else ""
    return (f"WA_DB_NAME_PREFIX is empty, so every database with a {MESSAGES_TABLE} table "
            f"counts as a WA database: {shown}{more}; fix: set WA_DB_NAME_PREFIX as in the WA "
            "client's db.env if any of these is not the WA client's")


def warn_ignored_settings(db: DatabaseSettings) -> None:
    """Say once, at start, which ``db.env`` settings this engine does not use."""
    if db.engine == "PGSQL" and db.connection_idle_timeout_ms:
        log.warning("WA_DB_CONNECTION_IDLE_TIMEOUT is MySQL only: ignored with PGSQL; the "
                    "cluster lock session follows the server's idle_session_timeout")
