"""The Docker engine stopped and started again, while alerts ask for cleanup.

The exporter reaches the real engine only through a proxy in front of its socket: ``cut()``
is a stopped engine (every connection reset, new ones refused), ``forward()`` the engine
started again. Stopping the shared machine's dockerd itself would disturb everything else."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.docker_support import (
    DockerUnavailable,
    build_standin_image,
    ensure_docker,
    remove_test_containers,
    start_wa_container,
)
from tests.faults.harness import (
    ScrapeWatch,
    assert_every_run_finished,
    audit_records,
    config,
    finished,
    fire,
    log_lines,
    outcomes,
    post_alert,
    wait_finished,
)
from tests.support import (
    ExporterProcess,
    Samples,
    new_prefix,
    run_exporter,
    series,
    unavailable,
    wait_for,
)
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.docker

DOCKER_SOCKET = "/var/run/docker.sock"


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    try:
        client = ensure_docker()
        build_standin_image(client)
    except DockerUnavailable as exc:
        unavailable("the Docker engine", exc)
    yield client
    client.close()


@pytest.fixture
def project(engine: docker.DockerClient) -> Iterator[str]:
    name = new_prefix().replace("_", "")  # a compose project of this test's own
    yield name
    remove_test_containers(engine, project=name)


@pytest.fixture
def engine_proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy(DOCKER_SOCKET)
    yield proxy
    proxy.close()


def up(samples: Samples, project: str) -> dict[str, float]:
    return {dict(labels)["container"]: v
            for labels, v in series(samples, "whatsapp_container_up").items()
            if dict(labels)["container"].startswith(project)}


@dataclass
class Install:
    """Two WA containers on the real engine, and an exporter that reaches it by the proxy."""

    exporter: ExporterProcess
    proxy: TcpProxy
    state: Path
    project: str
    containers: list[str]

    def all_up(self, expected: float) -> dict[str, float]:
        return dict.fromkeys(self.containers, expected)

    def wait_containers(self, expected: float) -> None:
        wait_for(lambda: up(self.exporter.metrics(), self.project) == self.all_up(expected),
                 what=f"whatsapp_container_up {expected} for {self.containers}")


@pytest.fixture
def install(engine: docker.DockerClient, project: str, engine_proxy: TcpProxy,
            tmp_path: Path) -> Iterator[Install]:
    web = start_wa_container(engine, role="webapp", service="waweb", project=project)
    core = start_wa_container(engine, role="coreapp", service="wacore", project=project)
    state = tmp_path / "state"
    cfg = config(tmp_path, state_dir=state, allowed=("cleanup",),
                 containers={"interval": "200ms", "timeout": "2s", "compose_project": project},
                 actions={"cleanup": {"timeout": "30s"}})
    env = {"DOCKER_HOST": f"tcp://127.0.0.1:{engine_proxy.port}"}
    with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exporter:
        found = Install(exporter, engine_proxy, state, project, sorted([web.name, core.name]))
        found.wait_containers(1.0)
        yield found
    assert "Traceback" not in exporter.log


def test_docker_engine_stopped_and_started_is_reported_and_followed_without_a_restart(
        install: Install) -> None:
    exporter, proxy = install.exporter, install.proxy
    with ScrapeWatch(exporter) as scrapes:
        proxy.cut()
        samples = exporter.wait_metric("whatsapp_exporter_collector_success", 0.0,
                                       collector="containers")
        assert up(samples, install.project) == install.all_up(0.0)
        refused = proxy.refused
        wait_for(lambda: proxy.refused >= refused + 3, what="refreshes against the stopped engine")
        assert exporter.get("/-/healthy").status_code == 200

        proxy.forward()
        install.wait_containers(1.0)
        samples = exporter.wait_metric("whatsapp_exporter_collector_success", 1.0,
                                       collector="containers")
    assert {v for s in scrapes.samples for v in up(s, install.project).values()} == {0.0, 1.0}
    failures = log_lines(exporter, "collector refresh failed", "collector=containers")
    assert len(failures) == 1 and "unreachable" in failures[0], failures
    assert len(log_lines(exporter, "collector recovered", "collector=containers")) == 1

    # The action side is back too: one cleanup on every container, then the cooldown.
    assert fire(exporter, "cleanup", 1)["outcome"] == "started"
    [done] = wait_finished(install.state)
    assert fire(exporter, "cleanup", 2)["outcome"] == "skipped_cooldown"
    assert done["result"] == "success", done
    assert sorted(done["containers"]) == install.containers
    records = audit_records(install.state)
    assert outcomes(records) == ["started", "skipped_cooldown"]
    assert_every_run_finished(records)


def test_a_cleanup_asked_for_while_the_engine_is_stopped_does_not_block_the_one_after(
        install: Install) -> None:
    exporter, proxy = install.exporter, install.proxy
    with ScrapeWatch(exporter):
        proxy.cut()
        exporter.wait_metric("whatsapp_exporter_collector_success", 0.0,
                             collector="containers")
        status, during = post_alert(exporter, "cleanup", 1)
        proxy.forward()
        install.wait_containers(1.0)
    if during["outcome"] == "started":  # then it must end, and not as a success
        [failed] = wait_finished(install.state)
        assert failed["result"] != "success", failed
    else:
        assert during["outcome"] in ("rejected", "skipped_lock_unavailable"), during
    status, after = post_alert(exporter, "cleanup", 2)
    assert (status, after["outcome"]) == (200, "started"), after
    done = wait_finished(install.state, len(finished(audit_records(install.state))) + 1)[-1]
    assert done["result"] == "success", done
    records = audit_records(install.state)
    assert outcomes(records) == [during["outcome"], "started"]
    assert_every_run_finished(records)
