"""The media volume scan: ``du -s`` figures whose steady-state cost follows the change.

What it counts is what ``du -s --block-size=1`` counts: the allocated blocks (``st_blocks *
512``) of every inode under the path (files, directories, symlinks themselves), never following
a symlink below the path, each hard-linked inode once; and the regular files among them.

Media files are written once and then deleted, never rewritten, and a directory's mtime
changes whenever an entry is added, removed or renamed in it. So the scan remembers, per
directory only (never per file), its inode, its mtime and the totals of its own entries. A
refresh ``lstat``s every directory (the cost follows the number of directories) and re-lists
only those whose mtime changed (plus the entries in them); the rest come from memory. What an
mtime cannot show — a file growing in place, clocks that jump — is caught by a full pass every
``full_every`` passes. Two rules keep the remembered figures honest:

- *racy mtimes*: a directory whose mtime is within :data:`RACY_NS` of the moment it was listed
  may change again without its mtime moving (coarse timestamps), so it is listed again next time;
- *hard links*: an inode with more than one link is remembered per directory as ``(dev, ino,
  blocks)``, and summed once across the tree. A link newly made to a file counted earlier as
  single-linked in a directory that did not change would count that file twice; so when an
  incremental pass finds a multi-link inode it has not seen before and cannot account for all
  its links inside the changed directories, it turns into a full pass.

A pass that runs out of time keeps its progress (the directories still to visit and the sums so
far) and continues at the next call, so a tree larger than one timeout's worth of work is still
counted in a few refreshes. Full passes spread whole subtrees over worker processes
(:mod:`exporter.sources.media_workers`): one Python process spends about 1.5x ``du``'s time per
entry, and threads cannot share that work under the GIL.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from exporter.sources.files import FilesError, reading

# A directory modified this close to its listing may change again within the same timestamp
# tick unseen; 2 s covers filesystems that store whole (ext3) or even seconds (FAT, some NAS).
RACY_NS = 2_000_000_000
# Entries between deadline checks inside one (possibly huge) directory.
_CHECK_EVERY = 1024
_IFMT = stat.S_IFMT(0o177777)
_IFREG = stat.S_IFREG

# (dev, ino, blocks, regular, nlink) of a non-directory entry with more than one link.
Link = tuple[int, int, int, bool, int]


class ScanDeadline(Exception):
    """The pass ran out of time; the caller keeps its progress."""


class DirState:
    """What is remembered of one directory: its identity and its own entries' totals.

    ``blocks`` and ``files`` cover the directory's single-link, non-directory entries; the
    directory's own blocks are read from the ``lstat`` every pass makes of it. ``mtime_ns`` is
    ``None`` when the listing cannot be trusted next time (racy, or an entry could not be read).
    """

    __slots__ = ("blocks", "errors", "files", "ino", "links", "mtime_ns", "subdirs")

    def __init__(self, ino: int, mtime_ns: int | None, blocks: int, files: int, errors: int,
                 links: tuple[Link, ...] | None,
                 subdirs: dict[bytes, DirState | None] | None) -> None:
        self.ino = ino
        self.mtime_ns = mtime_ns
        self.blocks = blocks
        self.files = files
        self.errors = errors
        self.links = links
        self.subdirs = subdirs


def list_directory(path: bytes, st: os.stat_result,
                   deadline: float | None) -> tuple[DirState, list[bytes]] | None:
    """Read one directory's entries (``None`` if it vanished); return it and its subdirectories.

    The hot loop of every scan: one ``lstat`` per non-directory entry; subdirectories are
    recognised by their directory-entry type and ``lstat``-ed when they are visited.
    """
    listed_at = time.time_ns()
    blocks = files = errors = 0
    links: list[Link] = []
    subdirs: list[bytes] = []
    try:
        with os.scandir(path) as entries:
            for n, entry in enumerate(entries):
                if n % _CHECK_EVERY == _CHECK_EVERY - 1:
                    check_deadline(deadline)
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                        continue
                    est = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed between the listing and the lstat
                except OSError:
                    errors += 1
                    continue
                regular = est.st_mode & _IFMT == _IFREG
                if est.st_nlink > 1:
                    links.append((est.st_dev, est.st_ino, est.st_blocks, regular, est.st_nlink))
                else:
                    blocks += est.st_blocks
                    files += regular
    except FileNotFoundError:
        return None  # the directory itself went away
    except OSError:
        errors += 1
    mtime: int | None = st.st_mtime_ns
    if errors or st.st_mtime_ns >= listed_at - RACY_NS:
        mtime = None
    return DirState(st.st_ino, mtime, blocks, files, errors, tuple(links) or None, None), subdirs


def check_deadline(deadline: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise ScanDeadline


@dataclass(frozen=True)
class ScanResult:
    """The figures of the last complete pass, and what that pass cost."""

    allocated_bytes: int
    files: int
    errors: int
    directories_listed: int  # read again in the last pass (every directory in a full one)
    directories_remembered: int  # taken from memory: mtime unchanged
    full: bool
    state_bytes: int  # memory held by the remembered directories
    last_full_finished: float  # wall-clock seconds
    last_full_seconds: float  # how long the last full pass took, over all its refreshes


# One remembered directory, less its subdirectory table: the record and its name as bytes.
_RECORD_BYTES = sys.getsizeof(DirState(0, 0, 0, 0, 0, None, None)) + sys.getsizeof(b"")

# A directory still to visit in this pass: its path, the remembered parent, its name there.
Pending = tuple[bytes, DirState | None, bytes]


@dataclass
class ScanPass:
    full: bool
    started: float = field(default_factory=time.monotonic)
    pending: deque[Pending] = field(default_factory=deque)
    interrupted: bool = False
    blocks: int = 0
    files: int = 0
    errors: int = 0
    listed: int = 0
    remembered: int = 0
    state_bytes: int = 0
    # (dev, ino) -> [blocks, regular, nlink, names seen in this pass]
    links: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    # multi-link inodes met in re-listed directories: the hard-link rule checks these
    relisted_links: set[tuple[int, int]] = field(default_factory=set)

    def add(self, dir_blocks: int, name: bytes, node: DirState, *, listed: bool) -> None:
        self.blocks += dir_blocks + node.blocks
        self.files += node.files
        self.errors += node.errors
        self.state_bytes += _RECORD_BYTES + len(name) + (
            sys.getsizeof(node.subdirs) if node.subdirs else 0)
        if listed:
            self.listed += 1
        else:
            self.remembered += 1
        if node.links:
            self.state_bytes += sys.getsizeof(node.links) + len(node.links) * 120
            for dev, ino, blocks, regular, nlink in node.links:
                seen = self.links.setdefault((dev, ino), [blocks, regular, nlink, 0])
                seen[3] += 1
                if listed:
                    self.relisted_links.add((dev, ino))

    def result(self, last_full_finished: float, last_full_seconds: float) -> ScanResult:
        linked_blocks = sum(blocks for blocks, _, _, _ in self.links.values())
        linked_files = sum(1 for _, regular, _, _ in self.links.values() if regular)
        return ScanResult(
            allocated_bytes=(self.blocks + linked_blocks) * 512, files=self.files + linked_files,
            errors=self.errors, directories_listed=self.listed,
            directories_remembered=self.remembered, full=self.full,
            state_bytes=self.state_bytes, last_full_finished=last_full_finished,
            last_full_seconds=last_full_seconds)


class MediaScan:
    """The remembered state of one media path and the passes that keep it current.

    Not thread-safe: one refresh at a time, as the collector's refresher guarantees.
    """

    def __init__(self, path: Path, *, workers: int = 1, full_every: int = 288) -> None:
        self.path = path
        self.workers = workers
        self.full_every = full_every
        self._root: DirState | None = None
        self._pass: ScanPass | None = None
        self._passes_since_full = 0
        self._known_links: set[tuple[int, int]] = set()
        self._last_full_finished = 0.0
        self._last_full_seconds = 0.0

    def scan(self, timeout: float | None = None) -> ScanResult:
        """Run (or continue) a pass; raise :class:`FilesError` ``timeout`` if it does not end
        within ``timeout`` seconds — its progress is kept for the next call."""
        deadline = None if timeout is None else time.monotonic() + timeout
        root = os.fsencode(self.path)
        with reading(self.path):
            st = os.stat(root)  # like du, follow the path itself if it is a symlink
        if not stat.S_ISDIR(st.st_mode):
            raise FilesError(f"{self.path} is not a directory", kind="missing")
        current = self._pass
        if current is None:
            full = self._root is None or self._passes_since_full + 1 >= self.full_every
            current = self._pass = self._start(full, root)
        try:
            self._run(current, deadline)
            if not current.full and self._unaccounted_links(current):
                current = self._pass = self._start(True, root)  # the hard-link rule
                self._run(current, deadline)
        except ScanDeadline:
            current.interrupted = True
            done = current.listed + current.remembered
            raise FilesError(f"scanning {self.path} took too long ({done} directories done, "
                             f"{len(current.pending)} or more to go; continuing at the next "
                             "refresh)", kind="timeout") from None
        self._pass = None
        return self._finish(current)

    def _start(self, full: bool, root: bytes) -> ScanPass:
        started = ScanPass(full=full)
        started.pending.append((root, None, b""))
        return started

    def _finish(self, done: ScanPass) -> ScanResult:
        self._known_links = set(done.links)
        if done.full:
            self._passes_since_full = 0
            self._last_full_finished = time.time()
            self._last_full_seconds = time.monotonic() - done.started
        else:
            self._passes_since_full += 1
        return done.result(self._last_full_finished, self._last_full_seconds)

    def _unaccounted_links(self, done: ScanPass) -> bool:
        """A multi-link inode new since the last pass with a name outside the re-listed
        directories: that name may sit, counted as single-linked, in an unchanged directory."""
        for key in done.relisted_links - self._known_links:
            _, _, nlink, seen = done.links[key]
            if seen < nlink:
                return True
        return False

    def _run(self, current: ScanPass, deadline: float | None) -> None:
        if current.full and self.workers > 1:
            from exporter.sources.media_workers import run_full_pass  # only full passes fork

            run_full_pass(self, current, deadline)
            return
        first = True
        while current.pending:
            # The first directory of every call is finished whatever the time: progress.
            self.visit(current, current.pending.pop(), None if first else deadline)
            first = False
            if current.pending:
                check_deadline(deadline)

    def visit(self, current: ScanPass, item: Pending, deadline: float | None) -> None:
        """Visit one directory: from memory if its mtime is unchanged, else listed again; its
        subdirectories are queued. On a deadline the directory stays queued."""
        path, parent, name = item
        try:
            st = os.stat(path) if parent is None else os.lstat(path)
        except FileNotFoundError:
            return self.attach(parent, name, None)
        except OSError:
            current.errors += 1
            return self.attach(parent, name, None)
        if not stat.S_ISDIR(st.st_mode):  # replaced since its parent was listed: next pass
            return self.attach(parent, name, None)
        old = self._root if parent is None else (parent.subdirs or {}).get(name)
        if (not current.full and old is not None and old.mtime_ns == st.st_mtime_ns
                and old.ino == st.st_ino):
            node = old
            listed = False
        else:
            try:
                found = list_directory(path, st, deadline)
            except ScanDeadline:
                current.pending.append(item)
                raise
            if found is None:
                return self.attach(parent, name, None)
            node, names = found
            known = old.subdirs if old is not None and old.subdirs else {}
            node.subdirs = {sub: known.get(sub) for sub in names} or None
            listed = True
        self.attach(parent, name, node)
        current.add(st.st_blocks, name, node, listed=listed)
        if node.subdirs:
            prefix = path + b"/" if not path.endswith(b"/") else path
            current.pending.extend((prefix + sub, node, sub) for sub in node.subdirs)
        return None

    def attach(self, parent: DirState | None, name: bytes, node: DirState | None) -> None:
        """Put a visited directory in its parent's place (``None``: it is gone)."""
        if parent is None:
            self._root = node
        elif parent.subdirs is not None:
            if node is None:
                parent.subdirs.pop(name, None)
            else:
                parent.subdirs[name] = node
