from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import DatabaseServer, connect_server


@pytest.fixture
def mysql() -> Iterator[DatabaseServer]:
    server = connect_server("MYSQL")
    yield server
    server.cleanup()


@pytest.fixture
def postgres() -> Iterator[DatabaseServer]:
    server = connect_server("PGSQL")
    yield server
    server.cleanup()


@pytest.fixture(params=["MYSQL", "PGSQL"], ids=["mariadb", "postgres"])
def db_server(request: pytest.FixtureRequest) -> Iterator[DatabaseServer]:
    """Each test using this runs once against the real MariaDB and once against PostgreSQL."""
    server = connect_server(request.param)
    yield server
    server.cleanup()
