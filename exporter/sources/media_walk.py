"""The hot loop of the media scan: directories read through their open descriptors.

Every directory is opened once (never through a symlink), its own ``stat`` read from that
descriptor, its entries listed from it and each entry ``lstat``-ed relative to it
(``fstatat``), as ``du`` does: no path is resolved again from the root for every entry. One
descriptor is held per level of the walk, up to :data:`MAX_OPEN`; deeper directories are opened
by their full path.

The module imports nothing but a few modules of the standard library (not even ``typing``),
because it is also the program of the
scan's worker processes (``python -I -S media_walk.py``, see
:mod:`exporter.sources.media_workers`), which then start in a few milliseconds: a worker reads
NUL-terminated paths on stdin and answers each with one frame on stdout, a 4-byte length and a
``marshal``-ed ``(errors, records)``, one record per directory of that subtree in the order it
listed them, each naming its parent's index.
"""

from __future__ import annotations

import errno
import marshal
import os
import stat
import struct
import sys
import time

# A directory modified this close to its listing may change again within the same timestamp
# tick unseen; 2 s covers filesystems that store whole (ext3) or even seconds (FAT, some NAS).
RACY_NS = 2_000_000_000
# Entries between deadline checks inside one (possibly huge) directory.
_CHECK_EVERY = 1024
# Descriptors held open along one path of a walk (a tree deeper than this costs full paths).
MAX_OPEN = 64
# How a directory is opened to be read: never through a symlink (like lstat), never inherited.
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FRAME = struct.Struct("<I")

# (dev, ino, blocks, regular, nlink) of a non-directory entry with more than one link.
Link = tuple[int, int, int, bool, int]
# What one listing found: (mtime_ns or None if it cannot be trusted next time, the single-link
# entries' blocks, the regular files among them, entries that could not be read, the links).
Listing = tuple[int | None, int, int, int, tuple[Link, ...] | None]
# A directory that could not be opened: its own blocks count, nothing in it does.
UNREADABLE: Listing = (None, 0, 0, 1, None)
# (parent index, name, the directory's own blocks, ino, then its Listing)
Record = tuple[int, bytes, int, int, int | None, int, int, int, tuple[Link, ...] | None]


class ScanDeadline(Exception):
    """The pass ran out of time; the caller keeps its progress."""


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise ScanDeadline


def open_directory(parent_fd: int, path: bytes, name: bytes, *,
                   follow: bool = False) -> tuple[int, os.stat_result] | None:
    """Open a directory by ``name`` in the open ``parent_fd``, or by ``path`` when ``parent_fd``
    is -1; return its descriptor and its ``stat``, or ``None`` if it is gone or no longer a
    directory. A directory that exists but cannot be opened (no permission) gives -1 and its
    ``lstat``: its own blocks still count, as in ``du``. ``follow``: the scan's root, which
    may itself be a symlink."""
    where, at = (path, None) if parent_fd < 0 else (name, parent_fd)
    try:
        fd = os.open(where, _OPEN_DIR & ~os.O_NOFOLLOW if follow else _OPEN_DIR, dir_fd=at)
    except (FileNotFoundError, NotADirectoryError):
        return None  # removed, or replaced by a file, since its parent was listed: next pass
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None  # replaced by a symlink, which is not followed
        try:
            st = os.stat(where, dir_fd=at, follow_symlinks=follow)
        except FileNotFoundError:
            return None
        return (-1, st) if stat.S_ISDIR(st.st_mode) else None
    try:
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def list_directory(fd: int, st: os.stat_result,
                   deadline: float | None) -> tuple[Listing, list[bytes]]:
    """Read the entries of the open directory ``fd`` whose ``stat`` (taken before) is ``st``;
    return what they hold and the names of its subdirectories.

    The hot loop of every scan: one ``fstatat`` per non-directory entry (the entry types come
    with the listing); subdirectories are opened and read when they are visited.
    """
    listed_at = time.time_ns()
    blocks = files = errors = 0
    links: list[Link] = []
    subdirs: list[str] = []
    countdown = _CHECK_EVERY
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                countdown -= 1
                if not countdown:
                    countdown = _CHECK_EVERY
                    check_deadline(deadline)
                try:
                    if entry.is_file(follow_symlinks=False):
                        est = entry.stat()  # not a symlink: this is its lstat
                        regular = True
                    elif entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                        continue
                    else:
                        est = entry.stat(follow_symlinks=False)
                        regular = False
                except FileNotFoundError:
                    continue  # removed between the listing and the lstat
                except OSError:
                    errors += 1
                    continue
                if est.st_nlink > 1:
                    links.append((est.st_dev, est.st_ino, est.st_blocks, regular, est.st_nlink))
                else:
                    blocks += est.st_blocks
                    files += regular
    except OSError:
        errors += 1
    mtime: int | None = st.st_mtime_ns
    if errors or st.st_mtime_ns >= listed_at - RACY_NS:
        mtime = None
    return (mtime, blocks, files, errors, tuple(links) or None), [os.fsencode(n) for n in subdirs]


def close_quietly(fd: int) -> None:
    if fd >= 0:
        os.close(fd)


def walk_subtree(path: bytes) -> tuple[int, list[Record]]:
    """List every directory under ``path`` (itself included); ``(errors, records)``."""
    records: list[Record] = []
    errors = 0
    # Directories being read, deepest last: (fd or -1, path + b"/", index, names still to visit)
    frames: list[tuple[int, bytes, int, list[bytes]]] = []
    parent_fd, here, parent_index, name = -1, path, -1, b""
    try:
        while True:
            try:
                opened = open_directory(parent_fd, here, name)
            except OSError:
                errors += 1
                opened = None
            if opened is not None:
                fd, st = opened
                try:
                    listing, names = list_directory(fd, st, None) if fd >= 0 else (UNREADABLE, [])
                    records.append((parent_index, name, st.st_blocks, st.st_ino, *listing))
                    if names:
                        if len(frames) >= MAX_OPEN:
                            os.close(fd)
                            fd = -1
                        frames.append((fd, here + b"/", len(records) - 1, names))
                        fd = -1  # the frame holds it now
                finally:
                    close_quietly(fd)
            while frames:
                parent_fd, prefix, parent_index, pending = frames[-1]
                if pending:
                    name = pending.pop()
                    here = prefix + name
                    break
                frames.pop()
                close_quietly(parent_fd)
            else:
                return errors, records
    finally:
        for frame in frames:
            close_quietly(frame[0])


def _worker_main() -> None:
    """Scan each directory named on stdin, fully, and answer with one frame each."""
    pending = b""
    out = sys.stdout.buffer
    while chunk := os.read(0, 1 << 16):
        *units, pending = (pending + chunk).split(b"\0")
        for unit in units:
            frame = marshal.dumps(walk_subtree(unit))
            out.write(FRAME.pack(len(frame)) + frame)
            out.flush()


if __name__ == "__main__":
    _worker_main()
