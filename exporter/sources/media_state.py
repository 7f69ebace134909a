"""What the media scan remembers between passes and what one pass adds up, shared by the
scan (:mod:`exporter.sources.media`) and its worker processes' driver
(:mod:`exporter.sources.media_workers`); and what the workers' driver needs of the scan."""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from exporter.sources.media_walk import Link


class DirState:
    """What is remembered of one directory: its identity and its own entries' totals.

    ``blocks`` and ``files`` cover the directory's single-link, non-directory entries; the
    directory's own blocks are read from the ``stat`` every pass makes of it. ``mtime_ns`` is
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
# A directory whose subdirectories are being visited: its descriptor (-1: use full paths),
# its path with a trailing slash, its record, and the names of the subdirectories still to go.
Frame = tuple[int, bytes, DirState, list[bytes]]


@dataclass(slots=True)  # its sums are updated once per directory
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


class Scan(Protocol):
    """What the workers' driver needs of the scan (:class:`exporter.sources.media.MediaScan`):
    how many workers, the path, and how to visit and attach directories."""

    workers: int
    path: Path

    def visit(self, current: ScanPass, item: Pending, deadline: float | None) -> None: ...

    def attach(self, parent: DirState | None, name: bytes, node: DirState | None) -> None: ...
