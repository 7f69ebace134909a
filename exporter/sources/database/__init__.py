"""Reaching the WA client's database server: discover its databases and measure ``messages``.

One :class:`MessagesSource` per engine, behind one interface (:mod:`.base`): MySQL/MariaDB
(:mod:`.mysql`), PostgreSQL (:mod:`.postgres`), SQLite for the demo (:mod:`.sqlite`). Each
finds every database whose name starts with ``WA_DB_NAME_PREFIX`` and holds a ``messages``
table, and reads its row count (exact below a bound, the engine's estimate above it) and
its size. Every query goes through SQLAlchemy and runs under a server-side timeout and a
client-side deadline, so a locked table or a black-holed connection ends in a
:class:`DatabaseError`. Import from here.
"""

from __future__ import annotations

import logging
import sys

from exporter.config import DatabaseSettings, MessagesSettings
from exporter.sources.database.base import (
    MAX_LISTED,
    MESSAGES_TABLE,
    DatabaseError,
    MessagesSource,
    RowSource,
    ServerReading,
    TableReading,
)
from exporter.sources.database.mysql import MySQLSource
from exporter.sources.database.postgres import PostgresSource, client_deadline
from exporter.sources.database.sqlite import SQLiteSource

log = logging.getLogger(__name__)

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


__all__ = [
    "DatabaseError",
    "MessagesSource",
    "MySQLSource",
    "PostgresSource",
    "RowSource",
    "SQLiteSource",
    "ServerReading",
    "TableReading",
    "client_deadline",
    "empty_prefix_warning",
    "open_counting_source",
    "open_source",
    "warn_ignored_settings",
]
