"""A read-only FUSE passthrough that waits ``SLOWFS_DELAY`` seconds before every operation: a
stand-in for a media volume on a network share, where each lookup, ``stat`` and directory read
is a round trip.

Run by the system's ``python3`` with Debian's ``python3-fuse`` (not in the project's venv):
``SLOWFS_ROOT=/backing SLOWFS_DELAY=0.0003 python3 bench/slowfs.py /mnt -f -o
use_ino,attr_timeout=0,entry_timeout=0,negative_timeout=0,ro`` — the zero timeouts stop the
kernel from answering from its own caches, so every operation reaches the server.
"""

import os
import stat
import time

import fuse  # type: ignore[import-not-found]

fuse.fuse_python_api = (0, 2)

ROOT = os.environ["SLOWFS_ROOT"]
DELAY = float(os.environ.get("SLOWFS_DELAY", "0.0003"))


class SlowPassthrough(fuse.Fuse):  # type: ignore[misc]
    def getattr(self, path: str) -> os.stat_result:
        time.sleep(DELAY)
        return os.lstat(ROOT + path)

    def readlink(self, path: str) -> str:
        time.sleep(DELAY)
        return os.readlink(ROOT + path)

    def readdir(self, path: str, offset: int):  # type: ignore[no-untyped-def]
        time.sleep(DELAY)
        yield fuse.Direntry(".")
        yield fuse.Direntry("..")
        with os.scandir(ROOT + path) as entries:
            for entry in entries:
                kind = stat.S_IFDIR if entry.is_dir(follow_symlinks=False) else (
                    stat.S_IFLNK if entry.is_symlink() else stat.S_IFREG)
                yield fuse.Direntry(entry.name, type=kind >> 12, ino=entry.inode())

    def statfs(self) -> os.statvfs_result:
        return os.statvfs(ROOT)


if __name__ == "__main__":
    server = SlowPassthrough(version="%prog " + fuse.__version__, usage=__doc__)
    server.multithreaded = True
    server.parse(errex=1)
    server.main()
