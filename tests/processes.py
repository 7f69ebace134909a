"""Stopping a child process the way every harness here does: ask, wait, then kill.

Standard library only: the demo (which installs neither pytest nor requests) uses it too.
"""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes],
                 timeout: float = 10.0) -> None:
    """SIGTERM, up to ``timeout`` seconds to exit, then SIGKILL; always reaped."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
