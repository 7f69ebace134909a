from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faults.harness import wa_env
from tests.support import DatabaseServer, connect_server
from tests.tcp_proxy import TcpProxy
from tests.wa_standin.schema import create_messages_table, insert_messages
from tests.wa_standin.server import StandIn


@pytest.fixture(params=[pytest.param("MYSQL", marks=pytest.mark.mysql, id="mariadb"),
                        pytest.param("PGSQL", marks=pytest.mark.postgres, id="postgres")])
def db(request: pytest.FixtureRequest) -> Iterator[DatabaseServer]:
    """The real MariaDB, then the real PostgreSQL, each marked so ``-m`` can pick one."""
    server = connect_server(request.param)
    yield server
    server.cleanup()


@pytest.fixture
def db_proxy(db: DatabaseServer) -> Iterator[TcpProxy]:
    """The exporter reaches the database only through this proxy; the test breaks it."""
    proxy = TcpProxy((db.host, db.port))
    yield proxy
    proxy.close()


@pytest.fixture
def sqlite_world(tmp_path: Path) -> Iterator[tuple[dict[str, str], StandIn]]:
    """A messages table of 50 rows in a SQLite database, and the WA API stand-in on it."""
    database = tmp_path / "db"
    database.mkdir()
    url = f"sqlite:///{database / 'wa_messagestore.db'}"
    engine = sa.create_engine(url)
    create_messages_table(engine)
    insert_messages(engine, 50)
    engine.dispose()
    with StandIn(url, gc_delay=0.01) as standin:
        yield {"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(database),
               "WA_DB_NAME_PREFIX": "wa_", **wa_env(standin)}, standin
