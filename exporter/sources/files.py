"""Reading the filesystem: the media volume (statvfs and a ``du``-like scan) and log directories.

The scan counts what ``du -s`` counts: the allocated blocks (``st_blocks * 512``) of every
inode under the path (files, directories, symlinks themselves), each hard-linked inode once,
never following a symlink. Work is spread over worker processes (``python -m
exporter.sources.files``) because a single Python thread spends about 1.5x ``du``'s time per
entry and threads cannot share the stat work under the GIL. Entries that vanish between
listing and ``lstat`` are skipped; anything else unreadable is counted in ``errors``.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import stat
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from exporter.errors import SourceError

_IFMT = stat.S_IFMT(0o177777)
_IFDIR = stat.S_IFDIR
_IFREG = stat.S_IFREG
# The parent expands the top of the tree until it holds this many directories per worker,
# then hands them out one by one, so one big subtree rarely leaves a worker idle.
_UNITS_PER_WORKER = 8


class FilesError(SourceError):
    """A path could not be read (``missing``, ``permission``, ``timeout``, ``error``)."""


@dataclass(frozen=True)
class VolumeStats:
    """The filesystem holding a path, as node_exporter's filesystem collector reports it."""

    size_bytes: int
    free_bytes: int
    avail_bytes: int
    files: int
    files_free: int


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn the OS's errors about ``path`` into :class:`FilesError`."""
    try:
        yield
    except FileNotFoundError:
        raise FilesError(f"{path} does not exist", kind="missing") from None
    except PermissionError as exc:
        raise FilesError(f"cannot read {path}: {exc.strerror}", kind="permission") from None
    except OSError as exc:
        raise FilesError(f"cannot read {path}: {exc.strerror or exc}") from None


def volume_stats(path: Path) -> VolumeStats:
    with _reading(path):
        st = os.statvfs(path)
    return VolumeStats(
        size_bytes=st.f_blocks * st.f_frsize,
        free_bytes=st.f_bfree * st.f_frsize,
        avail_bytes=st.f_bavail * st.f_frsize,
        files=st.f_files,
        files_free=st.f_ffree,
    )


# --- the du-like scan ------------------------------------------------------------------------


@dataclass
class TreeUsage:
    """What a scan found: allocated bytes, regular files, and entries it could not read."""

    allocated_bytes: int = 0
    files: int = 0
    errors: int = 0


@dataclass
class _Tally:
    blocks: int = 0
    files: int = 0
    errors: int = 0
    # Inodes with more than one link, counted once at the end: (dev, ino) -> (blocks, regular).
    links: dict[tuple[int, int], tuple[int, bool]] = field(default_factory=dict)

    def merge(self, line: bytes) -> None:
        """Add a worker's answer: ``[blocks, files, errors, [[dev, ino, blocks, regular]...]]``."""
        blocks, files, errors, links = json.loads(line)
        self.blocks += int(blocks)
        self.files += int(files)
        self.errors += int(errors)
        for dev, ino, link_blocks, regular in links:
            self.links[(int(dev), int(ino))] = (int(link_blocks), bool(regular))

    def dumps(self) -> bytes:
        links = [[dev, ino, blocks, regular]
                 for (dev, ino), (blocks, regular) in self.links.items()]
        return json.dumps([self.blocks, self.files, self.errors, links]).encode()

    def usage(self) -> TreeUsage:
        blocks = self.blocks + sum(b for b, _ in self.links.values())
        files = self.files + sum(1 for _, regular in self.links.values() if regular)
        return TreeUsage(allocated_bytes=blocks * 512, files=files, errors=self.errors)


def _list_dir(path: bytes, tally: _Tally) -> list[bytes]:
    """Tally one directory's entries; return its subdirectories. The hot loop of the scan."""
    subdirs: list[bytes] = []
    blocks = files = errors = 0
    links = tally.links
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed between the listing and the lstat
                except OSError:
                    errors += 1
                    continue
                kind = st.st_mode & _IFMT
                if kind == _IFDIR:
                    subdirs.append(entry.path)
                    blocks += st.st_blocks
                elif st.st_nlink > 1:
                    links[(st.st_dev, st.st_ino)] = (st.st_blocks, kind == _IFREG)
                else:
                    blocks += st.st_blocks
                    if kind == _IFREG:
                        files += 1
    except FileNotFoundError:
        pass  # the directory itself went away
    except OSError:
        errors += 1
    finally:
        tally.blocks += blocks
        tally.files += files
        tally.errors += errors
    return subdirs


def _walk(root: bytes, tally: _Tally, deadline: float | None = None) -> None:
    stack = [root]
    while stack:
        _check_deadline(deadline, root)
        stack.extend(_list_dir(stack.pop(), tally))


def scan_tree(path: Path, *, workers: int = 1, timeout: float | None = None) -> TreeUsage:
    """Scan ``path`` like ``du -s`` (the path itself is followed if it is a symlink)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    root = os.fsencode(path)
    with _reading(path):
        st = os.stat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise FilesError(f"{path} is not a directory", kind="missing")
    tally = _Tally(blocks=st.st_blocks)
    pending = deque([root])
    wanted = workers * _UNITS_PER_WORKER if workers > 1 else 1
    while pending and len(pending) < wanted:
        _check_deadline(deadline, path)
        pending.extend(_list_dir(pending.popleft(), tally))
    if workers > 1 and pending:
        _WorkerPool(min(workers, len(pending)), deadline, path).run(pending, tally)
    else:
        for unit in pending:
            _walk(unit, tally, deadline)
    _check_deadline(deadline, path)
    return tally.usage()


def _check_deadline(deadline: float | None, path: Path | bytes) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise FilesError(f"scanning {os.fsdecode(path)} took too long", kind="timeout")


class _WorkerPool:
    """Worker processes fed one directory at a time (NUL-terminated paths on stdin), each
    answering with one JSON tally per directory on stdout."""

    def __init__(self, size: int, deadline: float | None, path: Path) -> None:
        self.size = size
        self.deadline = deadline
        self.path = path

    def run(self, units: deque[bytes], tally: _Tally) -> None:
        # A fixed command: this module, run by this interpreter; the paths go through stdin.
        procs = [subprocess.Popen([sys.executable, "-m", __name__],  # noqa: S603
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                 for _ in range(self.size)]
        finished = False
        try:
            self._dispatch(procs, units, tally)
            finished = True
        except OSError as exc:  # a worker died under us: its pipe broke
            raise FilesError(f"a scan worker for {self.path} failed: {exc}") from None
        finally:
            for proc in procs:
                _close_quietly(proc.stdin)
                if not finished:
                    proc.kill()
                proc.wait()
                _close_quietly(proc.stdout)

    def _dispatch(self, procs: list[subprocess.Popen[bytes]], units: deque[bytes],
                  tally: _Tally) -> None:
        in_flight: dict[subprocess.Popen[bytes], int] = {}
        buffers: dict[subprocess.Popen[bytes], bytes] = {}
        with selectors.DefaultSelector() as selector:
            for proc in procs:
                assert proc.stdout is not None
                selector.register(proc.stdout, selectors.EVENT_READ, proc)
                buffers[proc] = b""
                # Two directories in flight per worker: it never waits on us between them.
                in_flight[proc] = self._feed(proc, units, 2)
            while any(in_flight.values()):
                left = None if self.deadline is None else self.deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise FilesError(f"scanning {self.path} took too long", kind="timeout")
                for key, _ in selector.select(left):
                    proc = key.data
                    chunk = os.read(key.fd, 1 << 16)
                    if not chunk:
                        if in_flight[proc]:
                            raise FilesError(f"a scan worker for {self.path} exited with code "
                                             f"{proc.wait()} before answering")
                        selector.unregister(key.fileobj)
                        continue
                    *lines, buffers[proc] = (buffers[proc] + chunk).split(b"\n")
                    for line in lines:
                        tally.merge(line)
                        in_flight[proc] += self._feed(proc, units, 1) - 1

    @staticmethod
    def _feed(proc: subprocess.Popen[bytes], units: deque[bytes], count: int) -> int:
        assert proc.stdin is not None
        sent = 0
        while units and sent < count:
            proc.stdin.write(units.popleft() + b"\0")
            sent += 1
        if units:
            proc.stdin.flush()
        else:
            _close_quietly(proc.stdin)  # end of work: the worker exits after its last answer
        return sent


def _close_quietly(stream: IO[bytes] | None) -> None:
    if stream is not None and not stream.closed:
        with contextlib.suppress(OSError):  # the worker is gone: nothing left to flush to
            stream.close()


def _worker_main() -> None:
    """``python -m exporter.sources.files``: scan each directory named on stdin, fully."""
    pending = b""
    while chunk := os.read(0, 1 << 16):
        *units, pending = (pending + chunk).split(b"\0")
        for unit in units:
            tally = _Tally()
            _walk(unit, tally)
            os.write(1, tally.dumps() + b"\n")


# --- log directories -------------------------------------------------------------------------

ARCHIVE = "archive"


@dataclass(frozen=True)
class LogEntry:
    """A regular file directly in the log directory (``live``) or in its ``archive``."""

    where: Literal["live", "archive"]
    name: bytes
    size: int
    mtime: float


def list_log_dir(path: Path) -> list[LogEntry]:
    """The regular files directly in ``path`` and in ``path/archive``; symlinks are not followed,
    except ``archive`` itself (operators move archives to other disks with a link)."""
    with _reading(path):
        found = _regular_files(os.fsencode(path), "live")
    with _reading(path / ARCHIVE), contextlib.suppress(FileNotFoundError):  # none yet: fine
        found += _regular_files(os.fsencode(path / ARCHIVE), "archive")
    return found


def _regular_files(directory: bytes, where: Literal["live", "archive"]) -> list[LogEntry]:
    found: list[LogEntry] = []
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # rotated away between listing and lstat
            if stat.S_ISREG(st.st_mode):
                found.append(LogEntry(where, entry.name, st.st_size, st.st_mtime))
    return found


if __name__ == "__main__":
    _worker_main()
