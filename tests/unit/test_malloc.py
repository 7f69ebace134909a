"""The arena cap, observed in glibc's own report (``malloc_info``) of a process whose threads
all allocate at once."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.support import ROOT

# Eight threads allocate and wait for each other, so glibc cannot hand one arena around;
# then glibc reports its heaps (one <heap> element per arena) on stdout.
PROBE = """
import ctypes, sys, threading
from exporter import malloc
print(malloc.limit_arenas() if sys.argv[1] == "cap" else "uncapped", flush=True)
barrier = threading.Barrier(9)
def work():
    kept = [bytearray(n) for n in range(1000, 60000, 1000)]
    barrier.wait()
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
barrier.wait()
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
stream = ctypes.c_void_p(libc.fdopen(1, b"w"))
libc.malloc_info(0, stream)
libc.fflush(stream)
barrier.wait()
for thread in threads:
    thread.join()
"""


def arenas(mode: str, **env: str) -> tuple[str, int]:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, capture_output=True,
                          text=True, check=True, timeout=60,
                          env={k: v for k, v in {**os.environ, **env}.items()
                               if k != "MALLOC_ARENA_MAX" or "MALLOC_ARENA_MAX" in env})
    first, _, report = done.stdout.partition("\n")
    return first, report.count("<heap nr=")


pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="the arena cap is a glibc setting")


def test_threads_spread_over_many_arenas_without_the_cap() -> None:
    # The reference: what the cap is for. With 2 cores glibc allows up to 16 arenas.
    assert arenas("uncapped")[1] > 2


def test_the_cap_keeps_every_thread_in_two_arenas() -> None:
    done, heaps = arenas("cap")
    assert done == "True"
    assert 1 <= heaps <= 2


def test_an_operators_malloc_arena_max_wins() -> None:
    done, heaps = arenas("cap", MALLOC_ARENA_MAX="4")
    assert done == "False"
    assert 2 < heaps <= 4
