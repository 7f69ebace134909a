"""Reaching the WA client's database server: discover its databases and measure ``messages``.

One :class:`MessagesSource` per engine (MySQL/MariaDB, PostgreSQL, SQLite). Each finds
every database whose name starts with ``WA_DB_NAME_PREFIX`` and holds a ``messages``
table, and reads its row count (exact below a bound, the engine's estimate above it)
and its size. Every query runs under a server-side timeout and a client-side deadline,
so a locked table or a black-holed connection ends in a :class:`DatabaseError`.
"""

from __future__ import annotations

import re
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.pool import NullPool

from exporter.config import DatabaseSettings, MessagesSettings, scrub
from exporter.errors import SourceError

MESSAGES_TABLE = "messages"


class DatabaseError(SourceError):
    """A database could not be reached (``connect``), queried (``query``) or answered in time
    (``timeout``)."""


@dataclass(frozen=True)
class TableReading:
    database: str
    rows: int
    exact: bool
    size_bytes: int


@dataclass
class ServerReading:
    tables: dict[str, TableReading] = field(default_factory=dict)
    errors: dict[str, DatabaseError] = field(default_factory=dict)


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching names that start with ``prefix`` literally."""
    return re.sub(r"([\\%_])", r"\\\1", prefix) + "%"


class MessagesSource:
    """Discovers the WA databases on one server and measures their ``messages`` tables."""

    def __init__(self, db: DatabaseSettings, settings: MessagesSettings) -> None:
        self.db = db
        self.settings = settings
        self.prefix = db.name_prefix

    def read(self) -> ServerReading:
        raise NotImplementedError

    def close(self) -> None:
        """Close every pooled connection."""

    def _wanted(self, name: str) -> bool:
        return name.startswith(self.prefix)

    def describe_error(self, exc: BaseException) -> DatabaseError:
        """A typed error whose text is short and never holds the password."""
        kind = classify(exc)
        orig = getattr(exc, "orig", None) or exc
        args: tuple[object, ...] = tuple(getattr(orig, "args", ()))
        if len(args) == 2 and isinstance(args[0], int):  # PyMySQL: (code, message)
            text = f"{args[1]} (MySQL error {args[0]})"
        else:
            text = str(orig)
        text = " ".join(text.split())[:300] or type(orig).__name__
        return DatabaseError(scrub(text, self.db.password), kind=kind)

    def _measure(self, conn: sa.Connection, database: str, estimate: int | None, size: int,
                 table: str) -> TableReading:
        """Exact ``COUNT(*)`` while the estimate is below the bound, else the estimate."""
        if estimate is None or estimate < self.settings.exact_count_below:
            rows = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
            return TableReading(database, int(rows), True, size)
        return TableReading(database, int(estimate), False, size)


def classify(exc: BaseException) -> str:
    """Map a driver error to ``connect``, ``query`` or ``timeout``."""
    if isinstance(exc, DatabaseError):
        return exc.kind
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).lower()
    code = getattr(orig, "pgcode", None)
    args = getattr(orig, "args", ())
    mysql_code = args[0] if args and isinstance(args[0], int) else None
    if code in ("57014", "55P03") or mysql_code in (1205, 1969, 3024) or "timed out" in text \
            or "timeout" in text or "max_statement_time" in text:
        return "timeout"
    if mysql_code in (2003, 2005, 2006, 2013, 1045, 1044, 2002) or isinstance(
            orig, ConnectionError) or "could not connect" in text or "connection refused" in text \
            or "server closed the connection" in text or "connection to server" in text \
            or "password authentication failed" in text or "does not exist" in text:
        return "connect"
    return "query"


# --- MySQL / MariaDB ------------------------------------------------------------------------


class MySQLSource(MessagesSource):
    """One pooled engine for the server; ``information_schema`` finds and estimates tables."""

    def __init__(self, db: DatabaseSettings, settings: MessagesSettings) -> None:
        super().__init__(db, settings)
        timeout = settings.query_timeout
        connect_args: dict[str, Any] = {
            "connect_timeout": max(1, round(min(timeout, 10))),
            "read_timeout": max(1, round(db.read_timeout_s or timeout + 2)),
            "write_timeout": max(1, round(timeout + 2)),
        }
        if db.ssl_ca or db.ssl_cert:
            connect_args["ssl"] = {k: str(v) for k, v in
                                   (("ca", db.ssl_ca), ("cert", db.ssl_cert), ("key", db.ssl_key))
                                   if v}
            connect_args["ssl_verify_cert"] = db.ssl_verify
            connect_args["ssl_verify_identity"] = db.ssl_verify
        url = sa.URL.create("mysql+pymysql", username=db.username or None,
                            password=db.password.reveal() if db.password else None,
                            host=db.hostname, port=db.port, query={"charset": "utf8mb4"})
        # Recycle before the server's idle timeout drops a pooled connection under us.
        recycle = -1
        if db.connection_idle_timeout_ms:
            recycle = max(1, int(db.connection_idle_timeout_ms / 1000 * 0.8))
        self.engine = sa.create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=True,
                                       pool_recycle=recycle, connect_args=connect_args)
        event.listen(self.engine, "connect", self._session_limits)

    def _session_limits(self, dbapi_conn: Any, _record: Any) -> None:
        seconds = max(1, round(self.settings.query_timeout))
        with dbapi_conn.cursor() as cur:
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
            with self.engine.connect() as conn:
                found = conn.execute(sa.text(
                    "SELECT TABLE_SCHEMA, TABLE_ROWS, "
                    "COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) "
                    "FROM information_schema.TABLES "
                    "WHERE TABLE_NAME = :table AND TABLE_TYPE = 'BASE TABLE' "
                    "AND TABLE_SCHEMA LIKE :pattern"),
                    {"table": MESSAGES_TABLE, "pattern": like_prefix(self.prefix)}).all()
        except sa.exc.SQLAlchemyError as exc:
            raise self.describe_error(exc) from None
        quote = self.engine.dialect.identifier_preparer.quote
        for schema, estimate, size in found:
            if not self._wanted(schema):
                continue
            try:
                with self.engine.connect() as conn:
                    reading.tables[schema] = self._measure(
                        conn, schema, None if estimate is None else int(estimate), int(size),
                        f"{quote(schema)}.{quote(MESSAGES_TABLE)}")
            except sa.exc.SQLAlchemyError as exc:
                reading.errors[schema] = self.describe_error(exc)
        return reading

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


class PostgresSource(MessagesSource):
    """Lists databases through the maintenance database, then connects to each candidate."""

    def __init__(self, db: DatabaseSettings, settings: MessagesSettings) -> None:
        super().__init__(db, settings)
        import psycopg2.extensions

        psycopg2.extensions.set_wait_callback(_wait_with_deadline)
        self._engines: dict[str, sa.Engine] = {}
        self._lock = threading.Lock()

    def engine_for(self, database: str) -> sa.Engine:
        with self._lock:
            engine = self._engines.get(database)
            if engine is None:
                db, ms = self.db, round(self.settings.query_timeout * 1000)
                connect_args: dict[str, Any] = {
                    "connect_timeout": max(2, round(min(self.settings.query_timeout, 10))),
                    "application_name": "wa-exporter",
                    "options": f"-c statement_timeout={ms} -c lock_timeout={ms}",
                    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                    "keepalives_count": 3,
                }
                if db.ssl_ca or db.ssl_cert:
                    connect_args["sslmode"] = "verify-full" if db.ssl_verify else "require"
                    for key, value in (("sslrootcert", db.ssl_ca), ("sslcert", db.ssl_cert),
                                       ("sslkey", db.ssl_key)):
                        if value:
                            connect_args[key] = str(value)
                url = sa.URL.create("postgresql+psycopg2", username=db.username or None,
                                    password=db.password.reveal() if db.password else None,
                                    host=db.hostname, port=db.port, database=database)
                engine = sa.create_engine(url, pool_size=1, max_overflow=1, pool_pre_ping=True,
                                          connect_args=connect_args)
                self._engines[database] = engine
            return engine

    def _forget(self, keep: set[str]) -> None:
        with self._lock:
            for name in [n for n in self._engines if n not in keep and
                         n != self.settings.maintenance_database]:
                self._engines.pop(name).dispose()

    @contextmanager
    def _connect(self, database: str) -> Iterator[sa.Connection]:
        with client_deadline(self.settings.query_timeout + 2), \
                self.engine_for(database).connect() as conn:
            try:
                yield conn
            except sa.exc.SQLAlchemyError as exc:
                if classify(exc) == "timeout":
                    conn.invalidate()  # the connection may still be mid-query
                raise

    def read(self) -> ServerReading:
        reading = ServerReading()
        try:
            with self._connect(self.settings.maintenance_database) as conn:
                names = conn.execute(sa.text(
                    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate "
                    "AND datname LIKE :pattern ORDER BY datname"),
                    {"pattern": like_prefix(self.prefix)}).scalars().all()
        except sa.exc.SQLAlchemyError as exc:
            raise self.describe_error(exc) from None
        candidates = {n for n in names if self._wanted(n)}
        self._forget(candidates)
        for database in sorted(candidates):
            try:
                with self._connect(database) as conn:
                    row = conn.execute(sa.text(
                        "SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class "
                        "WHERE oid = to_regclass(:table)"), {"table": MESSAGES_TABLE}).first()
                    if row is None:
                        continue
                    estimate = int(row[0]) if row[0] is not None and row[0] >= 0 else None
                    reading.tables[database] = self._measure(conn, database, estimate,
                                                             int(row[1]), MESSAGES_TABLE)
            except sa.exc.SQLAlchemyError as exc:
                error = self.describe_error(exc)
                if error.kind == "connect" and "does not exist" in str(error):
                    continue  # dropped between listing and connecting
                reading.errors[database] = error
        return reading

    def close(self) -> None:
        self._forget(set())
        with self._lock:
            for engine in self._engines.values():
                engine.dispose()
            self._engines.clear()


# --- SQLite (the demo) ----------------------------------------------------------------------


class SQLiteSource(MessagesSource):
    """``WA_DB_HOSTNAME`` is a directory; each ``<name>.db`` file in it is a database."""

    def read(self) -> ServerReading:
        reading = ServerReading()
        directory = Path(self.db.hostname)
        if not directory.is_dir():
            raise DatabaseError(f"{directory} is not a directory", kind="connect")
        for path in sorted(directory.glob("*.db")):
            database = path.stem
            if not self._wanted(database):
                continue
            engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", poolclass=NullPool,
                                      connect_args={"timeout": self.settings.query_timeout})
            try:
                with engine.connect() as conn:
                    if conn.execute(sa.text(
                            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :t"),
                            {"t": MESSAGES_TABLE}).first() is None:
                        continue
                    size = self._size(conn)
                    reading.tables[database] = self._measure(conn, database, None, size,
                                                             MESSAGES_TABLE)
            except sa.exc.SQLAlchemyError as exc:
                reading.errors[database] = self.describe_error(exc)
            finally:
                engine.dispose()
        return reading

    @staticmethod
    def _size(conn: sa.Connection) -> int:
        try:
            return int(conn.execute(sa.text(
                "SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN "
                "(SELECT name FROM sqlite_master WHERE tbl_name = :t)"),
                {"t": MESSAGES_TABLE}).scalar_one())
        except sa.exc.OperationalError:  # built without the dbstat table: whole file
            page_size = conn.execute(sa.text("PRAGMA page_size")).scalar_one()
            pages = conn.execute(sa.text("PRAGMA page_count")).scalar_one()
            return int(page_size) * int(pages)


SOURCES: dict[str, type[MessagesSource]] = {
    "MYSQL": MySQLSource, "PGSQL": PostgresSource, "SQLITE": SQLiteSource,
}


def open_source(db: DatabaseSettings, settings: MessagesSettings) -> MessagesSource:
    return SOURCES[db.engine](db, settings)
