"""The media volume scan: ``du -s`` figures whose steady-state cost follows the change.

What it counts is what ``du -s --block-size=1`` counts: the allocated blocks (``st_blocks *
512``) of every inode under the path (files, directories, symlinks themselves), never following
a symlink below the path, each hard-linked inode once; and the regular files among them.

Media files are written once and then deleted, never rewritten, and a directory's mtime
changes whenever an entry is added, removed or renamed in it. So the scan remembers, per
directory only (never per file), its inode, its mtime and the totals of its own entries. A
refresh ``lstat``s every directory (the cost follows the number of directories) and re-lists
only those whose mtime changed (plus the entries in them); the rest come from memory. Every
directory is reached relative to its parent's open descriptor, as ``du`` does
(:mod:`exporter.sources.media_walk`): a remembered leaf costs one ``fstatat``. What an
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
(:mod:`exporter.sources.media_workers`): one Python process spends about 1.5-2x ``du``'s CPU
time per entry (a ``stat_result`` and a ``DirEntry`` per entry), and threads cannot share that
work under the GIL.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

from exporter.sources.files import FilesError, reading
from exporter.sources.media_state import (
    DirState,
    Frame,
    Pending,
    ScanPass,
    ScanResult,
)
from exporter.sources.media_walk import (
    MAX_OPEN,
    UNREADABLE,
    ScanDeadline,
    check_deadline,
    close_quietly,
    list_directory,
    open_directory,
)

# A refresh lists its changed directories in the worker processes when they held at least this
# many entries (~2.5 us each in one process, against ~10-20 ms to start each worker), and this
# many per directory on average: each one is a round trip between the scan and a worker.
_WORKERS_FROM_ENTRIES = 30_000
_WORKERS_FROM_ENTRIES_PER_DIRECTORY = 128

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
            from exporter.sources.media_workers import run_full_pass  # with workers only

            run_full_pass(self, current, deadline)
        else:
            self._walk(current, deadline)

    def _walk(self, current: ScanPass, deadline: float | None) -> None:
        """Depth first from the queued directories, each subdirectory opened relative to its
        parent's descriptor; on a deadline every directory not yet visited is queued again.

        With workers, a refresh sets the changed leaves aside and, if together they held
        enough entries to be worth the workers' start, has the workers list them."""
        pending = current.pending
        frames: list[Frame] = []  # the directories whose subdirectories are being visited
        item: Pending | None = None
        deferred: list[Pending] | None = None if current.full or self.workers < 2 else []
        deferred_entries = 0
        first = True
        try:
            while True:
                if frames:
                    parent_fd, prefix, parent, names = frames[-1]
                    if parent_fd >= 0 and not current.full:
                        deferred_entries += self._unchanged_leaves(
                            current, frame=frames[-1], deferred=deferred, deadline=deadline)
                    if not names:
                        frames.pop()
                        close_quietly(parent_fd)
                        continue
                    name = names.pop()
                    item = (prefix + name, parent, name)
                elif pending:
                    parent_fd, item = -1, pending.pop()
                elif deferred:
                    pending.extend(deferred)
                    deferred = None
                    if deferred_entries >= max(_WORKERS_FROM_ENTRIES,
                                               _WORKERS_FROM_ENTRIES_PER_DIRECTORY * len(pending)):
                        from exporter.sources.media_workers import list_in_workers

                        list_in_workers(self, current, deadline)
                        return
                    continue  # too few to be worth the workers' start: listed here
                else:
                    return
                if not first:
                    check_deadline(deadline)
                # The first directory of every call is finished whatever the time: progress.
                frame = self._enter(current, item, parent_fd, None if first else deadline)
                item, first = None, False
                if frame is not None:
                    if len(frames) >= MAX_OPEN:
                        close_quietly(frame[0])
                        frame = (-1, *frame[1:])
                    frames.append(frame)
        except ScanDeadline:
            if item is not None:
                pending.append(item)
            for _, prefix, parent, names in frames:
                pending.extend((prefix + name, parent, name) for name in names)
            pending.extend(deferred or ())
            raise
        finally:
            for frame in frames:
                close_quietly(frame[0])

    @staticmethod
    def _unchanged_leaves(current: ScanPass, *, frame: Frame, deferred: list[Pending] | None,
                          deadline: float | None) -> int:
        """Take from the end of the frame's names every remembered leaf whose ``lstat`` in its
        parent shows it unchanged, the bulk of a refresh: one ``fstatat`` each; and, given
        ``deferred``, set aside there those that changed. Stop at the first that needs more
        (gone, unreadable, or with subdirectories); return the entries set aside."""
        parent_fd, prefix, parent, names = frame
        known = parent.subdirs or {}
        entries = 0
        while names:
            name = names[-1]
            old = known.get(name)
            if old is None or old.subdirs:
                break
            if old.mtime_ns is not None:
                try:
                    st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
                except OSError:
                    break
                if not stat.S_ISDIR(st.st_mode):
                    break
                if st.st_mtime_ns == old.mtime_ns and st.st_ino == old.ino:
                    names.pop()
                    current.add(st.st_blocks, name, old, listed=False)
                    check_deadline(deadline)
                    continue
            if deferred is None:
                break
            names.pop()
            deferred.append((prefix + name, parent, name))
            entries += old.files + len(old.links or ())
        return entries

    def visit(self, current: ScanPass, item: Pending, deadline: float | None) -> None:
        """Visit one directory and queue its subdirectories (the top of a full pass that
        hands the subtrees to workers). On a deadline the directory stays queued."""
        try:
            frame = self._enter(current, item, -1, deadline)
        except ScanDeadline:
            current.pending.append(item)
            raise
        if frame is not None:
            fd, prefix, parent, names = frame
            close_quietly(fd)
            current.pending.extend((prefix + name, parent, name) for name in names)

    def _enter(self, current: ScanPass, item: Pending, parent_fd: int,
               deadline: float | None) -> Frame | None:
        """Visit one directory (by name in ``parent_fd``, or by its path if -1): from memory if
        its mtime is unchanged, else listed again; return it, still open, if it has
        subdirectories to visit. The remembered leaves that did not change seldom get here:
        :meth:`_unchanged_leaves` takes them first."""
        path, parent, name = item
        old = self._root if parent is None else (parent.subdirs or {}).get(name)
        reuse = None if current.full else old
        try:
            opened = open_directory(parent_fd, path, name, follow=parent is None)
        except OSError:
            current.errors += 1
            opened = None
        if opened is None:
            self.attach(parent, name, None)
            return None
        fd, st = opened
        try:
            node: DirState
            if reuse is not None and reuse.mtime_ns == st.st_mtime_ns and reuse.ino == st.st_ino:
                node, listed = reuse, False
            else:
                listing, names = list_directory(fd, st, deadline) if fd >= 0 else (UNREADABLE, [])
                node, listed = DirState(st.st_ino, *listing, None), True
                known = old.subdirs if old is not None and old.subdirs else {}
                node.subdirs = {sub: known.get(sub) for sub in names} or None
            self.attach(parent, name, node)
            current.add(st.st_blocks, name, node, listed=listed)
            if not node.subdirs:
                return None
            frame = (fd, path if path.endswith(b"/") else path + b"/", node, list(node.subdirs))
            fd = -1  # the frame holds it now
            return frame
        finally:
            close_quietly(fd)

    def attach(self, parent: DirState | None, name: bytes, node: DirState | None) -> None:
        """Put a visited directory in its parent's place (``None``: it is gone)."""
        if parent is None:
            self._root = node
        elif parent.subdirs is not None:
            if node is None:
                parent.subdirs.pop(name, None)
            else:
                parent.subdirs[name] = node
