"""Log metrics of WA containers through ``docker exec`` and from bind-mounted directories."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import docker
import pytest
from docker.models.containers import Container

from exporter.config import ContainersSettings
from exporter.sources.docker import DOCKER_POOLS, ContainerDirectory, DockerEngine, list_logs
from tests.docker_support import (
    LIVE_LOGS,
    LOG_DIR,
    exec_sh,
    fill_archive,
    start_wa_container,
    write_live_log,
)
from tests.support import ExporterProcess, run_exporter, series, value, wait_for

pytestmark = pytest.mark.docker


def config(project: str, logs: str = "") -> str:
    return f"""
collectors:
  messages: {{enabled: false}}
  volume: {{enabled: false}}
  volume_scan: {{enabled: false}}
  containers: {{enabled: false, compose_project: {project}}}
  logs:
    interval: 200ms
    timeout: 20s
{logs}"""


def live_sizes(samples: dict, container: str) -> dict[str, float]:  # type: ignore[type-arg]
    return {dict(labels)["file"]: v
            for labels, v in series(samples, "whatsapp_log_file_size_bytes").items()
            if dict(labels)["container"] == container}


ODD_LIVE = {  # printf-escaped name in the container -> label value
    "with space.log": "with space.log",
    "new\\nline.log": "new\nline.log",
    "latin1-\\351.log": "latin1-\\xe9.log",
}


def make_odd_files(container: Container) -> None:
    """Odd live names, an odd archived name, a symlink and a subdirectory (neither counted)."""
    script = (
        'cd /var/log/whatsapp || exit 1\n'
        'for name in "$@"; do printf abc > "$(printf "$name")"; done\n'
        'printf 12345 > "archive/$(printf "odd\\nname \\377.gz")"\n'
        'touch -d @1600000000 "archive/$(printf "odd\\nname \\377.gz")"\n'
        'ln -s web.log link.log && mkdir -p subdir && printf x > subdir/inner.log\n'
    )
    result = exec_sh(container, script, *ODD_LIVE)
    assert result.exit_code == 0, result


def test_live_sizes_and_archive_figures_per_container_through_one_exec(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    core = start_wa_container(client, role="coreapp", service="wacore", project=project)
    write_live_log(web, "web.log", 5000)
    write_live_log(core, "coreapp.log", 7777)
    names = fill_archive(core, 4, prefix="coreapp.log", newest_mtime=1_700_000_000,
                         step_seconds=3600)
    make_odd_files(web)
    archived_bytes = sum(int(exec_sh(core, 'stat -c %s "/var/log/whatsapp/archive/$1"',
                                     name).stdout) for name in names)

    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_log_archive_files", 4.0, container=core.name,
                                       role="coreapp")

    assert live_sizes(samples, core.name) == {"coreapp.log": 7777, "wa-service-coreapp.log": 0}
    assert live_sizes(samples, web.name) == {"web.log": 5000, "access.log": 0, "error.log": 0,
                                             **dict.fromkeys(ODD_LIVE.values(), 3.0)}
    labels = {"container": core.name, "role": "coreapp"}
    assert value(samples, "whatsapp_log_archive_size_bytes", **labels) == archived_bytes
    assert value(samples, "whatsapp_log_archive_oldest_timestamp_seconds",
                 **labels) == 1_700_000_000 - 3 * 3600
    web_labels = {"container": web.name, "role": "webapp"}
    assert value(samples, "whatsapp_log_archive_files", **web_labels) == 1
    assert value(samples, "whatsapp_log_archive_size_bytes", **web_labels) == 5
    assert value(samples, "whatsapp_log_archive_oldest_timestamp_seconds",
                 **web_labels) == 1_600_000_000
    assert value(samples, "whatsapp_log_listing_success", **web_labels) == 1
    assert value(samples, "whatsapp_exporter_collector_success", collector="logs") == 1


def busybox(container: Container, *argv: str) -> int:
    """Run a busybox applet directly: the tests below replace /bin/sh."""
    exit_code, _ = container.exec_run(["/bin/busybox", *argv])
    return int(exit_code)


def replace_sh(container: Container, *lines: str) -> None:
    """Make the container's /bin/sh (the listing's interpreter) run ``lines`` instead."""
    script = "\\n".join(["#!/bin/busybox sh", *lines, ""])
    assert busybox(container, "sh", "-c", f'rm /bin/sh && printf "{script}" > /bin/sh '
                                          "&& chmod +x /bin/sh") == 0


def assert_skipped_and_the_others_reported(exporter: ExporterProcess, doomed: Container,
                                           web: Container, file: str, size: int) -> None:
    """After ``doomed`` stopped under a listing: ``file`` written to ``web`` shows up, the
    doomed container has no log figures, and the logs collector did not fail."""
    samples = exporter.wait_metric("whatsapp_log_file_size_bytes", float(size),
                                   container=web.name, role="webapp", file=file)
    assert live_sizes(samples, doomed.name) == {}
    assert value(samples, "whatsapp_exporter_collector_success", collector="logs") == 1, \
        exporter.log
    assert not [line for line in exporter.lines
                if "refresh failed" in line and "collector=logs" in line], exporter.log


def test_a_container_stopping_mid_exec_is_skipped_and_the_others_reported(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    # Listed first (names sort). Its `sh` hangs once the listing exec starts, until the
    # container is killed. (busybox runs its own applets, so only sh itself can be swapped.)
    doomed = start_wa_container(client, role="coreapp", service="wacore", project=project)
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    replace_sh(doomed, "touch /tmp/listing-started", "exec sleep 120")

    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
        wait_for(lambda: busybox(doomed, "test", "-e", "/tmp/listing-started") == 0,
                 what="the listing exec to start in the doomed container")
        write_live_log(web, "written-during-the-hung-exec.log", 42)
        doomed.kill()
        assert_skipped_and_the_others_reported(exporter, doomed, web,
                                               "written-during-the-hung-exec.log", 42)


def test_a_container_stopping_as_the_exec_fails_with_126_is_skipped_not_an_error(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    # The listing's `sh` stops the container (its main process ends on SIGTERM) and exits
    # 126, as the OCI runtime answers an exec into a container that is going away.
    doomed = start_wa_container(client, role="coreapp", service="wacore", project=project)
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    replace_sh(doomed, "kill -TERM 1", "exit 126")

    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
        wait_for(lambda: doomed.reload() or doomed.status == "exited",
                 what="the listing to stop the doomed container")
        write_live_log(web, "written-after-the-stop.log", 7)
        assert_skipped_and_the_others_reported(exporter, doomed, web,
                                               "written-after-the-stop.log", 7)


def test_a_hung_listing_marks_its_container_and_the_others_stay_fresh(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    hung = start_wa_container(client, role="coreapp", service="wacore", project=project)
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    replace_sh(hung, "exec sleep 600")
    fast = config(project).replace("timeout: 20s", "timeout: 2s")

    with run_exporter(config=fast, tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_log_listing_success", 0.0, container=hung.name,
                                       role="coreapp")
        assert value(samples, "whatsapp_log_listing_success", container=web.name,
                     role="webapp") == 1
        # A file written now shows up while the hung listing is still pending.
        write_live_log(web, "fresh.log", 11)
        samples = exporter.wait_metric("whatsapp_log_file_size_bytes", 11.0, container=web.name,
                                       role="webapp", file="fresh.log")
        assert (value(samples, "whatsapp_exporter_collector_duration_seconds",
                      collector="logs") or 99) < 2
        assert any(f"listing in {hung.name} did not finish in time" in line
                   for line in exporter.lines)


def test_a_container_without_a_log_directory_is_marked_and_the_others_reported(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    broken = start_wa_container(client, role="master", service="master1", project=project)
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    assert exec_sh(broken, "rm -rf /var/log/whatsapp").exit_code == 0

    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_log_listing_success", 0.0,
                                       container=broken.name, role="master")
        assert value(samples, "whatsapp_log_listing_success", container=web.name,
                     role="webapp") == 1
        assert set(live_sizes(samples, web.name)) == set(LIVE_LOGS["webapp"])
        assert value(samples, "whatsapp_exporter_collector_success", collector="logs") == 0
        assert any(f"{broken.name} has no /var/log/whatsapp" in line for line in exporter.lines)


def test_stopped_containers_drop_out_and_new_files_show_up(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    core = start_wa_container(client, role="coreapp", service="wacore", project=project)
    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_log_listing_success", 1.0, container=core.name,
                             role="coreapp")
        core.stop(timeout=5)
        write_live_log(web, "after-stop.log", 9)
        samples = exporter.wait_metric("whatsapp_log_file_size_bytes", 9.0, container=web.name,
                                       role="webapp", file="after-stop.log")
        assert value(samples, "whatsapp_log_listing_success", container=core.name,
                     role="coreapp") is None
        assert live_sizes(samples, core.name) == {}


def put_archived(container: Container, *names: str) -> None:
    """Archived files as the client's rotation names them: gzipped if the name says so."""
    script = ('cd /var/log/whatsapp/archive || exit 1\n'
              'for name in "$@"; do\n'
              '  case "$name" in\n'
              '    *.gz) echo "archived $name" | gzip > "$name" ;;\n'
              '    *) echo "archived $name, never compressed" > "$name" ;;\n'
              '  esac || exit 1\n'
              'done\n')
    result = exec_sh(container, script, *names)
    assert result.exit_code == 0, result


def families(samples: dict, container: str) -> dict[str, float]:  # type: ignore[type-arg]
    return {dict(labels)["family"]: v
            for labels, v in series(samples, "whatsapp_log_archive_family_files").items()
            if dict(labels)["container"] == container}


def test_archives_are_counted_per_log_family_and_uncompressed_ones_apart(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    core = start_wa_container(client, role="coreapp", service="wacore", project=project)
    # A healthy webapp: logrotate keeps 30 of each log, here in its two naming styles.
    put_archived(web, *(f"web.log.{i}.gz" for i in range(1, 31)),
                 *(f"access.log-202601{i:02d}.gz" for i in range(1, 31)),
                 *(f"error.log.{i}.gz" for i in range(2, 31)), "error.log.1", "notes.txt")
    # A coreapp whose script never removes old files: 31 of one log.
    put_archived(core, *(f"coreapp.log.{i}.gz" for i in range(1, 32)))

    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_log_archive_files", 91.0, container=web.name,
                                       role="webapp")
        samples = exporter.wait_metric("whatsapp_log_archive_files", 31.0, container=core.name,
                                       role="coreapp")

    assert families(samples, web.name) == {"web.log": 30, "access.log": 30, "error.log": 30,
                                           "other": 1}
    assert families(samples, core.name) == {"coreapp.log": 31, "wa-service-coreapp.log": 0}
    web_labels = {"container": web.name, "role": "webapp"}
    uncompressed = sum(int(exec_sh(web, 'stat -c %s "/var/log/whatsapp/archive/$1"',
                                   name).stdout) for name in ("error.log.1", "notes.txt"))
    assert value(samples, "whatsapp_log_archive_uncompressed_files", **web_labels) == 2
    assert value(samples, "whatsapp_log_archive_uncompressed_size_bytes",
                 **web_labels) == uncompressed
    core_labels = {"container": core.name, "role": "coreapp"}
    assert value(samples, "whatsapp_log_archive_uncompressed_files", **core_labels) == 0
    assert value(samples, "whatsapp_log_archive_uncompressed_size_bytes", **core_labels) == 0


def test_host_mode_reads_bind_mounted_directories(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    logs = tmp_path / "waweb-logs"
    (logs / "archive").mkdir(parents=True)
    (logs / "web.log").write_bytes(b"x" * 321)
    os.symlink("web.log", logs / "link.log")
    for i in range(3):
        archived = logs / "archive" / f"web.log.{i}.gz"
        archived.write_bytes(b"z" * 10)
        os.utime(archived, (1_650_000_000 + i, 1_650_000_000 + i))
    missing = f"{project}-not-mounted"
    host = (f"    mode: host\n    host_paths: {{{web.name}: {logs}, "
            f"{missing}: {tmp_path / 'absent'}}}\n")

    with run_exporter(config=config(project, host), tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_log_file_size_bytes", 321.0,
                                       container=web.name, role="webapp", file="web.log")
        assert live_sizes(samples, web.name) == {"web.log": 321}
        labels = {"container": web.name, "role": "webapp"}
        assert value(samples, "whatsapp_log_archive_files", **labels) == 3
        assert value(samples, "whatsapp_log_archive_size_bytes", **labels) == 30
        assert value(samples, "whatsapp_log_archive_oldest_timestamp_seconds",
                     **labels) == 1_650_000_000
        assert value(samples, "whatsapp_log_listing_success", container=missing,
                     role="unknown") == 0


def socket_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the listing's own fd, closed by now
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def test_listings_leave_a_few_idle_engine_connections_not_one_per_exec(
        client: docker.DockerClient, project: str) -> None:
    """Every exec has URLs of its own; docker-py keeps a pool (and its socket) per URL, 25 by
    default. The exporter's client keeps at most DOCKER_POOLS, however many listings run."""
    core = start_wa_container(client, role="coreapp", service="wacore", project=project)
    write_live_log(core, "coreapp.log", 123)
    engine = DockerEngine(timeout=30)
    directory = ContainerDirectory(engine, ContainersSettings(compose_project=project))
    [container] = directory.discover()
    before = socket_fds()
    try:
        for _ in range(20):  # 40 distinct exec URLs, beyond docker-py's 25 pools
            entries = list_logs(engine, container, LOG_DIR)
            assert (b"coreapp.log", 123) in {(e.name, e.size) for e in entries}
        held = socket_fds() - before
    finally:
        engine.close()
    assert held <= DOCKER_POOLS
    assert socket_fds() <= before  # closing the engine's client lets every one go
