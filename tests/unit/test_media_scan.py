"""The incremental media scan: ``du``'s figures on every refresh at the cost of what changed.

The trees are real directories under a temporary path. Between refreshes a test "ages" the
tree: every directory whose mtime is recent gets an old, never used before mtime, as if the
clock had moved on by more than the racy window; directories that did not change keep theirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.sources import media
from exporter.sources.files import FilesError
from exporter.sources.media import MediaScan
from exporter.sources.media_state import ScanResult
from exporter.sources.media_walk import MAX_OPEN
from tests.du import du_bytes, regular_files

AGED = 1_000_000_000  # 2001: far outside the racy window


class Clock:
    """Hands out old, distinct mtimes: one per aging round."""

    def __init__(self) -> None:
        self.round = 0

    def age(self, root: Path) -> None:
        """Give every directory modified since the last round a new old mtime."""
        self.round += 1
        stamp = AGED + self.round * 10
        for dirpath, _dirs, _files in os.walk(root):
            if os.lstat(dirpath).st_mtime > AGED + 1_000_000:
                os.utime(dirpath, (stamp, stamp), follow_symlinks=False)


def assert_like_du(result: ScanResult, root: Path) -> None:
    assert (result.allocated_bytes, result.files, result.errors) == (
        du_bytes(root), regular_files(root), 0)


def write(path: Path, size: int) -> None:
    path.write_bytes(b"m" * size)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A small media store: 4 x 4 leaf directories of 6 files each."""
    root = tmp_path / "wamedia"
    for a in range(4):
        for b in range(4):
            leaf = root / f"{a:x}" / f"{a:x}{b:x}"
            leaf.mkdir(parents=True)
            for i in range(6):
                write(leaf / f"media-{i}.jpg", 700 * (i + 1))
    return root


DIRECTORIES = 1 + 4 + 16


def test_a_refresh_lists_again_only_the_directories_whose_mtime_changed(
        store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    clock.age(store)
    scan = MediaScan(store, full_every=100)
    first = scan.scan()
    write(store / "1" / "12" / "new.jpg", 9000)
    (store / "3" / "30" / "media-2.jpg").unlink()
    clock.age(store)
    listed: list[bytes] = []
    real_scandir = os.scandir

    def recording_scandir(fd: int) -> os._ScandirIterator[str]:
        listed.append(os.fsencode(os.readlink(f"/proc/self/fd/{fd}")))  # the directory it reads
        return real_scandir(fd)

    monkeypatch.setattr(os, "scandir", recording_scandir)

    second = scan.scan()
    monkeypatch.undo()  # du's reference walk lists by path

    assert first.full and first.directories_listed == DIRECTORIES
    assert not second.full
    assert sorted(listed) == [os.fsencode(store / "1" / "12"), os.fsencode(store / "3" / "30")]
    assert (second.directories_listed, second.directories_remembered) == (2, DIRECTORIES - 2)
    assert_like_du(second, store)


def test_a_directory_listed_within_the_racy_window_is_listed_again(store: Path) -> None:
    for dirpath, _dirs, _files in os.walk(store):
        os.utime(dirpath)  # every directory was just written: its mtime is too close to trust
    scan = MediaScan(store, full_every=100)
    scan.scan()
    write(store / "0" / "00" / "same-tick.jpg", 5000)  # may land in the same timestamp tick

    again = scan.scan()

    assert again.directories_listed == DIRECTORIES
    assert_like_du(again, store)


def test_a_full_pass_every_n_refreshes_catches_a_file_growing_in_place(store: Path) -> None:
    clock = Clock()
    clock.age(store)
    scan = MediaScan(store, full_every=3)
    before = scan.scan()
    with open(store / "2" / "21" / "media-0.jpg", "ab") as growing:
        growing.write(b"g" * 64 * 1024)  # the directory's mtime does not move

    passes = [scan.scan(), scan.scan(), scan.scan()]  # one pass in three is full

    assert [p.full for p in passes] == [False, False, True]
    assert passes[1].allocated_bytes == before.allocated_bytes  # what mtimes cannot show
    assert passes[2].directories_listed == DIRECTORIES
    assert passes[2].last_full_finished > before.last_full_finished
    assert_like_du(passes[2], store)


def test_a_new_link_to_a_file_in_an_unchanged_directory_is_counted_once(store: Path) -> None:
    clock = Clock()
    clock.age(store)
    scan = MediaScan(store, full_every=100)
    scan.scan()
    write(store / "0" / "01" / "big.mp4", 256 * 1024)
    clock.age(store)
    scan.scan()
    # A second name in another directory; the first directory's mtime stays as it was.
    os.link(store / "0" / "01" / "big.mp4", store / "3" / "33" / "forwarded.mp4")
    clock.age(store)

    linked = scan.scan()

    assert linked.full  # the hard-link rule: the other name might be counted as single
    assert_like_du(linked, store)
    (store / "3" / "33" / "forwarded.mp4").unlink()
    clock.age(store)
    assert_like_du(scan.scan(), store)


def test_a_renamed_directory_is_counted_under_its_new_name_only(store: Path) -> None:
    clock = Clock()
    clock.age(store)
    scan = MediaScan(store, full_every=100)
    scan.scan()
    os.rename(store / "1" / "11", store / "2" / "moved")
    clock.age(store)

    moved = scan.scan()

    assert not moved.full
    assert_like_du(moved, store)


def test_a_pass_past_its_timeout_continues_where_it_stopped(store: Path) -> None:
    """A zero timeout lets each call finish one directory only: the tree takes 21 calls."""
    scan = MediaScan(store, full_every=100)
    result = None
    for calls in range(1, 3 * DIRECTORIES):  # a pass that started over would never end
        try:
            result = scan.scan(timeout=0)
            break
        except FilesError as exc:
            assert exc.kind == "timeout"
            assert "continuing at the next refresh" in str(exc)
    assert result is not None
    assert calls == DIRECTORIES
    assert result.full and result.directories_listed == DIRECTORIES
    assert_like_du(result, store)


def test_a_full_pass_whose_workers_time_out_keeps_their_finished_work(
        store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hung = tmp_path / "hung-worker"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")  # workers stuck on a dead NFS server
    hung.chmod(0o755)
    real_python = sys.executable
    monkeypatch.setattr(sys, "executable", str(hung))
    scan = MediaScan(store, workers=2, full_every=100)
    with pytest.raises(FilesError, match="continuing at the next refresh"):
        scan.scan(timeout=0.3)
    monkeypatch.setattr(sys, "executable", real_python)  # the server is back

    resumed = scan.scan(timeout=30)

    assert resumed.full
    assert resumed.directories_listed == DIRECTORIES  # each directory once over both calls
    assert_like_du(resumed, store)


def test_a_refresh_lists_many_changed_directories_in_the_workers_and_resumes_after_a_timeout(
        store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "_WORKERS_FROM_ENTRIES", 0)  # any changed directory is enough
    monkeypatch.setattr(media, "_WORKERS_FROM_ENTRIES_PER_DIRECTORY", 0)
    clock = Clock()
    clock.age(store)
    scan = MediaScan(store, workers=2, full_every=100)
    scan.scan()
    changed = [store / "0" / "01", store / "1" / "12", store / "2" / "23", store / "3" / "30"]
    for leaf in changed:
        write(leaf / "new.jpg", 9000)
    (changed[0] / "media-1.jpg").unlink()
    os.link(changed[1] / "media-2.jpg", changed[2] / "linked.jpg")  # both names re-listed
    clock.age(store)
    hung = tmp_path / "hung-worker"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")
    hung.chmod(0o755)
    real_python = sys.executable
    monkeypatch.setattr(sys, "executable", str(hung))
    with pytest.raises(FilesError, match="continuing at the next refresh"):
        scan.scan(timeout=0.3)
    monkeypatch.setattr(sys, "executable", real_python)

    resumed = scan.scan(timeout=30)

    assert not resumed.full
    assert resumed.directories_listed == len(changed)
    assert_like_du(resumed, store)
    for leaf in changed[:2]:
        write(leaf / "newer.jpg", 7000)
    clock.age(store)
    again = scan.scan(timeout=30)  # in the workers this time
    assert (again.full, again.directories_listed) == (False, 2)
    assert_like_du(again, store)


UNPRIVILEGED_TWICE = """
import json, os, sys
from pathlib import Path
from exporter.sources.media import MediaScan
scan = MediaScan(Path(sys.argv[1]), full_every=100)
first = scan.scan()
os.utime(sys.argv[2], (1_000_000_000, 1_000_000_000))  # as if nothing changed since
second = scan.scan()
print(json.dumps([first.errors, second.errors, second.directories_listed]))
"""


def test_a_directory_that_could_not_be_read_is_tried_again_next_refresh(store: Path) -> None:
    Clock().age(store)
    locked = store / "2" / "22"
    locked.chmod(0)
    try:
        # Root reads any directory; without CAP_DAC_OVERRIDE/READ_SEARCH the mode bits apply.
        out = subprocess.run(
            ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable,
             "-c", UNPRIVILEGED_TWICE, str(store), str(locked)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]).stdout
    finally:
        locked.chmod(0o755)

    assert json.loads(out) == [1, 1, 1]  # only the unreadable one, listed (and failing) again


def test_the_remembered_state_grows_with_directories_not_files(tmp_path: Path) -> None:
    few, many = tmp_path / "few", tmp_path / "many"
    for root, files in ((few, 2), (many, 200)):
        for d in range(20):
            (root / f"{d:02d}").mkdir(parents=True)
            for i in range(files):
                write(root / f"{d:02d}" / f"{i}", 10)

    small = MediaScan(few).scan().state_bytes
    large = MediaScan(many).scan().state_bytes

    assert small == large


def test_a_tree_deeper_than_the_descriptors_held_open_is_counted_and_none_is_left_open(
        tmp_path: Path) -> None:
    root = deepest = tmp_path / "wamedia"
    for level in range(MAX_OPEN + 20):  # the deepest levels are opened by their full path
        deepest = deepest / f"level-{level}"
        deepest.mkdir(parents=True)
        write(deepest / "media.jpg", 3000)
    clock = Clock()
    clock.age(root)
    descriptors = len(os.listdir("/proc/self/fd"))
    for workers in (1, 2):
        scan = MediaScan(root, workers=workers, full_every=100)
        assert_like_du(scan.scan(), root)
        write(deepest / f"new-{workers}.jpg", 5000)
        clock.age(root)

        again = scan.scan()

        assert not again.full and again.directories_listed == 1
        assert_like_du(again, root)
        with pytest.raises(FilesError, match="continuing at the next refresh"):
            MediaScan(root, workers=workers).scan(timeout=0)  # stops with directories open
    assert len(os.listdir("/proc/self/fd")) == descriptors


# --- the property: du's figures after any sequence of changes ----------------------------------

OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["add", "delete", "rename", "move", "mkdir", "rmdir", "mvdir",
                               "link", "symlink", "unlink_link", "age_only"]),
              st.integers(0, 10_000), st.integers(0, 10_000), st.integers(1, 20_000)),
    min_size=1, max_size=6)


def _pick(items: list[Path], n: int) -> Path | None:
    return sorted(items)[n % len(items)] if items else None


def _apply(root: Path, op: str, a: int, b: int, size: int) -> None:
    """One change as the WA client (or an operator) makes it; no file is rewritten."""
    dirs = [Path(p) for p, _, _ in os.walk(root)]
    files = [Path(p) / f for p, _, names in os.walk(root) for f in names
             if not os.path.islink(Path(p) / f)]
    here, there = _pick(dirs, a), _pick(dirs, b)
    file = _pick(files, a)
    assert here is not None and there is not None
    if op == "add":
        write(here / f"n{a}-{b}", size)
    elif op == "delete" and file:
        file.unlink()
    elif op == "rename" and file:
        file.rename(file.parent / f"r{b}")
    elif op == "move" and file:
        file.rename(there / f"m{a}-{b}")
    elif op == "mkdir":
        (here / f"d{b}").mkdir(exist_ok=True)
        write(here / f"d{b}" / "first", size)
    elif op in ("rmdir", "mvdir") and here != root:
        if op == "rmdir":
            subprocess.run(["rm", "-rf", str(here)], check=True)
        elif not there.is_relative_to(here) and not os.path.lexists(there / f"v{a}"):
            here.rename(there / f"v{a}")
    elif op == "link" and file and not os.path.lexists(there / f"l{a}"):
        os.link(file, there / f"l{a}")
    elif op == "symlink" and not os.path.lexists(here / f"s{b}"):
        os.symlink(os.path.relpath(file or root, here), here / f"s{b}")
    elif op == "unlink_link":
        links = [f for f in files if os.lstat(f).st_nlink > 1]
        if links:
            _pick(links, b).unlink()  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wax-media-") as tmp:
        yield Path(tmp)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=st.lists(st.integers(0, 6), min_size=1, max_size=6),
       rounds=st.lists(OPERATIONS, min_size=1, max_size=5), workers=st.sampled_from([1, 2]),
       refresh_in_workers=st.booleans())
def test_every_refresh_agrees_with_du_whatever_changed(
        scratch: Path, layout: list[int], rounds: list[list[tuple[str, int, int, int]]],
        workers: int, refresh_in_workers: bool) -> None:
    # With 2 workers, a refresh lists its changed directories in them above some size: always.
    in_workers = {"_WORKERS_FROM_ENTRIES": 0, "_WORKERS_FROM_ENTRIES_PER_DIRECTORY": 0}
    with tempfile.TemporaryDirectory(dir=scratch) as tmp, \
            mock.patch.dict(media.__dict__, in_workers if refresh_in_workers else {}):
        root = Path(tmp) / "wamedia"
        for d, files in enumerate(layout):
            (root / f"{d:x}" / "in").mkdir(parents=True)
            for i in range(files):
                write(root / f"{d:x}" / ("in" if i % 2 else "") / f"f{i}", 1500 * i + 1)
        clock = Clock()
        clock.age(root)
        scan = MediaScan(root, workers=workers, full_every=4)
        assert_like_du(scan.scan(), root)
        for operations in rounds:
            for operation in operations:
                _apply(root, *operation)
            clock.age(root)
            assert_like_du(scan.scan(), root)
