"""The reference every media scan test compares with: GNU ``du`` on the same tree."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def du_bytes(path: Path) -> int:
    """What ``du -s --block-size=1`` reports: allocated bytes, each inode once."""
    out = subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, check=False)
    return int(out.stdout.split()[0])


def regular_files(path: Path) -> int:
    """Regular files under ``path`` as du meets them: each inode once, symlinks not followed."""
    inodes = set()
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            st = os.lstat(os.path.join(dirpath, name))
            if os.path.isfile(os.path.join(dirpath, name)) and not os.path.islink(
                    os.path.join(dirpath, name)):
                inodes.add((st.st_dev, st.st_ino))
    return len(inodes)
