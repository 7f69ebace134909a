from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import DatabaseServer, connect_server
from tests.tcp_proxy import TcpProxy


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
