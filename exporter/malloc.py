"""Keep the C allocator from spreading the exporter's memory over many arenas.

glibc gives a thread that allocates while the others hold the arenas an arena of its own, up
to eight per core, and memory freed in one is seldom handed back to the system. The exporter
starts threads all the time (one per HTTP connection, per action run, per container listed),
so its RSS crept up by ~5 MiB over ten minutes of the soak and would settle only when every
arena had grown; with two arenas it stays flat (docs/soak.md). Python's own small objects are
not affected: they live in pymalloc's arenas.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # from glibc's <malloc.h>
ARENAS = 2


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Cap glibc's malloc arenas; ``True`` if done. Call it before starting threads.

    ``MALLOC_ARENA_MAX`` set by the operator wins (glibc reads it itself); other C libraries
    (musl) lack the setting or ignore it, and nothing happens there."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))
