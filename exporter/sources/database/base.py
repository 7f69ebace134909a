"""What every engine's source shares: the readings, the typed error, the interface, and the
SQLAlchemy plumbing (a kept, pinged connection; Core statements for the count).

Every query goes through SQLAlchemy: Core constructs, or ``text()`` with bound parameters,
never a DB-API cursor, so a database named ``wa_50%off`` is quoted and escaped by the
dialect, once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import sqlalchemy as sa

from exporter.config import DatabaseSettings, MessagesSettings, scrub
from exporter.errors import SourceError

MESSAGES_TABLE = "messages"
MAX_LISTED = 20  # databases named in a message, so a shared server cannot flood the log


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


def count_messages(conn: sa.Connection, schema: str | None = None) -> int:
    """An exact ``COUNT(*)`` of ``messages`` (in ``schema``, where the engine has them)."""
    table = sa.table(MESSAGES_TABLE, schema=schema)
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def pooled_engine(url: sa.URL, connect_args: dict[str, Any], *, checkout_timeout: float,
                  recycle: float | None = None,
                  dbapi_connect: Callable[..., Any] | None = None) -> sa.Engine:
    """A SQLAlchemy engine that keeps one connection between refreshes (a refresh every
    minute should not pay a TLS handshake each time): pinged before reuse, and renewed after
    ``recycle`` seconds, before a server's idle timeout drops it. Every driver setting,
    timeouts included, goes through ``connect_args``; ``dbapi_connect``, if given, makes the
    DB-API connection from them instead of the driver's ``connect``."""
    engine = sa.create_engine(
        url, poolclass=sa.pool.QueuePool, pool_size=1, max_overflow=0,
        pool_timeout=checkout_timeout, pool_pre_ping=True,
        pool_recycle=-1 if recycle is None else recycle, isolation_level="AUTOCOMMIT",
        connect_args=connect_args)
    _use_connect(engine, dbapi_connect)
    return engine


def session_engine(url: sa.URL, connect_args: dict[str, Any],
                   dbapi_connect: Callable[..., Any] | None = None) -> sa.Engine:
    """An engine whose every connection is a session of its own, closed with it (the cluster
    lock's: the locks live as long as that session), in autocommit mode: a session that holds
    a lock for an hour must not hold a transaction open with it."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT",
                              connect_args=connect_args)
    _use_connect(engine, dbapi_connect)
    return engine


def _use_connect(engine: sa.Engine, dbapi_connect: Callable[..., Any] | None) -> None:
    if dbapi_connect is not None:
        sa.event.listen(engine, "do_connect",
                        lambda _dialect, _record, cargs, cparams: dbapi_connect(*cargs, **cparams))


@contextmanager
def checked_out(engine: sa.Engine, prepare: Callable[[sa.Connection], None] | None = None
                ) -> Iterator[sa.Connection]:
    """The engine's connection; one that saw any error is invalidated, never reused (after a
    client-side deadline its protocol state is unknown). ``prepare`` runs once on each new
    connection (session limits), before its first use."""
    conn = engine.connect()
    try:
        if prepare is not None and not conn.info.get("prepared"):
            prepare(conn)
            conn.info["prepared"] = True
        yield conn
    except BaseException:
        conn.invalidate()
        raise
    finally:
        conn.close()


class MessagesSource:
    """Discovers the WA databases on one server and measures their ``messages`` tables; one
    subclass per engine (:mod:`.mysql`, :mod:`.postgres`, :mod:`.sqlite`)."""

    # What a query or a connection attempt may raise: the driver's and SQLAlchemy's errors.
    errors: tuple[type[BaseException], ...] = (sa.exc.DBAPIError, sa.exc.TimeoutError)

    def __init__(self, db: DatabaseSettings, settings: MessagesSettings) -> None:
        self.db = db
        self.settings = settings
        self.prefix = db.name_prefix

    def read(self) -> ServerReading:
        raise NotImplementedError

    def session(self, timeout: float | None = None) -> sa.Connection:
        """A new session of its own (for the cluster lock), in autocommit mode; with
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

    def idle_timeout(self, conn: sa.Connection) -> float | None:
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
