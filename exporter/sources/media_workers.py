"""Full passes of the media scan spread over worker processes, each running
:mod:`exporter.sources.media_walk` (which says how they talk).

The parent lists the top of the tree itself until it holds several directories per worker, then
hands them out one by one, so one big subtree rarely leaves a worker idle. A pass that runs out
of time kills the workers; the subtrees already answered are kept, the rest wait for the next
call, which lists one more level itself first, so even a subtree too big for one timeout gets
done in pieces.
"""

from __future__ import annotations

import contextlib
import marshal
import os
import selectors
import subprocess
import sys
import time
from collections import deque
from typing import IO

from exporter.sources import media_walk
from exporter.sources.files import FilesError
from exporter.sources.media_state import DirState, Pending, Scan, ScanPass
from exporter.sources.media_walk import FRAME, Record, ScanDeadline, check_deadline

_UNITS_PER_WORKER = 8
_IN_FLIGHT = 8


def run_full_pass(scan: Scan, current: ScanPass, deadline: float | None) -> None:
    pending = current.pending
    wanted = scan.workers * _UNITS_PER_WORKER
    # Resumed after a timeout: list every waiting subtree's top here, one level deeper.
    expand = len(pending) if current.interrupted else 0
    first = True
    while pending and (expand > 0 or len(pending) < wanted):
        # The first directory of every call is finished whatever the time: progress.
        scan.visit(current, pending.popleft(), None if first else deadline)
        first = False
        expand -= 1
        if pending:
            check_deadline(deadline)
    list_in_workers(scan, current, deadline)


def list_in_workers(scan: Scan, current: ScanPass, deadline: float | None) -> None:
    """List every queued directory, with its whole subtree, in the workers; on a deadline the
    ones not answered stay queued."""
    if current.pending:
        _WorkerPool(min(scan.workers, len(current.pending)), deadline, scan).run(current)


def _graft(scan: Scan, current: ScanPass, unit: Pending, errors: int,
           records: list[Record]) -> None:
    """Put a worker's answer for one subtree into the remembered tree and the pass's sums."""
    _, unit_parent, unit_name = unit
    current.errors += errors
    nodes: list[DirState] = []
    for parent_index, name, dir_blocks, ino, mtime, blocks, files, dir_errors, links in records:
        node = DirState(ino, mtime, blocks, files, dir_errors, links, None)
        if parent_index >= 0:
            parent = nodes[parent_index]
            if parent.subdirs is None:
                parent.subdirs = {}
            parent.subdirs[name] = node
        nodes.append(node)
        current.add(dir_blocks, name or unit_name, node, listed=True)
    scan.attach(unit_parent, unit_name, nodes[0] if nodes else None)


class _WorkerPool:
    def __init__(self, size: int, deadline: float | None, scan: Scan) -> None:
        self.size = size
        self.deadline = deadline
        self.scan = scan

    def run(self, current: ScanPass) -> None:
        # A fixed command: the walk's module, run by this interpreter without site-packages or
        # environment (it needs only the standard library); the paths go through stdin.
        command = [sys.executable, "-I", "-S", media_walk.__file__]
        procs = [subprocess.Popen(command, stdin=subprocess.PIPE,  # noqa: S603
                                  stdout=subprocess.PIPE) for _ in range(self.size)]
        in_flight: dict[subprocess.Popen[bytes], deque[Pending]] = {p: deque() for p in procs}
        finished = False
        try:
            self._dispatch(procs, current, in_flight)
            finished = True
        except OSError as exc:  # a worker died under us: its pipe broke
            raise FilesError(f"a scan worker for {self.scan.path} failed: {exc}") from None
        finally:
            for proc in procs:
                _close_quietly(proc.stdin)
                if not finished:
                    proc.kill()
                    current.pending.extend(in_flight[proc])  # not answered: next time
                proc.wait()
                _close_quietly(proc.stdout)

    def _dispatch(self, procs: list[subprocess.Popen[bytes]], current: ScanPass,
                  in_flight: dict[subprocess.Popen[bytes], deque[Pending]]) -> None:
        buffers: dict[subprocess.Popen[bytes], bytes] = {}
        units = current.pending
        with selectors.DefaultSelector() as selector:
            for proc in procs:
                assert proc.stdout is not None
                selector.register(proc.stdout, selectors.EVENT_READ, proc)
                buffers[proc] = b""
                # Several subtrees in flight per worker: it never waits on us between them.
                self._feed(proc, units, in_flight[proc], _IN_FLIGHT)
            while any(in_flight.values()):
                left = None if self.deadline is None else self.deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise ScanDeadline
                for key, _ in selector.select(left):
                    proc = key.data
                    chunk = os.read(key.fd, 1 << 20)
                    if not chunk:
                        if in_flight[proc]:
                            raise FilesError(f"a scan worker for {self.scan.path} exited with "
                                             f"code {proc.wait()} before answering")
                        selector.unregister(key.fileobj)
                        continue
                    buffers[proc] = self._answers(buffers[proc] + chunk, proc, current,
                                                  in_flight[proc])

    def _answers(self, buffer: bytes, proc: subprocess.Popen[bytes], current: ScanPass,
                 sent: deque[Pending]) -> bytes:
        """Graft every whole frame in ``buffer``; return what is left of it."""
        while len(buffer) >= FRAME.size:
            (size,) = FRAME.unpack_from(buffer)
            end = FRAME.size + size
            if len(buffer) < end:
                break
            # Our own child process, started above, wrote this frame.
            errors, records = marshal.loads(buffer[FRAME.size:end])  # noqa: S302
            buffer = buffer[end:]
            _graft(self.scan, current, sent.popleft(), errors, records)
            self._feed(proc, current.pending, sent, 1)
        return buffer

    @staticmethod
    def _feed(proc: subprocess.Popen[bytes], units: deque[Pending], sent: deque[Pending],
              count: int) -> None:
        assert proc.stdin is not None
        for _ in range(count):
            if not units:
                break
            unit = units.popleft()
            sent.append(unit)
            proc.stdin.write(unit[0] + b"\0")
        if units:
            proc.stdin.flush()
        else:
            _close_quietly(proc.stdin)  # end of work: the worker exits after its last answer


def _close_quietly(stream: IO[bytes] | None) -> None:
    if stream is not None and not stream.closed:
        with contextlib.suppress(OSError):  # the worker is gone: nothing left to flush to
            stream.close()
