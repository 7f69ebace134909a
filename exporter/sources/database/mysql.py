"""MySQL and MariaDB: one kept connection for the server; ``information_schema`` finds and
estimates the ``messages`` tables of every schema under the prefix."""

from __future__ import annotations

import os
import ssl
import sys
import threading
from collections.abc import Callable
from functools import cache, partial
from typing import Any

import sqlalchemy as sa

from exporter.config import DatabaseSettings, MessagesSettings
from exporter.sources.database.base import (
    MESSAGES_TABLE,
    MessagesSource,
    RowSource,
    ServerReading,
    checked_out,
    count_messages,
    like_prefix,
    pooled_engine,
    session_engine,
)

URL = sa.URL.create("mysql+pymysql")

DISCOVER = sa.text(
    "SELECT TABLE_SCHEMA, TABLE_ROWS, COALESCE(DATA_LENGTH, 0) + COALESCE(INDEX_LENGTH, 0) "
    "FROM information_schema.TABLES "
    "WHERE TABLE_NAME = :table AND TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA LIKE :pattern")
SCHEMAS = sa.text(
    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME "
    "NOT IN ('information_schema', 'mysql', 'performance_schema', 'sys') ORDER BY SCHEMA_NAME")


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
def pymysql_connection() -> Callable[..., Any]:
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
        self.errors = (pymysql.err.Error, *self.errors)
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
        self.engine = pooled_engine(URL, self._connect_args, recycle=recycle,
                                    checkout_timeout=timeout + 2,
                                    dbapi_connect=self._connection)
        self._sessions: dict[float | None, sa.Engine] = {}

    def session(self, timeout: float | None = None) -> sa.Connection:
        engine = self._sessions.get(timeout)
        if engine is None:
            args = self._connect_args
            if timeout is not None:
                seconds = max(1, round(timeout))
                args = {**args, "connect_timeout": seconds, "read_timeout": seconds,
                        "write_timeout": seconds}
            engine = self._sessions[timeout] = session_engine(URL, args, self._connection)
        conn = engine.connect()
        try:
            self._session_limits(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _session_limits(self, conn: sa.Connection) -> None:
        """Every statement bounded by ``query_timeout`` on the server, lock waits included."""
        seconds = max(1, round(self.settings.query_timeout))
        if conn.dialect.is_mariadb:  # type: ignore[attr-defined]
            conn.execute(sa.text("SET SESSION max_statement_time = :s"), {"s": seconds})
        else:
            conn.execute(sa.text("SET SESSION max_execution_time = :ms"), {"ms": seconds * 1000})
            # MySQL 8 caches information_schema statistics for a day by default.
            conn.execute(sa.text("SET SESSION information_schema_stats_expiry = 0"))
        conn.execute(sa.text("SET SESSION lock_wait_timeout = :s"), {"s": seconds})
        conn.execute(sa.text("SET SESSION innodb_lock_wait_timeout = :s"), {"s": seconds})

    def read(self) -> ServerReading:
        reading = ServerReading()
        try:
            with checked_out(self.engine, self._session_limits) as conn:
                found = conn.execute(DISCOVER, {"table": MESSAGES_TABLE,
                                                "pattern": like_prefix(self.prefix)}).all()
        except self.errors as exc:
            raise self.describe_error(exc) from None
        for schema, estimate, size in found:
            if not self._wanted(schema):
                continue
            try:
                with checked_out(self.engine, self._session_limits) as conn:
                    reading.tables[schema] = self._measure(
                        schema,
                        (None if estimate is None else int(estimate), RowSource.TABLE_ROWS),
                        int(size), partial(count_messages, conn, schema))
            except self.errors as exc:
                reading.errors[schema] = self.describe_error(exc)
        return reading

    def list_databases(self) -> list[str]:
        try:
            with checked_out(self.engine, self._session_limits) as conn:
                return list(conn.execute(SCHEMAS).scalars())
        except self.errors as exc:
            raise self.describe_error(exc) from None

    def idle_timeout(self, conn: sa.Connection) -> float | None:
        # The guide's WA_DB_CONNECTION_IDLE_TIMEOUT says it for MySQL.
        ms = self.db.connection_idle_timeout_ms
        return ms / 1000 if ms else None

    def close(self) -> None:
        self.engine.dispose()
        for engine in self._sessions.values():
            engine.dispose()
