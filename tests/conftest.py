from __future__ import annotations

import secrets
from collections.abc import Iterator

import docker
import pytest

from tests.support import IN_CI, DatabaseServer, connect_server, unavailable


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


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """The real Docker engine (a missing engine fails in CI, skips elsewhere)."""
    from tests.docker_support import DockerUnavailable, ensure_docker

    try:
        client = ensure_docker()
    except DockerUnavailable as exc:
        unavailable("the Docker engine", exc)
    yield client
    client.close()


@pytest.fixture(scope="session")
def standin_image(docker_client: docker.DockerClient) -> str:
    """The stand-in WA container image, built once per session (and cached by content)."""
    from tests.docker_support import build_standin_image

    return build_standin_image(docker_client)


@pytest.fixture
def compose_project(docker_client: docker.DockerClient) -> Iterator[str]:
    """A compose project name of the test's own; its containers are removed afterwards."""
    from tests.docker_support import remove_test_containers

    name = f"wax{secrets.token_hex(3)}"
    yield name
    remove_test_containers(docker_client, project=name)
