from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import IN_CI, DatabaseServer, connect_server


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """In CI every service must be there: a skipped test (a missing service) fails the run."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must have every service: {report.longrepr}"
