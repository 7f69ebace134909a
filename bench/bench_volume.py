"""The media volume scan against ``du -s`` on the same trees, same run: first scan, steady-state
refreshes after churn, warm and cold cache, and the exporter's RSS at each size.

Each tree (``BENCH_VOLUME_SIZES``, default 100,000 and 1,000,000 files) is written to a
temporary directory under ``BENCH_VOLUME_DIR`` (default the system's) and removed afterwards:
files of 1-4 KiB in a two-level fan-out like a media store — 256 top directories, leaves of
about ``BENCH_VOLUME_PER_DIR`` (16) files. Churn is 45 % new files, 45 % deletions and 10 %
moves to another leaf, either *spread* over random leaves (a hashed store: the worst case) or
*clustered* in as few consecutive leaves as it fills (a store that files media by arrival).
Between the churn and the refresh the bench waits out the scan's 2 s racy window, as the 5
minutes between two refreshes would. Warm: both warmed once, medians of ``BENCH_VOLUME_REPEAT``
(3). Cold: ``/proc/sys/vm/drop_caches`` before each timed run (root only; else left out).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from exporter.sources.media import MediaScan
from exporter.sources.media_walk import RACY_NS
from tests.support import run_exporter, value, wait_for

SIZES = [int(s) for s in os.environ.get("BENCH_VOLUME_SIZES", "100000,1000000").split(",")]
PER_DIR = int(os.environ.get("BENCH_VOLUME_PER_DIR", "16"))
REPEAT = int(os.environ.get("BENCH_VOLUME_REPEAT", "3"))
BASE = os.environ.get("BENCH_VOLUME_DIR") or None
TOPS = 256
FIRST_GOAL, REFRESH_GOAL = 1.2, 0.1


def _leaves(files: int) -> list[str]:
    per_top = max(1, round(files / PER_DIR / TOPS))
    return [f"{a:02x}/{b:04x}" for a in range(TOPS) for b in range(per_top)]


def _write_top(job: tuple[str, list[tuple[str, int]]]) -> None:
    root, leaves = job
    rng = random.Random(leaves[0][0])
    for leaf, count in leaves:
        path = os.path.join(root, leaf)
        os.makedirs(path)
        fd = os.open(path, os.O_RDONLY)
        try:
            for j in range(count):
                out = os.open(f"media-{j}.jpg", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                              dir_fd=fd)
                os.write(out, b"m" * rng.randint(1024, 4096))
                os.close(out)
        finally:
            os.close(fd)


def write_tree(root: Path, files: int) -> tuple[list[str], float]:
    """The tree, written by one process per CPU; return its leaves and the seconds taken."""
    started = time.perf_counter()
    leaves = _leaves(files)
    counts = [files // len(leaves) + (i < files % len(leaves)) for i in range(len(leaves))]
    jobs: dict[str, list[tuple[str, int]]] = {}
    for leaf, count in zip(leaves, counts, strict=True):
        jobs.setdefault(leaf[:2], []).append((leaf, count))
    with multiprocessing.Pool(len(os.sched_getaffinity(0))) as pool:
        pool.map(_write_top, [(str(root), batch) for batch in jobs.values()])
    return leaves, time.perf_counter() - started


class Churn:
    """Adds, deletes and moves files as a busy WA install does between two refreshes."""

    def __init__(self, root: Path, leaves: list[str]) -> None:
        self.root = root
        self.leaves = leaves
        self.rng = random.Random(7)
        self.serial = 0
        self.window = 0

    def apply(self, changes: int, clustered: bool) -> None:
        if clustered:  # consecutive leaves, as many as the changes fill
            span = max(1, changes // PER_DIR)
            start = self.window % len(self.leaves)
            self.window += span
            pool = [self.leaves[(start + i) % len(self.leaves)] for i in range(span)]
        else:
            pool = self.leaves
        done = 0
        while done < changes:
            leaf = self.root / self.rng.choice(pool)
            kind = self.rng.random()
            self.serial += 1
            if kind < 0.45:
                (leaf / f"new-{self.serial}.jpg").write_bytes(b"n" * self.rng.randint(1024, 4096))
                done += 1
                continue
            victim = self._existing(leaf)
            if victim is None:
                continue
            if kind < 0.9:
                victim.unlink()
            else:
                victim.rename(self.root / self.rng.choice(pool) / f"moved-{self.serial}.jpg")
            done += 1

    def _existing(self, leaf: Path) -> Path | None:
        with os.scandir(leaf) as entries:
            names = [e.name for e in entries]
        return leaf / self.rng.choice(names) if names else None


def drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (du, the scan's workers) so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


CPU: list[float] = []  # CPU seconds of the last timed run; the wall clock is shared


def time_du(root: Path, cold: bool = False) -> tuple[float, int]:
    if cold:
        drop_caches()
    started, cpu = time.perf_counter(), cpu_seconds()
    out = subprocess.run(["du", "-s", "-B1", str(root)], capture_output=True, check=True).stdout
    CPU[:] = [cpu_seconds() - cpu]
    return time.perf_counter() - started, int(out.split()[0])


def time_scan(scan: MediaScan, cold: bool = False) -> tuple[float, int, int, int]:
    if cold:
        drop_caches()
    started, cpu = time.perf_counter(), cpu_seconds()
    result = scan.scan()
    CPU[:] = [cpu_seconds() - cpu]
    return (time.perf_counter() - started, result.allocated_bytes, result.directories_listed,
            result.state_bytes)


def wait_out_racy_window() -> None:
    """Write the churn back (its writeback would blur both timings), then let the racy
    window pass, as the minutes between two refreshes do; a model of time, not a sync."""
    os.sync()
    time.sleep(RACY_NS / 1e9 + 0.2)


def exporter_rss(root: Path, tmp: Path) -> dict[str, float]:
    """The real exporter scanning ``root``: RSS (kB) once its first scan is done."""
    config = f"""
collectors:
  messages: {{enabled: false}}
  containers: {{enabled: false}}
  logs: {{enabled: false}}
  volume: {{path: {root}, interval: 1h}}
  volume_scan: {{interval: 1h, timeout: 30m, stale_after: 2h}}
"""
    with run_exporter(config=config, tmp_path=tmp) as exporter:
        samples = wait_for(lambda: (s := exporter.metrics()) and value(
            s, "whatsapp_exporter_collector_success", collector="volume_scan") == 1 and s,
            timeout=1800, interval=0.5, what="the exporter's first scan")
        status = Path(f"/proc/{exporter.proc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    return {"rss_kb": int(fields["VmRSS"].split()[0]), "hwm_kb": int(fields["VmHWM"].split()[0]),
            "state_bytes": value(samples, "whatsapp_media_volume_scan_state_bytes",
                                 volume="whatsappMedia") or 0}


def measure(files: int, workers: int, cold_ok: bool, tmp: Path) -> dict[str, object]:
    root = tmp / "wamedia"
    print(f"  writing {files:,} files ...", flush=True)
    leaves, write_s = write_tree(root, files)
    directories = 1 + TOPS + len(leaves)
    wait_out_racy_window()
    time_du(root)
    time_scan(MediaScan(root, workers=workers))  # warm both
    first: list[tuple[float, float, float, float]] = []
    for _ in range(REPEAT):
        du_s, du_b = time_du(root)
        du_cpu = CPU[0]
        scan_s, scan_b, _, _ = time_scan(MediaScan(root, workers=workers))
        assert scan_b == du_b, (scan_b, du_b)
        first.append((du_s, scan_s, du_cpu, CPU[0]))
    row: dict[str, object] = {
        "files": files, "directories": directories, "write_tree_s": round(write_s, 1),
        "first_du_s": round(statistics.median(r[0] for r in first), 3),
        "first_scan_s": round(statistics.median(r[1] for r in first), 3),
        "first_du_cpu_s": round(statistics.median(r[2] for r in first), 3),
        "first_scan_cpu_s": round(statistics.median(r[3] for r in first), 3)}
    row["first_ratio"] = round(row["first_scan_s"] / row["first_du_s"], 3)  # type: ignore[operator]
    scan = MediaScan(root, workers=workers, full_every=10**9)
    scan.scan()
    churn = Churn(root, leaves)
    for label, share in (("0.1%", 0.001), ("1%", 0.01)):
        for clustered in (False, True):
            runs = []
            for _ in range(REPEAT):
                churn.apply(int(files * share), clustered)
                wait_out_racy_window()
                du_s, du_b = time_du(root)
                du_cpu = CPU[0]
                scan_s, scan_b, listed, _ = time_scan(scan)
                assert abs(scan_b - du_b) <= du_b * 0.005, (scan_b, du_b)
                runs.append((du_s, scan_s, listed, du_cpu, CPU[0]))
            key = f"refresh_{label}_{'clustered' if clustered else 'spread'}"
            du_med = statistics.median(r[0] for r in runs)
            scan_med = statistics.median(r[1] for r in runs)
            row[key] = {"du_s": round(du_med, 3), "scan_s": round(scan_med, 3),
                        "ratio": round(scan_med / du_med, 3),
                        "cpu_ratio": round(statistics.median(r[4] for r in runs)
                                           / statistics.median(r[3] for r in runs), 3),
                        "listed": int(statistics.median(r[2] for r in runs))}
    if cold_ok:
        du_s, _ = time_du(root, cold=True)
        scan_s, _, _, _ = time_scan(MediaScan(root, workers=workers), cold=True)
        row["cold_first"] = {"du_s": round(du_s, 3), "scan_s": round(scan_s, 3),
                             "ratio": round(scan_s / du_s, 3)}
        for clustered in (False, True):
            churn.apply(files // 100, clustered)
            wait_out_racy_window()
            du_s, _ = time_du(root, cold=True)
            scan_s, _, listed, _ = time_scan(scan, cold=True)
            row[f"cold_refresh_1%_{'clustered' if clustered else 'spread'}"] = {
                "du_s": round(du_s, 3), "scan_s": round(scan_s, 3),
                "ratio": round(scan_s / du_s, 3), "listed": listed}
    row.update(exporter_rss(root, tmp))
    print("  removing the tree ...", flush=True)
    shutil.rmtree(root)
    return row


def main() -> None:
    cpus = len(os.sched_getaffinity(0))
    workers = min(4, cpus)  # the exporter's default
    cold_ok = drop_caches()
    if not cold_ok:
        print("  cold cache: cannot write /proc/sys/vm/drop_caches (not root): left out")
    rows = []
    for files in SIZES:
        with tempfile.TemporaryDirectory(prefix="wax-bench-volume-", dir=BASE) as tmp:
            row = measure(files, workers, cold_ok, Path(tmp))
        rows.append(row)
        spread = row["refresh_1%_spread"]
        clustered = row["refresh_1%_clustered"]
        print(f"  {files:,} files, {row['directories']:,} dirs: first scan {row['first_scan_s']} s"
              f" vs du {row['first_du_s']} s = {row['first_ratio']} (goal <= {FIRST_GOAL}); "
              f"refresh after 1% churn: spread {spread['ratio']}, "  # type: ignore[index]
              f"clustered {clustered['ratio']} of du (goal <= {REFRESH_GOAL}); "  # type: ignore[index]
              f"RSS {row['rss_kb']} kB, state {row['state_bytes']:,.0f} B", flush=True)
    print(json.dumps({"cpus": cpus, "workers": workers, "per_dir": PER_DIR, "repeat": REPEAT,
                      "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
