"""SQLite, for the demo: ``WA_DB_HOSTNAME`` is a directory, each ``<name>.db`` file in it a
database, opened read-only for each reading."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import sqlalchemy as sa

from exporter.config import DatabaseSettings, MessagesSettings
from exporter.sources.database.base import (
    MESSAGES_TABLE,
    DatabaseError,
    MessagesSource,
    RowSource,
    ServerReading,
    count_messages,
)

HAS_TABLE = sa.text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :table")
# Pages of the table and its indexes; SQLite built without the dbstat table has none.
TABLE_PAGES = sa.text("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name IN "
                      "(SELECT name FROM sqlite_master WHERE tbl_name = :table)")


class SQLiteSource(MessagesSource):
    """``WA_DB_HOSTNAME`` is a directory; each ``<name>.db`` file in it is a database."""

    def __init__(self, db: DatabaseSettings, settings: MessagesSettings) -> None:
        super().__init__(db, settings)
        import sqlite3

        self.errors = (sqlite3.Error, *self.errors)

    def read(self) -> ServerReading:
        reading = ServerReading()
        for path in self._files():
            database = path.stem
            if not self._wanted(database):
                continue
            url = sa.URL.create("sqlite", database=path.resolve().as_uri() + "?mode=ro",
                                query={"uri": "true"})
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool,
                                      connect_args={"timeout": self.settings.query_timeout})
            try:
                with engine.connect() as conn:
                    if conn.execute(HAS_TABLE, {"table": MESSAGES_TABLE}).first() is None:
                        continue
                    reading.tables[database] = self._measure(
                        database, (None, RowSource.COUNT), self._size(conn),
                        partial(count_messages, conn))
            except self.errors as exc:
                reading.errors[database] = self.describe_error(exc)
            finally:
                engine.dispose()
        return reading

    def list_databases(self) -> list[str]:
        return [path.stem for path in self._files()]

    def _files(self) -> list[Path]:
        directory = Path(self.db.hostname)
        if not directory.is_dir():
            raise DatabaseError(f"{directory} is not a directory", kind="connect")
        return sorted(directory.glob("*.db"))

    def _size(self, conn: sa.Connection) -> int:
        try:
            return int(conn.execute(TABLE_PAGES, {"table": MESSAGES_TABLE}).scalar_one())
        except sa.exc.OperationalError:  # built without the dbstat table: the whole file
            page_size = conn.execute(sa.text("PRAGMA page_size")).scalar_one()
            pages = conn.execute(sa.text("PRAGMA page_count")).scalar_one()
            return int(page_size) * int(pages)
