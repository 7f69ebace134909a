"""The media volume scan, statvfs figures and log-directory listings on real odd trees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.sources.files import FilesError, LogEntry, list_log_dir, volume_stats
from exporter.sources.media import MediaScan
from exporter.sources.media_state import ScanResult
from tests.du import du_bytes, regular_files


def scan_tree(path: Path, *, workers: int = 1, timeout: float | None = None) -> ScanResult:
    """One full pass, as the exporter's first refresh makes."""
    return MediaScan(path, workers=workers).scan(timeout)

ODD_NAMES = [b"with space.jpg", b"new\nline.jpg", b"latin1-\xe9\xff.jpg", b" leading", b"-dash"]


def write(path: Path | bytes, size: int = 100) -> None:
    with open(path, "wb") as f:
        f.write(b"x" * size)


@pytest.fixture
def odd_tree(tmp_path: Path) -> Path:
    """Nested directories, odd names, hard links across subtrees, symlink loops, an empty dir."""
    root = tmp_path / "media"
    for i in range(20):  # enough directories that parallel scans hand them to several workers
        sub = root / f"d{i:02d}" / "inner"
        sub.mkdir(parents=True)
        for j in range(5):
            write(sub / f"f{j}.jpg", 1000 * (j + 1))
    raw = os.fsencode(root / "d00")
    for name in ODD_NAMES:
        write(os.path.join(raw, name), 5000)
    os.mkdir(os.path.join(raw, b"dir \n\xfe"))
    write(os.path.join(raw, b"dir \n\xfe", b"inside"), 7000)
    # One inode under three names in three different subtrees: counted once.
    write(root / "d01" / "linked.bin", 64 * 1024)
    os.link(root / "d01" / "linked.bin", root / "d07" / "linked-again.bin")
    os.link(root / "d01" / "linked.bin", root / "d15" / "inner" / "third-name.bin")
    # Symlinks to a parent, to itself and to a file: never followed, never counted as files.
    os.symlink("..", root / "d02" / "inner" / "up")
    os.symlink("loop", root / "d03" / "loop")
    os.symlink("/", root / "d04" / "to-root")
    os.symlink("../d00/with space.jpg", root / "d05" / "to-file")
    (root / "empty").mkdir()
    return root


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_scan_matches_du_and_counts_each_regular_file_once(odd_tree: Path, workers: int) -> None:
    usage = scan_tree(odd_tree, workers=workers)

    assert (usage.allocated_bytes, usage.files, usage.errors) == (
        du_bytes(odd_tree), regular_files(odd_tree), 0)
    # 100 plain + 5 odd names + 1 inside the odd directory + 1 hard-linked inode
    assert usage.files == 107


def test_a_hard_linked_file_is_counted_once_however_the_tree_is_split(tmp_path: Path) -> None:
    root = tmp_path / "media"
    for i in range(40):
        (root / f"d{i}").mkdir(parents=True)
    write(root / "d0" / "big", 1 << 20)
    for i in range(1, 40):
        os.link(root / "d0" / "big", root / f"d{i}" / "big")

    one = scan_tree(root, workers=1)
    many = scan_tree(root, workers=4)

    assert (one.allocated_bytes, one.files) == (many.allocated_bytes, many.files)
    assert one.files == 1
    assert one.allocated_bytes == du_bytes(root)


def test_the_scan_does_not_follow_a_symlinked_directory_loop(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "a" / "b").mkdir(parents=True)
    write(root / "a" / "b" / "f")
    os.symlink(root, root / "a" / "b" / "back-to-root")
    os.symlink(root / "a", root / "a" / "b" / "back-to-a")

    usage = scan_tree(root, workers=2)

    assert usage.files == 1
    assert usage.allocated_bytes == du_bytes(root)


def test_a_directory_of_100k_files_is_counted_in_full(tmp_path: Path) -> None:
    root = tmp_path / "media"
    flat = root / "flat"
    flat.mkdir(parents=True)
    fd = os.open(flat, os.O_RDONLY)
    try:
        for i in range(100_000):
            os.close(os.open(f"{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    finally:
        os.close(fd)

    usage = scan_tree(root, workers=2)

    assert usage.files == 100_000
    assert usage.allocated_bytes == du_bytes(root)
    assert usage.errors == 0


def test_a_file_removed_between_listing_and_stat_is_skipped_not_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "media"
    root.mkdir()
    for name in ("keep1", "gone", "keep2"):
        write(root / name)
    real_scandir = os.scandir

    class RemovingScandir:
        """Lists the directory, then deletes ``gone`` just before handing its entry out."""

        def __init__(self, fd: int) -> None:
            self.fd = fd
            self.inner = real_scandir(fd)

        def __enter__(self) -> Iterator[os.DirEntry[str]]:
            return self._entries()

        def _entries(self) -> Iterator[os.DirEntry[str]]:
            for entry in self.inner:
                if entry.name == "gone":
                    os.unlink(entry.name, dir_fd=self.fd)
                yield entry

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

    monkeypatch.setattr(os, "scandir", RemovingScandir)

    usage = scan_tree(root, workers=1)

    assert (usage.files, usage.errors) == (2, 0)
    assert not (root / "gone").exists()


UNPRIVILEGED_SCAN = """
import json, sys
from pathlib import Path
from exporter.sources.media import MediaScan
usage = MediaScan(Path(sys.argv[1]), workers=int(sys.argv[2])).scan()
print(json.dumps([usage.allocated_bytes, usage.files, usage.errors]))
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_an_unreadable_directory_is_counted_as_an_error_and_the_rest_is_scanned(
        odd_tree: Path, workers: int) -> None:
    locked = odd_tree / "d09"
    locked_bytes = du_bytes(locked) - os.lstat(locked).st_blocks * 512
    before = scan_tree(odd_tree)
    locked.chmod(0)
    try:
        # Root reads any directory; without CAP_DAC_OVERRIDE/READ_SEARCH the mode bits apply.
        result = subprocess.run(
            ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
             sys.executable, "-c", UNPRIVILEGED_SCAN, str(odd_tree), str(workers)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2])
    finally:
        locked.chmod(0o755)
    allocated, count, errors = json.loads(result.stdout)

    assert errors == 1
    assert count == before.files - 5  # d09/inner holds five files
    assert allocated == before.allocated_bytes - locked_bytes


def test_the_scan_reports_a_missing_path_and_a_file_in_its_place(tmp_path: Path) -> None:
    with pytest.raises(FilesError, match="does not exist") as missing:
        scan_tree(tmp_path / "nothing")
    write(tmp_path / "file")
    with pytest.raises(FilesError, match="not a directory"):
        scan_tree(tmp_path / "file")
    assert missing.value.kind == "missing"


def test_a_scan_past_its_timeout_kills_its_workers(odd_tree: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    hung = tmp_path / "hung-worker"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")  # a worker stuck on a dead NFS server
    hung.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(hung))
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = real_popen(*args, **kwargs)  # type: ignore[call-overload]
        started.append(proc)
        return proc

    monkeypatch.setattr(subprocess, "Popen", recording_popen)

    began = time.monotonic()
    with pytest.raises(FilesError, match="too long") as err:
        scan_tree(odd_tree, workers=2, timeout=0.5)

    assert time.monotonic() - began < 10  # not the 60 s a stuck worker would hold us
    assert err.value.kind == "timeout"
    assert len(started) == 2
    assert all(proc.poll() is not None for proc in started)


def test_volume_stats_are_the_statvfs_figures_of_the_filesystem(tmp_path: Path) -> None:
    stats = volume_stats(tmp_path)
    raw = os.statvfs(tmp_path)

    assert stats.size_bytes == raw.f_blocks * raw.f_frsize
    assert stats.files == raw.f_files
    assert 0 < stats.avail_bytes <= stats.free_bytes <= stats.size_bytes
    assert 0 < stats.files_free <= stats.files
    df = subprocess.run(["df", "-B1", "--output=size", str(tmp_path)], capture_output=True,
                        text=True, check=True).stdout.split()
    assert int(df[-1]) == stats.size_bytes
    with pytest.raises(FilesError, match="does not exist"):
        volume_stats(tmp_path / "nothing")


# --- log directories --------------------------------------------------------------------------


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    root = tmp_path / "whatsapp"
    (root / "archive").mkdir(parents=True)
    write(root / "web.log", 1234)
    write(root / "access.log", 0)
    for i, name in enumerate(ODD_NAMES):
        write(os.path.join(os.fsencode(root), name), 10 + i)
    for i in range(3):
        path = root / "archive" / f"web.log.{i}.gz"
        write(path, 100)
        os.utime(path, (1_700_000_000 + i * 3600, 1_700_000_000 + i * 3600))
    (root / "subdir").mkdir()
    write(root / "subdir" / "not-live.log")
    os.symlink("web.log", root / "link.log")
    return root


def test_log_dir_lists_live_files_and_archive_without_symlinks_or_subdirectories(
        log_dir: Path) -> None:
    entries = {(e.where, e.name): e for e in list_log_dir(log_dir)}

    live = {name: e.size for (where, name), e in entries.items() if where == "live"}
    assert live == {b"web.log": 1234, b"access.log": 0,
                    **{name: 10 + i for i, name in enumerate(ODD_NAMES)}}
    archive = [e for (where, _), e in entries.items() if where == "archive"]
    assert sorted(e.mtime for e in archive) == [1_700_000_000, 1_700_003_600, 1_700_007_200]


def test_a_symlinked_archive_directory_is_read(log_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "other-disk"
    (log_dir / "archive").rename(elsewhere)
    os.symlink(elsewhere, log_dir / "archive")

    archive = [e for e in list_log_dir(log_dir) if e.where == "archive"]

    assert len(archive) == 3


def test_a_log_rotated_away_between_listing_and_stat_is_skipped(
        log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_scandir = os.scandir

    def rotating_scandir(path: bytes) -> _ContextList:
        listing = list(real_scandir(path))
        for entry in listing:
            if entry.name == b"web.log":
                os.rename(entry.path, entry.path + b".1")
        return _ContextList(listing)

    monkeypatch.setattr(os, "scandir", rotating_scandir)

    live = {e.name for e in list_log_dir(log_dir) if e.where == "live"}

    assert b"web.log" not in live and b"access.log" in live


class _ContextList(list[os.DirEntry[bytes]]):
    def __enter__(self) -> _ContextList:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def test_a_missing_log_dir_or_archive(tmp_path: Path) -> None:
    with pytest.raises(FilesError, match="does not exist"):
        list_log_dir(tmp_path / "nothing")
    (tmp_path / "only-live").mkdir()
    write(tmp_path / "only-live" / "web.log", 5)

    assert list_log_dir(tmp_path / "only-live") == [LogEntry("live", b"web.log", 5,
                                                            os.stat(tmp_path / "only-live" /
                                                                    "web.log").st_mtime)]
