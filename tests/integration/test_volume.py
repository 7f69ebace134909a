"""The media volume collectors in the real exporter: statvfs figures, the scan, Docker volumes."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.docker_support import DockerUnavailable, ensure_docker
from tests.du import du_bytes
from tests.support import run_exporter, value, wait_for


def config(volume: str, scan: str = "") -> str:
    return f"""
collectors:
  messages: {{enabled: false}}
  containers: {{enabled: false}}
  logs: {{enabled: false}}
  volume:
    interval: 200ms
{volume}
  volume_scan:
    interval: 200ms
    workers: 2
{scan}"""


def media_tree(root: Path) -> int:
    """Write a small media tree with a hard link and symlinks; return its regular files."""
    for i in range(12):
        sub = root / "shared" / f"{i:02x}"
        sub.mkdir(parents=True)
        for j in range(10):
            (sub / f"media-{j}.jpg").write_bytes(os.urandom(100 * (j + 1)))
    os.link(root / "shared" / "00" / "media-0.jpg", root / "shared" / "01" / "same-inode.jpg")
    os.symlink("..", root / "shared" / "02" / "parent")
    (root / "shared" / "03" / "name with\nnewline \xe9.ogg").write_bytes(b"o" * 4000)
    return 12 * 10 + 1


def test_filesystem_figures_and_scan_of_the_media_path(tmp_path: Path) -> None:
    media = tmp_path / "wamedia"
    files = media_tree(media)
    volume = f"    path: {media}\n    name: biz_whatsappMedia\n"

    with run_exporter(config=config(volume), tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_exporter_collector_success", 1.0,
                                       collector="volume_scan")
        raw = os.statvfs(media)

    label = {"volume": "biz_whatsappMedia"}
    assert value(samples, "whatsapp_media_volume_size_bytes",
                 **label) == raw.f_blocks * raw.f_frsize
    assert value(samples, "whatsapp_media_volume_files", **label) == raw.f_files
    assert 0 < (value(samples, "whatsapp_media_volume_avail_bytes", **label) or 0) <= (
        value(samples, "whatsapp_media_volume_free_bytes", **label) or 0)
    assert 0 < (value(samples, "whatsapp_media_volume_files_free", **label) or 0) <= raw.f_files
    assert value(samples, "whatsapp_media_volume_used_bytes", **label) == du_bytes(media)
    assert value(samples, "whatsapp_media_volume_stored_files", **label) == files
    assert value(samples, "whatsapp_media_volume_scan_errors", **label) == 0
    assert value(samples, "whatsapp_exporter_collector_success", collector="volume") == 1


def test_the_scan_keeps_its_own_slower_schedule(tmp_path: Path) -> None:
    media = tmp_path / "wamedia"
    media_tree(media)
    volume = f"    path: {media}\n"

    with run_exporter(config=config(volume).replace("interval: 200ms\n    workers",
                                                    "interval: 1h\n    workers"),
                      tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_exporter_collector_success", 1.0, collector="volume_scan")
        (media / "late.jpg").write_bytes(b"j" * 8192)

        def statvfs_refreshed_again() -> dict | None:  # type: ignore[type-arg]
            samples = exporter.metrics()
            last = "whatsapp_exporter_collector_last_success_timestamp_seconds"
            volume_at = value(samples, last, collector="volume") or 0
            scan_at = value(samples, last, collector="volume_scan") or 0
            return samples if volume_at > scan_at + 1 else None

        samples = wait_for(statvfs_refreshed_again, what="three statvfs rounds after the scan")
        assert value(samples, "whatsapp_media_volume_stored_files",
                     volume="whatsappMedia") == 12 * 10 + 1  # the late file waits for the next scan


def test_an_unreadable_directory_is_reported_not_fatal(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    media = tmp_path / "wamedia"
    files = media_tree(media)
    locked = media / "shared" / "05"
    locked.chmod(0)
    # The exporter runs as root without CAP_DAC_OVERRIDE/READ_SEARCH, so mode bits apply to it.
    wrapper = tmp_path / "python-without-dac"
    wrapper.write_text("#!/bin/sh\nexec setpriv --bounding-set -dac_override,-dac_read_search "
                       f'{sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(wrapper))
    try:
        with run_exporter(config=config(f"    path: {media}\n"), tmp_path=tmp_path) as exporter:
            samples = exporter.wait_metric("whatsapp_media_volume_scan_errors", 1.0,
                                           volume="whatsappMedia")
    finally:
        locked.chmod(0o755)
    assert value(samples, "whatsapp_media_volume_stored_files",
                 volume="whatsappMedia") == files - 10
    assert value(samples, "whatsapp_exporter_collector_success", collector="volume_scan") == 1


def test_a_missing_media_path_fails_both_collectors_and_nothing_else(tmp_path: Path) -> None:
    absent = tmp_path / "not-mounted"
    with run_exporter(config=config(f"    path: {absent}\n"), tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_exporter_collector_success", 0.0, collector="volume_scan")
        samples = exporter.wait_metric("whatsapp_exporter_collector_success", 0.0,
                                       collector="volume")
        assert value(samples, "whatsapp_media_volume_size_bytes", volume="whatsappMedia") is None
        assert exporter.get("/-/healthy").status_code == 200
        assert any(f"{absent} does not exist" in line for line in exporter.lines)


@pytest.fixture
def docker_client() -> Iterator[docker.DockerClient]:
    try:
        client = ensure_docker()
    except DockerUnavailable as exc:
        pytest.skip(str(exc))
    yield client
    client.close()


@pytest.mark.docker
def test_the_media_volume_is_found_through_docker_by_its_compose_name(
        docker_client: docker.DockerClient, tmp_path: Path) -> None:
    name = f"waxmedia{secrets.token_hex(3)}"  # ours alone, whatever else runs on the engine
    project = "biz"
    created = docker_client.volumes.create(f"{project}_{name}", labels={"wa-exporter.test": "1"})
    try:
        mountpoint = Path(created.attrs["Mountpoint"])
        files = media_tree(mountpoint)
        volume = (f"    source: docker\n    name: {name}\n"
                  f"  containers: {{enabled: false, compose_project: {project}}}\n")
        with run_exporter(config=config(volume).replace("  containers: {enabled: false}\n", ""),
                          tmp_path=tmp_path) as exporter:
            samples = exporter.wait_metric("whatsapp_media_volume_stored_files", float(files),
                                           volume=f"{project}_{name}")
        assert value(samples, "whatsapp_media_volume_used_bytes",
                     volume=f"{project}_{name}") == du_bytes(mountpoint)
        raw = os.statvfs(mountpoint)
        assert value(samples, "whatsapp_media_volume_size_bytes",
                     volume=f"{project}_{name}") == raw.f_blocks * raw.f_frsize
    finally:
        created.remove(force=True)


def test_a_scan_longer_than_its_timeout_continues_and_serves_only_complete_figures(
        tmp_path: Path) -> None:
    media = tmp_path / "wamedia"
    for a in range(100):  # 10,000 directories: several times one 100 ms timeout's work
        for b in range(100):
            (media / f"{a:02x}" / f"{b:02x}").mkdir(parents=True)
    (media / "00" / "00" / "first.jpg").write_bytes(b"f" * 5000)
    scan = ("    timeout: 100ms\n    full_scan_every: 1\n")  # every pass full: every pass long
    volume = f"    path: {media}\n"
    label = {"volume": "whatsappMedia"}

    with run_exporter(config=config(volume, scan).replace("workers: 2", "workers: 1"),
                      tmp_path=tmp_path) as exporter:
        before = du_bytes(media)
        samples = exporter.wait_metric("whatsapp_media_volume_used_bytes", float(before),
                                       timeout=60, **label)
        # One pass spanned several refreshes, each stopped at its timeout.
        assert (value(samples, "whatsapp_media_volume_scan_last_full_duration_seconds",
                      **label) or 0) > 0.2
        assert value(samples, "whatsapp_media_volume_scan_directories_listed",
                     **label) == 1 + 100 + 100 * 100
        assert any("continuing at the next refresh" in line for line in exporter.lines)
        (media / "63" / "63" / "late.jpg").write_bytes(b"l" * 40_000)
        after = du_bytes(media)
        served: set[float | None] = set()

        def new_figure_served() -> bool:
            samples = exporter.metrics()
            served.add(value(samples, "whatsapp_media_volume_used_bytes", **label))
            return value(samples, "whatsapp_media_volume_used_bytes", **label) == after

        wait_for(new_figure_served, 60, what="the next complete pass")
        assert served <= {float(before), float(after)}  # never a partial pass's sum


def test_the_media_volume_metrics_pass_promtool(tmp_path: Path) -> None:
    media = tmp_path / "wamedia"
    media_tree(media)
    with run_exporter(config=config(f"    path: {media}\n"), tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_exporter_collector_success", 1.0, collector="volume_scan")
        text = exporter.get("/metrics").text
    scan_lines = [line for line in text.splitlines() if "whatsapp_media_volume_" in line]
    assert len(scan_lines) == 3 * 14  # HELP, TYPE and one sample for each of the 14 families
    result = subprocess.run(["promtool", "check", "metrics"],
                            input=("\n".join(scan_lines) + "\n").encode(),
                            capture_output=True, timeout=30, check=False)
    assert result.returncode == 0 and not result.stdout and not result.stderr, (
        result.stdout.decode() + result.stderr.decode())
