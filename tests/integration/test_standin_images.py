"""The wa-standin image and its cleanup.sh behave like the WA on-premises client's log cleanup."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import docker
import pytest
from docker.models.containers import Container

from tests.docker_support import (
    ARCHIVE_DIR,
    ARCHIVE_KEEP,
    CONTEXT_HASH_LABEL,
    DEFAULT_TAG,
    LIVE_LOGS,
    LOG_DIR,
    ROTATE_BOUND,
    TEST_LABEL,
    build_standin_image,
    context_hash,
    exec_sh,
    fill_archive,
    list_dir,
    remove_test_containers,
    reset_logs,
    run_cleanup,
    start_wa_container,
    wait_for_log_line,
    write_live_log,
)

pytestmark = pytest.mark.docker

# A project name of our own, so parallel runs on one engine don't remove each other's containers.
PROJECT = f"wastandin{os.getpid()}"
TS = r"\d{8}T\d{6}Z"  # cleanup.sh's UTC timestamp in archive names


@pytest.fixture(scope="module")
def client(docker_client: docker.DockerClient) -> Iterator[docker.DockerClient]:
    build_standin_image(docker_client)  # the build itself is under test here
    yield docker_client
    remove_test_containers(docker_client, project=PROJECT)


@pytest.fixture(scope="module")
def waweb(client: docker.DockerClient) -> Container:
    return start_wa_container(client, role="webapp", service="waweb", project=PROJECT)


@pytest.fixture(scope="module")
def wacore(client: docker.DockerClient) -> Container:
    return start_wa_container(client, role="coreapp", service="wacore", project=PROJECT)


@pytest.fixture(scope="module")
def master(client: docker.DockerClient) -> Container:
    return start_wa_container(client, role="master", service="master1", project=PROJECT)


@pytest.fixture
def containers(waweb: Container, wacore: Container, master: Container) -> dict[str, Container]:
    """The three long-lived containers by role, with their logs reset before each test."""
    by_role = {"webapp": waweb, "coreapp": wacore, "master": master}
    for container in by_role.values():
        reset_logs(container)
    return by_role


@pytest.fixture
def writer(client: docker.DockerClient) -> Iterator[Container]:
    """A coreapp container whose main process keeps appending to its live logs."""
    container = start_wa_container(
        client,
        role="coreapp",
        service="wacore2",
        project=PROJECT,
        env={"WA_LOG_WRITER": "1", "WA_LOG_INTERVAL": "0.1"},
    )
    yield container
    container.remove(force=True)


def gunzipped_size(container: Container, path: str) -> int:
    result = exec_sh(container, 'zcat "$1" | wc -c', path)
    assert result.exit_code == 0, result
    return int(result.stdout.strip())


def source_name(archived: str) -> str:
    """'web.log.20240101T000000Z.gz' -> 'web.log' (fails the test if the name is malformed)."""
    match = re.fullmatch(rf"(.+)\.{TS}(?:-\d+)?\.gz", archived)
    assert match, archived
    return match.group(1)


def last_write_round(container: Container) -> int:
    rounds = re.findall(r"wa-standin wrote (\d+)", container.logs().decode())
    return int(rounds[-1]) if rounds else 0


def test_image_is_built_once_and_labelled(client: docker.DockerClient) -> None:
    image = client.images.get(DEFAULT_TAG)
    assert image.labels[CONTEXT_HASH_LABEL] == context_hash()
    started = time.monotonic()
    assert build_standin_image(client) == image.id
    assert time.monotonic() - started < 2  # cached: no rebuild


def test_containers_carry_compose_labels_and_names(containers: dict[str, Container]) -> None:
    expected = {"webapp": "waweb", "coreapp": "wacore", "master": "master1"}
    for role, container in containers.items():
        container.reload()
        service = expected[role]
        assert container.status == "running"
        assert container.name == f"{PROJECT}-{service}-1"
        assert container.labels["com.docker.compose.project"] == PROJECT
        assert container.labels["com.docker.compose.service"] == service
        assert container.labels["com.docker.compose.container-number"] == "1"
        assert container.labels["com.docker.compose.oneoff"] == "False"
        assert container.labels[TEST_LABEL] == "1"
        assert f"WA_ROLE={role}" in container.attrs["Config"]["Env"]


def test_each_role_has_its_live_logs(containers: dict[str, Container]) -> None:
    for role, container in containers.items():
        assert set(list_dir(container, LOG_DIR)) == set(LIVE_LOGS[role])
        assert list_dir(container, ARCHIVE_DIR) == {}
        assert exec_sh(container, "test -x /opt/whatsapp/bin/cleanup.sh").exit_code == 0


@pytest.mark.parametrize("role", ["webapp", "coreapp", "master"])
def test_default_bound_rotates_only_files_above_it(
    containers: dict[str, Container], role: str
) -> None:
    container = containers[role]
    bound = ROTATE_BOUND[role]
    big, at_bound, *_ = LIVE_LOGS[role]
    write_live_log(container, big, bound + 1)
    write_live_log(container, at_bound, bound)  # "above the bound" is strict

    result = run_cleanup(container)

    assert result.exit_code == 0, result
    assert result.stderr == ""
    archive = list_dir(container, ARCHIVE_DIR)
    assert len(archive) == 1
    (archived,) = archive
    assert re.fullmatch(rf"{re.escape(big)}\.{TS}\.gz", archived)
    assert 0 < archive[archived] < bound // 100  # really compressed
    assert gunzipped_size(container, f"{ARCHIVE_DIR}/{archived}") == bound + 1
    live = list_dir(container, LOG_DIR)
    assert live[big] == 0
    assert live[at_bound] == bound
    assert f"rotated {big} -> archive/{archived} ({bound + 1} bytes)" in result.stdout
    assert result.stdout.splitlines()[-1] == (
        f"rotated {big}; removed 0 archived files; archive now 1 files"
    )


def test_rotate_bytes_override(containers: dict[str, Container]) -> None:
    container = containers["coreapp"]
    write_live_log(container, "coreapp.log", 4097)
    write_live_log(container, "wa-service-coreapp.log", 4096)

    result = run_cleanup(container, env={"WA_ROTATE_BYTES": "4096"})

    assert result.exit_code == 0, result
    assert [source_name(name) for name in list_dir(container, ARCHIVE_DIR)] == ["coreapp.log"]
    assert list_dir(container, LOG_DIR) == {"coreapp.log": 0, "wa-service-coreapp.log": 4096}


def test_nothing_to_do(containers: dict[str, Container]) -> None:
    result = run_cleanup(containers["master"])
    assert result.exit_code == 0, result
    assert result.stdout == "rotated nothing; removed 0 archived files; archive now 0 files\n"


def test_archive_of_40_is_trimmed_to_newest_30(containers: dict[str, Container]) -> None:
    container = containers["webapp"]
    names = fill_archive(container, 40)  # oldest first

    result = run_cleanup(container)

    assert result.exit_code == 0, result
    assert set(list_dir(container, ARCHIVE_DIR)) == set(names[-ARCHIVE_KEEP:])
    assert result.stdout.splitlines()[-1] == (
        "rotated nothing; removed 10 archived files; archive now 30 files"
    )


def test_thirty_of_each_log_are_kept_as_logrotate_keeps_them(
        containers: dict[str, Container]) -> None:
    container = containers["webapp"]
    web = fill_archive(container, ARCHIVE_KEEP + 1, prefix="web.log")  # oldest first
    access = fill_archive(container, ARCHIVE_KEEP, prefix="access.log")
    error = fill_archive(container, ARCHIVE_KEEP, prefix="error.log")

    result = run_cleanup(container)

    assert result.exit_code == 0, result
    # Only web.log's oldest goes: 90 files in three logs of 30 is what rotation keeps.
    assert set(list_dir(container, ARCHIVE_DIR)) == {*web[1:], *access, *error}
    assert result.stdout.splitlines()[-1] == (
        "rotated nothing; removed 1 archived files; archive now 90 files"
    )


def test_logrotate_and_the_scripts_names_of_one_log_count_together(
        containers: dict[str, Container]) -> None:
    container = containers["coreapp"]
    stamped = fill_archive(container, ARCHIVE_KEEP - 2, prefix="coreapp.log",
                           newest_mtime=1_700_000_000)
    numbered = ["coreapp.log.1.gz", "coreapp.log-20230101", "coreapp.log.2.bz2"]
    older = 1_700_000_000 - ARCHIVE_KEEP * 3600  # older than every stamped file
    script = ('cd "$1" && shift && for n in "$@"; do echo x > "$n" && '
              'touch -d "@$((' + str(older) + ' - ${#n}))" "$n" || exit 1; done')
    assert exec_sh(container, script, ARCHIVE_DIR, *numbered).exit_code == 0
    other_log = fill_archive(container, 5, prefix="wa-service-coreapp.log",
                             newest_mtime=older - 3600)  # the oldest of all, but another log's

    result = run_cleanup(container)

    assert result.exit_code == 0, result
    # 31 files of coreapp.log in three naming styles: its oldest goes, and only that one.
    assert set(list_dir(container, ARCHIVE_DIR)) == {
        *stamped, "coreapp.log.1.gz", "coreapp.log.2.bz2", *other_log}
    assert "removed 1 archived files; archive now 35 files" in result.stdout


def test_fresh_rotation_counts_towards_the_30(containers: dict[str, Container]) -> None:
    container = containers["coreapp"]
    names = fill_archive(container, 30, prefix="coreapp.log")
    write_live_log(container, "coreapp.log", 2000)

    result = run_cleanup(container, env={"WA_ROTATE_BYTES": "1000"})

    assert result.exit_code == 0, result
    archive = set(list_dir(container, ARCHIVE_DIR))
    fresh_names = archive - set(names)
    assert [source_name(name) for name in fresh_names] == ["coreapp.log"]
    assert archive == set(names[1:]) | {*fresh_names}  # only the oldest one went
    assert len(archive) == ARCHIVE_KEEP
    assert "removed 1 archived files; archive now 30 files" in result.stdout


def test_names_with_spaces(containers: dict[str, Container]) -> None:
    container = containers["master"]
    names = fill_archive(container, 33, prefix="old master log")
    write_live_log(container, "wa service master.log", 5000)
    write_live_log(container, "small one.log", 10)

    result = run_cleanup(container, env={"WA_ROTATE_BYTES": "1000"})

    assert result.exit_code == 0, result
    archive = list_dir(container, ARCHIVE_DIR)
    (fresh,) = set(archive) - set(names)
    assert re.fullmatch(rf"wa service master\.log\.{TS}\.gz", fresh)
    assert gunzipped_size(container, f"{ARCHIVE_DIR}/{fresh}") == 5000
    assert set(archive) - {fresh} == set(names[3:])  # "old master log" keeps its newest 30
    live = list_dir(container, LOG_DIR)
    assert live["wa service master.log"] == 0
    assert live["small one.log"] == 10
    assert result.stdout.splitlines()[-1] == (
        "rotated wa service master.log; removed 3 archived files; archive now 31 files"
    )


def test_forced_failure_exits_non_zero_and_changes_nothing(
    containers: dict[str, Container],
) -> None:
    container = containers["webapp"]
    write_live_log(container, "web.log", 5000)

    result = run_cleanup(container, env={"WA_CLEANUP_FAIL": "1", "WA_ROTATE_BYTES": "1000"})

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "forced failure" in result.stderr
    assert list_dir(container, LOG_DIR)["web.log"] == 5000
    assert list_dir(container, ARCHIVE_DIR) == {}


def test_unwritable_archive_fails_and_keeps_the_live_log(
    containers: dict[str, Container],
) -> None:
    container = containers["webapp"]
    write_live_log(container, "error.log", 5000)

    # uid 65534 may read the live logs but not write to the root-owned archive directory.
    result = run_cleanup(container, env={"WA_ROTATE_BYTES": "1000"}, user="65534")

    assert result.exit_code == 1, result
    assert "cannot compress error.log" in result.stderr
    assert list_dir(container, LOG_DIR)["error.log"] == 5000
    assert list_dir(container, ARCHIVE_DIR) == {}


def test_bad_configuration_exits_2(containers: dict[str, Container]) -> None:
    container = containers["coreapp"]
    bad_role = run_cleanup(container, env={"WA_ROLE": "bogus"})
    assert bad_role.exit_code == 2
    assert "unknown WA_ROLE" in bad_role.stderr
    bad_bytes = run_cleanup(container, env={"WA_ROTATE_BYTES": "12MB"})
    assert bad_bytes.exit_code == 2
    assert "WA_ROTATE_BYTES" in bad_bytes.stderr


def test_cleanup_sleep_knob(containers: dict[str, Container]) -> None:
    started = time.monotonic()
    result = run_cleanup(containers["master"], env={"WA_CLEANUP_SLEEP": "0.3"})
    assert result.exit_code == 0, result
    assert time.monotonic() - started >= 0.3


def test_log_writer_keeps_writing_through_a_rotation(writer: Container) -> None:
    now = last_write_round(writer)
    wait_for_log_line(writer, f"wa-standin wrote {now + 2}", timeout=10, exact=True)
    sizes = list_dir(writer, LOG_DIR)
    assert sizes["coreapp.log"] > 0
    assert sizes["coreapp.log"] == sizes["wa-service-coreapp.log"]

    result = run_cleanup(writer, env={"WA_ROTATE_BYTES": "0"})  # rotate anything non-empty

    assert result.exit_code == 0, result
    rotated = {source_name(name) for name in list_dir(writer, ARCHIVE_DIR)}
    assert rotated == {"coreapp.log", "wa-service-coreapp.log"}
    # The truncated live file keeps receiving lines: the writer appends with >>.
    now = last_write_round(writer)
    wait_for_log_line(writer, f"wa-standin wrote {now + 2}", timeout=10, exact=True)
    tail = exec_sh(writer, 'tail -n 1 "$1"', f"{LOG_DIR}/coreapp.log")
    assert "[coreapp] stand-in log line" in tail.stdout
    assert "\0" not in tail.stdout  # truncated in place, no hole left behind


def test_docker_stop_is_fast(writer: Container) -> None:
    started = time.monotonic()
    writer.stop(timeout=10)
    elapsed = time.monotonic() - started
    writer.reload()
    assert writer.status == "exited"
    assert writer.attrs["State"]["ExitCode"] == 0  # ended by its TERM trap, not SIGKILL
    assert elapsed < 1.0
    assert "wa-standin stopping" in writer.logs().decode()
