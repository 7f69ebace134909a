"""``make image`` builds an image that runs the exporter as a non-root user, healthy, with the
Docker socket reached through a supplementary group, and the media and state volumes in place.

Built as the README shows, on the real engine from a Debian base made with debootstrap and
wheels from the package index (tests/image_support.py); no image registry.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import requests
from docker.models.containers import Container

from exporter import __version__
from tests.docker_support import TEST_LABEL, wait_for_log_line
from tests.image_support import (
    BuiltImage,
    ImageUnavailable,
    context_paths,
    make_image,
    remove_exporter_image,
)
from tests.support import parse_metrics, unavailable, value, wait_for

pytestmark = pytest.mark.timeout(900)  # the first run builds the base: debootstrap, ~1 min

DOCKER_SOCKET = Path("/var/run/docker.sock")
USER_ID = 10001  # the Dockerfile's wa-exporter user
MEDIA_FILES = 3  # files put on the stand-in media volume
CONFIG = "collectors:\n  messages:\n    enabled: false\n"  # no database in this test


@pytest.fixture(scope="module")
def client(docker_client: docker.DockerClient) -> docker.DockerClient:
    return docker_client


@pytest.fixture(scope="module")
def built(client: docker.DockerClient) -> Iterator[BuiltImage]:
    try:
        built = make_image(client, f"wa-exporter-test-{os.getpid()}")
    except ImageUnavailable as exc:
        unavailable("root, docker and debootstrap for `make image`", exc)
    size = built.image.attrs["Size"]
    print(f"exporter image: {size / 2**20:.0f} MiB on a {built.base.attrs['Size'] / 2**20:.0f} "
          f"MiB base, make image in {built.seconds:.1f}s")
    yield built
    remove_exporter_image(client, built)


@pytest.fixture(scope="module")
def exporter(client: docker.DockerClient, built: BuiltImage,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """The image run as documented: config, Docker socket with --group-add, media volume."""
    if not DOCKER_SOCKET.is_socket():
        unavailable("Docker socket", f"{DOCKER_SOCKET} is not a socket")
    tmp = tmp_path_factory.mktemp("image")
    config = tmp / "wa-exporter.yml"
    config.write_text(CONFIG)
    config.chmod(0o644)  # read by uid 10001 through the bind mount
    media = tmp / "wamedia"
    media.mkdir(mode=0o755)
    for index in range(MEDIA_FILES):
        (media / f"media-{index}.jpg").write_bytes(b"\xff" * 4096)
    container = client.containers.run(
        built.image.id,
        ["--config.file", "/etc/wa-exporter/wa-exporter.yml"],
        detach=True,
        name=f"wa-exporter-image-test-{os.getpid()}",
        labels={TEST_LABEL: "1"},
        ports={"9864/tcp": ("127.0.0.1", None)},
        group_add=[str(DOCKER_SOCKET.stat().st_gid)],
        volumes={
            str(config): {"bind": "/etc/wa-exporter/wa-exporter.yml", "mode": "ro"},
            str(DOCKER_SOCKET): {"bind": "/var/run/docker.sock", "mode": "rw"},
            str(media): {"bind": "/usr/local/wamedia", "mode": "ro"},
        },
        healthcheck={"interval": 1_000_000_000},  # 1s; the test and timeout are the image's
    )
    yield container
    container.remove(force=True, v=True)  # v: the anonymous state volume too


def published_url(container: Container, path: str) -> str:
    container.reload()
    binding = container.attrs["NetworkSettings"]["Ports"]["9864/tcp"][0]
    return f"http://{binding['HostIp']}:{binding['HostPort']}{path}"


def get(container: Container, path: str) -> requests.Response | None:
    try:
        return requests.get(published_url(container, path), timeout=5)
    except requests.ConnectionError:
        return None


def proc_status(container: Container) -> dict[str, str]:
    exit_code, output = container.exec_run(["cat", "/proc/1/status"])
    assert exit_code == 0, output
    pairs = (line.partition(":") for line in output.decode().splitlines())
    return {key: rest.strip() for key, _, rest in pairs}


def test_build_context_is_the_package_alone() -> None:
    top_level = {path.split("/")[0] for path in context_paths()}
    # wheels/: what `make image` downloaded for an offline build, when it has run here
    assert top_level - {"wheels"} == {".dockerignore", "Dockerfile", "README.md", "docs",
                                      "exporter", "pyproject.toml"}
    # exporter/runbooks.md links to it: the page served at /runbooks.
    assert [path for path in context_paths() if path.startswith("docs/")] == ["docs/runbooks.md"]
    assert not [path for path in context_paths() if "__pycache__" in path]


@pytest.mark.docker
def test_make_image_tags_the_version_and_latest_and_runs_it(built: BuiltImage) -> None:
    assert sorted(built.image.tags) == sorted(built.tags)
    assert built.tags[0].endswith(f":{__version__}") and built.tags[1].endswith(":latest")
    assert built.version_output.startswith(f"wa-exporter {__version__} (python 3.11")


@pytest.mark.docker
def test_image_is_labelled_and_configured_to_run_unprivileged(built: BuiltImage) -> None:
    config = built.image.attrs["Config"]
    assert config["Labels"]["org.opencontainers.image.version"] == __version__
    for name in ("title", "description", "source", "licenses"):
        assert config["Labels"][f"org.opencontainers.image.{name}"]
    assert config["User"] == str(USER_ID)
    assert config["Entrypoint"] == ["wa-exporter"]
    assert "9864/tcp" in config["ExposedPorts"]
    assert "/var/lib/wa-exporter" in config["Volumes"]
    assert config["Healthcheck"]["Test"][0] == "CMD"


@pytest.mark.docker
def test_version_runs_in_the_image(client: docker.DockerClient, built: BuiltImage) -> None:
    container = client.containers.run(built.image.id, ["--version"], detach=True,
                                      labels={TEST_LABEL: "1"})
    try:
        assert container.wait(timeout=30)["StatusCode"] == 0
        output = container.logs().decode()
    finally:
        container.remove(force=True, v=True)  # v: the anonymous state volume too
    assert output.startswith(f"wa-exporter {__version__} (python 3.")


@pytest.mark.docker
def test_serves_metrics_as_a_non_root_process(exporter: Container) -> None:
    response = wait_for(lambda: get(exporter, "/metrics"), timeout=30, interval=0.2,
                        what="/metrics through the published port")
    assert response.status_code == 200
    build_info = [line for line in response.text.splitlines()
                  if line.startswith("whatsapp_exporter_build_info{")]
    assert build_info and f'version="{__version__}"' in build_info[0]
    status = proc_status(exporter)
    assert status["Uid"].split() == [str(USER_ID)] * 4  # real, effective, saved, filesystem
    assert str(DOCKER_SOCKET.stat().st_gid) in status["Groups"].split()


@pytest.mark.docker
def test_serves_the_runbooks_the_alerts_link_to(exporter: Container) -> None:
    response = wait_for(lambda: get(exporter, "/runbooks"), timeout=30, interval=0.2,
                        what="/runbooks through the published port")
    assert response.status_code == 200
    assert '<h3 id="whatsappmessagestablelarge">WhatsAppMessagesTableLarge</h3>' in response.text


@pytest.mark.docker
def test_healthcheck_turns_healthy(exporter: Container) -> None:
    def health() -> str | None:
        exporter.reload()
        state = exporter.attrs["State"]
        assert state["Status"] == "running", exporter.logs().decode()[-2000:]
        status = state["Health"]["Status"]
        assert status != "unhealthy", state["Health"]["Log"]
        return status if status == "healthy" else None

    wait_for(health, timeout=30, interval=0.2, what="State.Health.Status healthy")


@pytest.mark.docker
def test_reaches_the_docker_socket_and_the_media_volume(exporter: Container) -> None:
    wait_for(lambda: (r := get(exporter, "/-/ready")) is not None and r.status_code == 200,
             timeout=60, interval=0.2, what="/-/ready")
    response = get(exporter, "/metrics")
    assert response is not None
    samples = parse_metrics(response.text)
    success = "whatsapp_exporter_collector_success"
    assert value(samples, success, collector="containers") == 1  # the socket, as uid 10001
    assert value(samples, success, collector="volume") == 1
    assert value(samples, success, collector="volume_scan") == 1
    files = value(samples, "whatsapp_media_volume_stored_files", volume="whatsappMedia")
    assert files == MEDIA_FILES  # counted by the scan's worker processes in the image


@pytest.mark.docker
def test_state_volume_is_writable_by_the_exporter_user(exporter: Container) -> None:
    exit_code, output = exporter.exec_run(
        ["python", "-c", "import os; open('/var/lib/wa-exporter/probe', 'w').close(); "
                         "print(os.stat('/var/lib/wa-exporter').st_uid)"])
    assert exit_code == 0, output
    assert output.decode().strip() == str(USER_ID)


@pytest.mark.docker
def test_stops_cleanly_on_docker_stop(client: docker.DockerClient, built: BuiltImage,
                                      tmp_path: Path) -> None:
    config = tmp_path / "wa-exporter.yml"
    config.write_text(CONFIG)
    config.chmod(0o644)
    container = client.containers.run(
        built.image.id, ["--config.file", "/etc/wa-exporter/wa-exporter.yml"], detach=True,
        labels={TEST_LABEL: "1"},
        volumes={str(config): {"bind": "/etc/wa-exporter/wa-exporter.yml", "mode": "ro"}})
    try:
        wait_for_log_line(container, "msg=listening", timeout=30)
        started = time.monotonic()
        container.stop(timeout=10)
        stopped_in = time.monotonic() - started
        container.reload()
        assert container.attrs["State"]["ExitCode"] == 0, container.logs().decode()[-2000:]
        assert stopped_in < 5  # SIGTERM handled by PID 1, not the engine's SIGKILL after 10s
        assert "msg=stopped" in container.logs().decode()
    finally:
        container.remove(force=True, v=True)
