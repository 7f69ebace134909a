"""The media volume scan against ``du -s`` on the same tree of >= 300,000 files, same run.

The tree (hashed two-level directories, like a media store; small files of varied sizes) is
written to a temporary directory and removed afterwards. Page caches cannot be dropped, so
both are warmed once and then timed alternately; the figure is the ratio of medians.
``BENCH_VOLUME_FILES`` changes the size, ``BENCH_VOLUME_REPEAT`` the repetitions.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from exporter.sources.files import scan_tree

FILES = int(os.environ.get("BENCH_VOLUME_FILES", "300000"))
REPEAT = int(os.environ.get("BENCH_VOLUME_REPEAT", "5"))
GOAL = 1.2


def _write_tree(root: Path, files: int) -> float:
    """256 leaf directories under 16 parents, files of 0..1500 bytes; return seconds taken."""
    started = time.perf_counter()
    leaves = [root / f"{a:x}" / f"{a:x}{b:x}" for a in range(16) for b in range(16)]
    payloads = [b"m" * (100 * k) for k in range(16)]
    for n, leaf in enumerate(leaves):
        leaf.mkdir(parents=True)
        fd = os.open(leaf, os.O_RDONLY)
        try:
            for i in range(n, files, len(leaves)):
                out = os.open(f"media-{i:07d}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                              dir_fd=fd)
                os.write(out, payloads[i % len(payloads)])
                os.close(out)
        finally:
            os.close(fd)
    return time.perf_counter() - started


def _du(root: Path) -> tuple[float, int]:
    started = time.perf_counter()
    out = subprocess.run(["du", "-s", "-B1", str(root)], capture_output=True, check=True).stdout
    return time.perf_counter() - started, int(out.split()[0])


def _scan(root: Path, workers: int) -> tuple[float, int, int]:
    started = time.perf_counter()
    usage = scan_tree(root, workers=workers)
    return time.perf_counter() - started, usage.allocated_bytes, usage.files


def main() -> None:
    cpus = len(os.sched_getaffinity(0))
    workers = min(4, cpus)  # the exporter's default
    with tempfile.TemporaryDirectory(prefix="wax-bench-volume-") as tmp:
        root = Path(tmp) / "wamedia"
        print(f"  writing {FILES:,} files ...", flush=True)
        write_s = _write_tree(root, FILES)
        _du(root)
        _scan(root, workers)  # warm both: dentries and inodes in cache
        du_times, scan_times, single_times = [], [], []
        for _ in range(REPEAT):
            du_s, du_bytes = _du(root)
            scan_s, scan_bytes, counted = _scan(root, workers)
            single_s, single_bytes, _ = _scan(root, 1)
            assert scan_bytes == du_bytes == single_bytes, (scan_bytes, du_bytes, single_bytes)
            assert counted == FILES, counted
            du_times.append(du_s)
            scan_times.append(scan_s)
            single_times.append(single_s)
        print("  removing the tree ...", flush=True)
        shutil.rmtree(root)
    du_med, scan_med, single_med = (statistics.median(t) for t in
                                    (du_times, scan_times, single_times))
    results = {
        "files": FILES, "cpus": cpus, "workers": workers, "repeat": REPEAT,
        "write_tree_s": round(write_s, 2), "used_bytes": du_bytes,
        "du_s_median": round(du_med, 4), "scan_s_median": round(scan_med, 4),
        "scan_1_worker_s_median": round(single_med, 4),
        "ratio_scan_to_du": round(scan_med / du_med, 3),
        "ratio_1_worker_to_du": round(single_med / du_med, 3), "goal_ratio": GOAL,
        "du_s": [round(t, 4) for t in du_times], "scan_s": [round(t, 4) for t in scan_times],
    }
    print(f"  {FILES:,} files, {cpus} CPUs: du -s {du_med * 1000:.0f} ms, scan with {workers} "
          f"workers {scan_med * 1000:.0f} ms, ratio {results['ratio_scan_to_du']:.2f} "
          f"(goal <= {GOAL}); one worker {single_med * 1000:.0f} ms, ratio "
          f"{results['ratio_1_worker_to_du']:.2f}; same bytes as du: yes", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
