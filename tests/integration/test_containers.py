"""WA container discovery on the real Docker engine, through the real exporter process."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.docker_support import (
    DEFAULT_TAG,
    TEST_LABEL,
    compose_name,
    start_wa_container,
    wait_for_log_line,
)
from tests.support import run_exporter, series, value, wait_for

pytestmark = pytest.mark.docker

DOCKER_SOCKET = "/var/run/docker.sock"


def config(project: str, extra: str = "") -> str:
    return f"""
collectors:
  messages: {{enabled: false}}
  volume: {{enabled: false}}
  volume_scan: {{enabled: false}}
  logs: {{enabled: false}}
  containers:
    interval: 200ms
    timeout: 5s
    compose_project: {project}
{extra}"""


class EngineProxy:
    """TCP in front of the engine's unix socket: ``cut()`` makes the engine vanish (every
    connection reset, new ones refused), ``forward()`` brings it back. Counts refusals, so a
    test knows refreshes happened while the engine was away."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.refused = 0
        self._cut = False
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv()
                sock.close()
            self._open.clear()

    def forward(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                if self._cut:
                    self.refused += 1
                    conn.close()
                    continue
                upstream = socket.socket(socket.AF_UNIX)
                upstream.connect(DOCKER_SOCKET)
                self._open += [conn, upstream]
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def proxy() -> Iterator[EngineProxy]:
    proxy = EngineProxy()
    yield proxy
    proxy.close()


def up(samples: dict, container: str) -> float | None:  # type: ignore[type-arg]
    return next((v for labels, v in series(samples, "whatsapp_container_up").items()
                 if dict(labels)["container"] == container), None)


def test_containers_are_recognised_by_service_image_or_name_and_others_ignored(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    core = start_wa_container(client, role="coreapp", service="wacore2", project=project)
    master = start_wa_container(client, role="master", service="master1", project=project)
    database = start_wa_container(client, role="webapp", service="db", project=project)
    # A renamed service, recognised by its image name only.
    image_tag = f"waxtest/whatsapp-web:{project}"
    client.images.get(DEFAULT_TAG).tag(image_tag)
    try:
        renamed = start_wa_container(client, role="webapp", service="frontend", project=project,
                                     image=image_tag)
        # Started outside compose and listed by name in the settings.
        loose_name = f"{project}-hand-started"
        loose = client.containers.run(DEFAULT_TAG, detach=True, name=loose_name,
                                      labels={TEST_LABEL: "1",
                                              "com.docker.compose.project": project})
        wait_for_log_line(loose, "wa-standin ready")
        extra = f"    names: {{{loose_name}: master, {project}-never-started: coreapp}}\n"
        with run_exporter(config=config(project, extra), tmp_path=tmp_path) as exporter:
            samples = exporter.wait_metric("whatsapp_exporter_collector_success", 1.0,
                                           collector="containers")
            found = {dict(labels)["container"]: (dict(labels)["role"], v)
                     for labels, v in series(samples, "whatsapp_container_up").items()}
    finally:
        client.images.remove(image_tag)
    assert found == {
        web.name: ("webapp", 1.0),
        core.name: ("coreapp", 1.0),
        master.name: ("master", 1.0),
        renamed.name: ("webapp", 1.0),
        loose_name: ("master", 1.0),
        f"{project}-never-started": ("coreapp", 0.0),
    }
    assert database.name not in found


def test_stopped_recreated_and_new_containers_are_followed_without_a_restart(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_container_up", 1.0, container=web.name, role="webapp")

        web.stop(timeout=5)
        exporter.wait_metric("whatsapp_container_up", 0.0, container=web.name, role="webapp")

        web.remove()
        again = start_wa_container(client, role="webapp", service="waweb", project=project)
        assert again.id != web.id and again.name == web.name
        exporter.wait_metric("whatsapp_container_up", 1.0, container=web.name, role="webapp")

        core = start_wa_container(client, role="coreapp", service="wacore", project=project)
        samples = exporter.wait_metric("whatsapp_container_up", 1.0, container=core.name,
                                       role="coreapp")
        assert value(samples, "whatsapp_exporter_collector_success", collector="containers") == 1


def test_a_vanished_engine_turns_into_metrics_and_one_log_line_then_recovers(
        client: docker.DockerClient, project: str, proxy: EngineProxy, tmp_path: Path) -> None:
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    with run_exporter(env={"DOCKER_HOST": proxy.url}, config=config(project),
                      tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_container_up", 1.0, container=web.name, role="webapp")

        proxy.cut()
        samples = exporter.wait_metric("whatsapp_exporter_collector_success", 0.0,
                                       collector="containers")
        assert up(samples, web.name) == 0
        wait_for(lambda: proxy.refused >= 5, what="five refreshes against the vanished engine")
        failures = [line for line in exporter.lines
                    if "collector refresh failed" in line and "collector=containers" in line]
        assert len(failures) == 1, failures
        assert "unreachable" in failures[0]

        proxy.forward()
        samples = exporter.wait_metric("whatsapp_exporter_collector_success", 1.0,
                                       collector="containers")
        assert up(samples, web.name) == 1
        recovered = [line for line in exporter.lines
                     if "collector recovered" in line and "collector=containers" in line]
        assert len(recovered) == 1


def test_an_engine_absent_at_start_is_reported_and_picked_up_when_it_comes(
        client: docker.DockerClient, project: str, proxy: EngineProxy, tmp_path: Path) -> None:
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    proxy.cut()
    with run_exporter(env={"DOCKER_HOST": proxy.url}, config=config(project),
                      tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_exporter_collector_success", 0.0,
                                       collector="containers")
        assert series(samples, "whatsapp_container_up") == {}
        assert exporter.get("/-/healthy").status_code == 200

        proxy.forward()
        exporter.wait_metric("whatsapp_container_up", 1.0, container=web.name, role="webapp")


def test_compose_names_of_both_generations_are_recognised(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    # docker-compose v1 named containers project_service_1; v2 uses dashes. Labels decide.
    v1 = start_wa_container(client, role="coreapp", service="wacore", project=project,
                            name=f"{project}_wacore_1")
    v2_name = compose_name(project, "waweb")
    start_wa_container(client, role="webapp", service="waweb", project=project)
    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_container_up", 1.0, container=v1.name,
                                       role="coreapp")
        assert value(samples, "whatsapp_container_up", container=v2_name, role="webapp") == 1
