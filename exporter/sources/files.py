"""Reading the filesystem: the media volume's statvfs figures and log directories.

The ``du``-like scan of the media path is :mod:`exporter.sources.media`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
def reading(path: Path) -> Iterator[None]:
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
    with reading(path):
        st = os.statvfs(path)
    return VolumeStats(
        size_bytes=st.f_blocks * st.f_frsize,
        free_bytes=st.f_bfree * st.f_frsize,
        avail_bytes=st.f_bavail * st.f_frsize,
        files=st.f_files,
        files_free=st.f_ffree,
    )


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
    with reading(path):
        found = _regular_files(os.fsencode(path), "live")
    with reading(path / ARCHIVE), contextlib.suppress(FileNotFoundError):  # none yet: fine
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


