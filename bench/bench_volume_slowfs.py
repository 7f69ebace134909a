"""The media scan on a slow filesystem: the same tree and churn as ``bench_volume``, read through
a FUSE passthrough that waits before every operation (``bench/slowfs.py``), as a volume on a
network share answers each lookup, ``stat`` and directory read after a round trip.

Needs root, ``/dev/fuse`` and Debian's ``python3-fuse`` (``apt-get install python3-fuse``);
without them it says so and measures nothing. ``BENCH_SLOWFS_FILES`` (30,000) sets the tree,
``BENCH_SLOWFS_DELAY`` (0.0003 s) the wait per operation. The churn goes to the backing
directory, as the WA containers write to the share while the exporter reads it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.bench_volume import Churn, time_du, time_scan, wait_out_racy_window, write_tree
from exporter.sources.media import MediaScan
from tests.support import wait_for

FILES = int(os.environ.get("BENCH_SLOWFS_FILES", "30000"))
DELAY = float(os.environ.get("BENCH_SLOWFS_DELAY", "0.0003"))
SYSTEM_PYTHON = "/usr/bin/python3"
OPTIONS = "use_ino,attr_timeout=0,entry_timeout=0,negative_timeout=0,ro"


def fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import fuse"], capture_output=True, check=False)
    if probe.returncode != 0:
        return "no python3-fuse for the system python3 (apt-get install python3-fuse)"
    if shutil.which("fusermount") is None:
        return "no fusermount"
    return None


def main() -> None:
    missing = fuse_missing()
    if missing:
        print(f"  slow filesystem: {missing}; nothing measured")
        return
    workers = min(4, len(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory(prefix="wax-bench-slowfs-") as tmp:
        backing, mount = Path(tmp) / "backing", Path(tmp) / "mnt"
        mount.mkdir()
        print(f"  writing {FILES:,} files ...", flush=True)
        leaves, _ = write_tree(backing, FILES)
        server = subprocess.Popen(
            [SYSTEM_PYTHON, str(Path(__file__).with_name("slowfs.py")), str(mount), "-f", "-o",
             OPTIONS], env={**os.environ, "SLOWFS_ROOT": str(backing),
                            "SLOWFS_DELAY": str(DELAY)})
        try:
            wait_for(lambda: os.path.ismount(mount), what="the FUSE mount")
            results = measure(backing, mount, leaves, workers)
        finally:
            subprocess.run(["fusermount", "-u", str(mount)], check=False)
            server.wait(timeout=30)
        shutil.rmtree(backing)
    print(json.dumps(results, indent=2))


def measure(backing: Path, mount: Path, leaves: list[str], workers: int) -> dict[str, object]:
    wait_out_racy_window()
    du_s, du_b = time_du(mount)
    first_s, first_b, _, _ = time_scan(MediaScan(mount, workers=workers))
    assert first_b == du_b == time_du(backing)[1], (first_b, du_b)
    results: dict[str, object] = {
        "files": FILES, "directories": 1 + 256 + len(leaves), "delay_s": DELAY,
        "workers": workers, "du_s": round(du_s, 2), "first_scan_s": round(first_s, 2),
        "first_ratio": round(first_s / du_s, 3)}
    scan = MediaScan(mount, workers=workers, full_every=10**9)
    scan.scan()
    churn = Churn(backing, leaves)
    for clustered in (False, True):
        churn.apply(FILES // 100, clustered)
        wait_out_racy_window()
        du_s, du_b = time_du(mount)
        scan_s, scan_b, listed, _ = time_scan(scan)
        assert abs(scan_b - du_b) <= du_b * 0.005, (scan_b, du_b)
        results[f"refresh_1%_{'clustered' if clustered else 'spread'}"] = {
            "du_s": round(du_s, 2), "scan_s": round(scan_s, 2), "ratio": round(scan_s / du_s, 3),
            "listed": listed}
    print(f"  {FILES:,} files behind {DELAY * 1000:g} ms per operation: du {results['du_s']} s, "
          f"first scan {results['first_ratio']}x du; refresh after 1% churn: spread "
          f"{results['refresh_1%_spread']['ratio']}, "  # type: ignore[index]
          f"clustered {results['refresh_1%_clustered']['ratio']} of du",  # type: ignore[index]
          flush=True)
    return results


if __name__ == "__main__":
    main()
