"""Soak: the real exporter for ``SOAK_SECONDS`` (default 600) while its world keeps changing;
its memory, file descriptors, threads and child processes must stay flat.

The world, all on this machine and on loopback, at rates far above the defaults:

- MariaDB (``WAX_TEST_MYSQL_URL``, default root@127.0.0.1:3306), or PostgreSQL with
  ``SOAK_ENGINE=PGSQL`` (``WAX_TEST_PG_URL``, default postgres@127.0.0.1:5432): a ``messages``
  table in a database of its own, ``wax_soak<pid>_main``, filled to ``SOAK_ROWS`` rows
  (10,000,000) at the start, with 500 rows inserted every 2 s;
- the WA API stand-in (``tests/wa_standin``), whose message GC deletes the oldest read rows
  (at most 5,000 a round) and posts its callback to the exporter's ``/webhook/wa-callback``,
  and whose media GC deletes aged files;
- query-exporter (``bench/soak_reference.py``) on the same table with a cached
  ``COUNT(*)``, the memory anchor;
- three stand-in WA containers (webapp, coreapp, master1) writing their logs five times a
  second, rotated at 4 KiB by ``cleanup.sh`` with 10 archived files kept;
- a media directory (3 x 16 directories and more coming and going) where files are added,
  aged and removed every second.

The driver fires the Alertmanager webhook (gc every 20 s, cleanup every 25 s, media_gc every
45 s; cooldowns 15, 20 and 30 s), a schedule runs cleanup every minute, and every 30 s it
either restarts the coreapp container or stops master1, waits until the exporter reports it
down, and starts it again. It scrapes ``/metrics`` every second (as Prometheus would: keep-alive,
OpenMetrics, gzip) and reads the exporter's VmRSS, open fds, threads and child processes (the
volume scan's workers) from ``/proc`` every 10 s; query-exporter is scraped and sampled alike.

    make soak                       # 10 minutes
    SOAK_SECONDS=120 make soak      # shorter
    SOAK_ENGINE=PGSQL make soak     # the WA database on PostgreSQL instead of MariaDB
    SOAK_ROWS=1000000 make soak     # a smaller table than the 10,000,000 rows (faster fill)
    SOAK_JSON=soak.json SOAK_LOG=exporter.log make soak   # keep every figure and its log
    SOAK_FOOTPRINT=1 make soak      # the import footprint even when RSS is within its goal

Goals: RSS grows less than 10 % from the end of the warm-up (60 s) to the end, and its peak
(VmHWM) is at most query-exporter's peak in the same run; open fds, threads and child
processes stay flat (after warm-up, the lowest count of the run's last third is not above the
highest of its first third: a request, an action or a scan comes and goes, a connection pool
levels off at its bound, a leak keeps climbing); every scrape is answered; the exporter stays
up and logs no traceback; every change to the world succeeds (and a run of 2 minutes or more
sees at least 2 GC and 2 cleanup runs and a container restart). When RSS is over its goal, the
report adds where a bare ``import exporter.app`` puts its memory.

Exit status: 0 every goal met, 1 a goal missed (each is printed), 2 the world could not be
set up, 130 interrupted. Everything it makes is removed at the end, also on Ctrl-C or SIGTERM:
the exporter, its containers (compose project ``wasoak<pid>``), its database and its temporary
directory; what a killed run left behind is removed at the next start.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import sqlalchemy as sa
from docker.errors import DockerException
from docker.models.containers import Container
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_format_families

from bench.soak_reference import ReferenceExporter, fill_messages, query_exporter
from tests.docker_support import (
    DockerUnavailable,
    build_standin_image,
    ensure_docker,
    remove_test_containers,
    start_wa_container,
)
from tests.support import DatabaseServer, ExporterProcess, wait_for
from tests.support import connect_server as tests_connect_server
from tests.wa_standin.schema import insert_messages
from tests.wa_standin.server import StandIn

DURATION = float(os.environ.get("SOAK_SECONDS", "600"))
WARMUP = min(60.0, DURATION / 4)  # the "start" figures are the first sample after this
SCRAPE_EVERY = 1.0
SCRAPE_TIMEOUT = 5.0
SAMPLE_EVERY = 10.0
CHILD_POLL_EVERY = 0.2  # a scan's workers live well under a second
GOAL_RSS_GROWTH_PERCENT = 10.0
DRAIN_TIMEOUT = 60.0  # runs still in flight at the end must finish within this

TOKEN = "soak-webhook-token"
ROWS_PER_INSERT = 500
GC_ROWS_PER_ROUND = 5_000  # about what 20 s of inserts make read; the big fill stays big
SOAK_LABEL = "wa-exporter.soak"  # value: the driver's pid, to find a killed run's containers
DB_PATTERN = re.compile(r"^wax_soak(\d+)_")
TMP_PATTERN = re.compile(r"/wa-soak(\d+)-[^/]*/")
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0;q=0.9,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
CONTAINER_ENV = {"WA_LOG_WRITER": "1", "WA_LOG_INTERVAL": "0.2", "WA_ROTATE_BYTES": "4096",
                 "WA_ARCHIVE_KEEP": "10"}
ROTATED = re.compile(r"^rotated \S+ -> archive/", re.MULTILINE)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class SetupFailed(RuntimeError):
    """A part of the world (Docker, the database, the exporter) could not be set up."""


def ticks(stop: threading.Event, period: float, offset: float = 0.0) -> Iterator[float]:
    """Yield at ``offset`` + k * ``period`` seconds from now until ``stop`` is set; ticks
    missed while the caller was busy are skipped, never bunched up."""
    due = time.monotonic() + offset
    while not stop.wait(max(0.0, due - time.monotonic())):
        yield due
        due += period * max(1, math.ceil((time.monotonic() - due) / period))


# --- the exporter process, from /proc ---------------------------------------------------------

# x86-64 system call numbers of what an idle or blocked thread is usually doing.
SYSCALLS = {0: "read", 1: "write", 7: "poll", 23: "select", 35: "nanosleep", 43: "accept",
            44: "sendto", 45: "recvfrom", 47: "recvmsg", 61: "wait4", 74: "fsync",
            75: "fdatasync", 202: "futex", 230: "clock_nanosleep", 232: "epoll_wait",
            271: "ppoll", 281: "epoll_pwait", 288: "accept4"}
ON_FD = {"read", "write", "accept", "sendto", "recvfrom", "recvmsg", "accept4"}  # fd first
ON_POLLFD = {"poll", "ppoll"}  # a struct pollfd array first; Python polls one fd at a time


@dataclass(frozen=True)
class ProcSample:
    t: float  # seconds since the exporter was ready
    rss_kb: int
    rss_anon_kb: int
    hwm_kb: int  # peak RSS so far (VmHWM)
    fds: int
    threads: int
    children: int
    zombies: int
    children_cpu_s: float  # CPU of children that exited and were waited for
    fd_kinds: dict[str, int]  # open descriptors by what they are
    thread_states: dict[str, int]  # threads by the system call they wait in, and on what


def _status(pid: int) -> dict[str, str]:
    pairs = (line.partition(":") for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return {key: value.strip() for key, _, value in pairs}


def _kb(text: str) -> int:
    return int(text.split()[0])


def mb(kb: float) -> float:
    return kb / 1024


def _stat_fields(pid: int) -> list[str]:
    """``/proc/<pid>/stat`` from field 3 (state) on; the command name may hold spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended while we looked
            found += [int(p) for p in (task / "children").read_text().split()]
    return found


def _socket_peers(pid: int) -> dict[str, str]:
    """Socket inode -> what it is (``tcp to port 3306``, ``tcp accepted on :9864``,
    ``unix <path>``), from the process's own network namespace."""
    rows: list[tuple[str, int, int]] = []  # inode, local port, remote port
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                rows.append((fields[9], int(fields[1].rpartition(":")[2], 16),
                             int(fields[2].rpartition(":")[2], 16)))
    listening = {local for _, local, remote in rows if remote == 0}
    peers = {inode: ("tcp listening" if remote == 0 else
                     "tcp accepted (HTTP client)" if local in listening else
                     f"tcp to port {remote}") for inode, local, remote in rows}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/net/unix").read_text().splitlines()[1:]:
            fields = line.split()
            peers[fields[6]] = "unix " + (fields[7] if len(fields) > 7 else "(client)")
    return peers


def fd_map(pid: int) -> dict[int, str]:
    """Each open descriptor and what it is: a socket by its peer, a pipe, a file."""
    peers = _socket_peers(pid)
    kinds: dict[int, str] = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                kinds[int(fd.name)] = peers.get(target[8:-1], "socket (other)")
            elif target.startswith(("pipe:", "anon_inode:")):
                kinds[int(fd.name)] = target.split("[")[0].rstrip(":")
            else:
                kinds[int(fd.name)] = "file " + target
    return kinds


def thread_states(pid: int, fds: dict[int, str]) -> dict[str, int]:
    """Threads by what they wait in (``/proc/<pid>/task/<tid>/syscall``): ``futex`` is a lock,
    event or sleep; a read or poll names the descriptor's kind, so a thread stuck on the
    Docker socket shows as such. Threads that end while being read are left out."""
    states: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            words = (task / "syscall").read_text().split()
        except OSError:
            continue
        if not words or not words[0].isdigit():
            states[words[0] if words else "?"] += 1  # "running"
            continue
        name = SYSCALLS.get(int(words[0]), f"syscall {words[0]}")
        fd: int | None = int(words[1], 16) if name in ON_FD else None
        if name in ON_POLLFD and int(words[2], 16) == 1:
            with contextlib.suppress(OSError), open(f"/proc/{pid}/mem", "rb") as mem:
                mem.seek(int(words[1], 16))
                fd = int.from_bytes(mem.read(4), "little", signed=True)
        states[name if fd is None else f"{name} on {fds.get(fd, 'fd ' + str(fd))}"] += 1
    return dict(states.most_common())


def sample_process(pid: int, t: float) -> ProcSample:
    status = _status(pid)
    children = children_of(pid)
    zombies = 0
    for child in children:
        with contextlib.suppress(OSError):
            zombies += _stat_fields(child)[0] == "Z"
    fields = _stat_fields(pid)
    fds = fd_map(pid)
    # Counted from the same listing as their states: refreshes start short-lived threads
    # every few seconds, and two listings a moment apart disagree.
    states = thread_states(pid, fds)
    return ProcSample(
        t=round(t, 1), rss_kb=_kb(status["VmRSS"]), rss_anon_kb=_kb(status["RssAnon"]),
        hwm_kb=_kb(status["VmHWM"]), fds=len(fds), threads=sum(states.values()),
        children=len(children), zombies=zombies,
        children_cpu_s=(int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK"),
        fd_kinds=dict(Counter(fds.values()).most_common()), thread_states=states)


def memory_breakdown(pid: int) -> dict[str, float]:
    """MiB from ``smaps_rollup``: RSS, its anonymous and file-backed parts, PSS (shared pages
    split among their users) and USS (pages only this process holds)."""
    rollup = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:])
    value = {key: _kb(text) for key, text in rollup.items()}
    return {"rss": round(mb(value["Rss"]), 1), "anon": round(mb(value["Anonymous"]), 1),
            "file": round(mb(value["Rss"] - value["Anonymous"]), 1),
            "pss": round(mb(value["Pss"]), 1),
            "uss": round(mb(value["Private_Clean"] + value["Private_Dirty"]), 1)}


class ChildWatcher(threading.Thread):
    """Polls the exporter's children often enough to see each scan's workers come and go."""

    def __init__(self, pid: int, stop: threading.Event) -> None:
        super().__init__(name="child-watcher", daemon=True)
        self.pid, self.stop = pid, stop
        self.seen: set[int] = set()
        self.most_at_once = 0
        self.largest_rss_kb = 0  # a worker's memory is not in the exporter's RSS

    def run(self) -> None:
        parent = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        for _ in ticks(self.stop, CHILD_POLL_EVERY):
            with contextlib.suppress(OSError):
                children = children_of(self.pid)
                self.seen.update(children)
                self.most_at_once = max(self.most_at_once, len(children))
                for child in children:
                    with contextlib.suppress(OSError, KeyError):
                        # Between fork and exec a child still shows the parent's memory.
                        if Path(f"/proc/{child}/cmdline").read_bytes() != parent:
                            self.largest_rss_kb = max(self.largest_rss_kb,
                                                      _kb(_status(child)["VmRSS"]))


# --- scraping ---------------------------------------------------------------------------------


def parse_metrics(text: str, content_type: str = "application/openmetrics-text") -> Samples:
    """Samples of an answer in OpenMetrics or, as query-exporter answers, the text format."""
    openmetrics = content_type.startswith("application/openmetrics-text")
    families = (text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
                if openmetrics else text_format_families(text))
    samples: Samples = {}
    for family in families:
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def scrape(session: requests.Session, url: str,
           required: str = "whatsapp_exporter_build_info") -> Samples:
    """One scrape as Prometheus makes it (OpenMetrics, gzip), checked and parsed."""
    response = session.get(url, timeout=SCRAPE_TIMEOUT,
                           headers={"Accept": PROMETHEUS_ACCEPT, "Accept-Encoding": "gzip"})
    response.raise_for_status()
    samples = parse_metrics(response.text, response.headers.get("Content-Type", ""))
    if not any(name == required for name, _ in samples):
        raise ValueError(f"no {required} in the answer")
    return samples


class Scraper(threading.Thread):
    """``/metrics`` every second, as Prometheus scrapes; others wait on what it sees."""

    def __init__(self, url: str, ready_at: float, stop: threading.Event,
                 required: str = "whatsapp_exporter_build_info") -> None:
        super().__init__(name=f"scraper of {url}", daemon=True)
        self.url, self.ready_at, self.stop, self.required = url, ready_at, stop, required
        self.latencies: list[float] = []
        self.failures: list[tuple[float, str]] = []
        self.collector_down: Counter[str] = Counter()  # scrapes showing collector_success 0
        self._latest: Samples = {}
        self._scrapes = 0
        self._cond = threading.Condition()

    def run(self) -> None:
        session = requests.Session()  # keep-alive, as Prometheus
        for _ in ticks(self.stop, SCRAPE_EVERY):
            started = time.perf_counter()
            try:
                samples = scrape(session, self.url, self.required)
                elapsed = time.perf_counter() - started
            except (requests.RequestException, ValueError) as exc:
                self.failures.append((round(time.monotonic() - self.ready_at, 1),
                                      f"{type(exc).__name__}: {exc}"[:300]))
                continue
            self.latencies.append(elapsed)
            for (name, labels), value in samples.items():
                if name == "whatsapp_exporter_collector_success" and value == 0:
                    self.collector_down[dict(labels)["collector"]] += 1
            with self._cond:
                self._latest = samples
                self._scrapes += 1
                self._cond.notify_all()
        session.close()

    def wait_until(self, predicate: Callable[[Samples], bool], what: str,
                   timeout: float = 30.0) -> Samples:
        """The first scrape from now on whose samples satisfy ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            seen = self._scrapes
            while True:
                if self._scrapes > seen:
                    seen = self._scrapes
                    if predicate(self._latest):
                        return self._latest
                left = deadline - time.monotonic()
                if left <= 0 or self.stop.is_set():
                    raise TimeoutError(f"no scrape showed {what} within {timeout:.0f}s")
                self._cond.wait(min(left, 1.0))

    def latest(self) -> Samples:
        with self._cond:
            return dict(self._latest)


def container_up(name: str, up: float) -> Callable[[Samples], bool]:
    def check(samples: Samples) -> bool:
        return any(n == "whatsapp_container_up" and dict(labels).get("container") == name
                   and value == up for (n, labels), value in samples.items())
    return check


# --- the changing world -----------------------------------------------------------------------


class MediaChurn:
    """A media tree like the client's (``inbound``/``outbound``/``shared`` with hashed
    subdirectories), enough directories that the scan hands them to worker processes."""

    TOP = ("inbound", "outbound", "shared")
    BASE_DIRS = 16  # per top directory
    EXTRA_DIRS = 24  # directories that come and go
    MAX_FILES = 1200
    AGED = 40 * 86400  # older than media GC's 30 days

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root, self.rng = root, rng
        self.dirs: list[Path] = []
        self.extra: deque[Path] = deque()
        self.files: deque[Path] = deque()
        self.added = self.removed = self.aged = self.dirs_made = self.dirs_removed = 0
        self.steps = 0
        for top in self.TOP:
            for i in range(self.BASE_DIRS):
                path = root / top / f"{i:02x}"
                path.mkdir(parents=True)
                self.dirs.append(path)
        for _ in range(10 * len(self.dirs)):
            self._add()

    def _add(self) -> None:
        folder = self.rng.choice(self.dirs + list(self.extra))
        path = folder / f"{self.rng.getrandbits(64):016x}.jpg"
        path.write_bytes(b"\xff" * self.rng.randrange(1024, 32 * 1024))
        self.files.append(path)
        self.added += 1

    def step(self) -> None:
        self.steps += 1
        if self.steps % 5 == 0:  # a directory appears; the oldest extra one goes
            if len(self.extra) >= self.EXTRA_DIRS:
                shutil.rmtree(self.extra.popleft(), ignore_errors=True)
                self.dirs_removed += 1
            path = self.root / self.rng.choice(self.TOP) / f"x{self.steps:06d}"
            path.mkdir()
            self.extra.append(path)
            self.dirs_made += 1
        for _ in range(8):
            self._add()
        old = time.time() - self.AGED
        for path in self.rng.sample(list(self.files), 2):  # food for media GC
            with contextlib.suppress(FileNotFoundError):
                os.utime(path, (old, old))
                self.aged += 1
        while len(self.files) > self.MAX_FILES:
            path = self.files.popleft()
            with contextlib.suppress(FileNotFoundError):  # media GC or rmtree was first
                path.unlink()
                self.removed += 1


class Driver:
    """Changes the world on a schedule; each change is a thread of its own, and an error in
    one is recorded, not fatal."""

    def __init__(self, exporter_url: str, stop: threading.Event) -> None:
        self.exporter_url = exporter_url
        self.stop = stop
        self.threads: list[threading.Thread] = []
        self.errors: list[tuple[str, str]] = []
        self.counts: Counter[str] = Counter()
        self.decisions: Counter[tuple[str, str]] = Counter()  # (action, outcome) from answers
        self._lock = threading.Lock()

    def every(self, name: str, period: float, offset: float,
              change: Callable[[int], None]) -> None:
        def loop() -> None:
            for number, _ in enumerate(ticks(self.stop, period, offset)):
                try:
                    change(number)
                except Exception as exc:
                    if self.stop.is_set():  # cut short by the end of the run: not a failure
                        return
                    with self._lock:
                        self.errors.append((name, f"{type(exc).__name__}: {exc}"[:400]))
        thread = threading.Thread(target=loop, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.counts[what] += n

    def fire(self, action: str, alertname: str, container: str | None = None) -> None:
        """POST a firing alert with an ``action`` label, as Alertmanager would."""
        labels = {"alertname": alertname, "action": action, "severity": "warning"}
        if container:
            labels["container"] = container
        body = {"version": "4", "status": "firing", "receiver": "wa-exporter",
                "groupKey": f"soak-{action}", "alerts": [{"status": "firing", "labels": labels}]}
        answer = requests.post(self.exporter_url + "/webhook/alertmanager", json=body,
                               headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        if answer.status_code != 200:
            raise RuntimeError(f"webhook {action}: HTTP {answer.status_code}: {answer.text[:200]}")
        with self._lock:
            for decision in answer.json()["decisions"]:
                self.decisions[(decision["action"], decision["outcome"])] += 1
        self.count(f"webhook {action}")

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.1, deadline - time.monotonic()))


def wait_ready_line(container: Container, since: float) -> None:
    """The entrypoint's ``wa-standin ready`` line, printed after ``since`` (epoch seconds)."""
    wait_for(lambda: b"wa-standin ready" in container.logs(since=since), timeout=30,
             interval=0.1, what=f"{container.name} to be ready again")


def restart(container: Container) -> None:
    since = time.time()
    container.restart(timeout=5)
    wait_ready_line(container, since)


def stop_and_start(container: Container, scraper: Scraper, stop: threading.Event) -> None:
    """Stop, wait until the exporter reports it down, leave it down a while, start again and
    wait until the exporter reports it up."""
    container.stop(timeout=5)
    scraper.wait_until(container_up(container.name or "", 0), f"{container.name} down")
    stop.wait(5)  # down for a few refreshes of every collector: workload, not synchronisation
    since = time.time()
    container.start()
    wait_ready_line(container, since)
    scraper.wait_until(container_up(container.name or "", 1), f"{container.name} up")


# --- set-up and clean-up ----------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(client: docker.DockerClient, server: DatabaseServer) -> list[str]:
    """What earlier soak runs left when their driver was killed (its pid is in every name):
    the exporter still running, containers, databases, temporary directories."""
    removed: list[str] = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError):
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            match = next((m for arg in argv if (m := TMP_PATTERN.search(arg))), None)
            ours_or_reference = "exporter" in argv or any(
                arg.endswith("/query-exporter") for arg in argv)
            if match and ours_or_reference and not _alive(int(match.group(1))):
                os.kill(int(proc.name), signal.SIGTERM)
                removed.append(f"exporter process {proc.name}")
    for container in client.containers.list(all=True, filters={"label": SOAK_LABEL}):
        if not _alive(int(container.labels.get(SOAK_LABEL, "0") or 0)):
            container.remove(force=True)
            removed.append(f"container {container.name}")
    query = ("SHOW DATABASES LIKE 'wax\\_soak%'" if server.engine_name == "MYSQL" else
             "SELECT datname FROM pg_database WHERE datname LIKE 'wax\\_soak%'")
    with server.admin.connect() as conn:
        names = conn.execute(sa.text(query)).scalars().all()
    for name in names:
        match = DB_PATTERN.match(name)
        if match and not _alive(int(match.group(1))):
            server.drop_database(name)
            removed.append(f"database {name}")
    for path in Path(tempfile.gettempdir()).glob("wa-soak*"):
        match = TMP_PATTERN.search(str(path) + "/")
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(f"directory {path}")
    return removed


ENGINE = os.environ.get("SOAK_ENGINE", "MYSQL").upper()


def connect_server() -> DatabaseServer:
    """The test suite's server connection; its skip or failure becomes :class:`SetupFailed`."""
    if ENGINE not in ("MYSQL", "PGSQL"):
        raise SetupFailed(f"SOAK_ENGINE={ENGINE!r}: not MYSQL or PGSQL")
    try:
        return tests_connect_server(ENGINE)
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        variable = "WAX_TEST_MYSQL_URL" if ENGINE == "MYSQL" else "WAX_TEST_PG_URL"
        raise SetupFailed(f"{exc.msg}; start it or set {variable}") from None


def exporter_config(tmp: Path, project: str, media: Path, token_file: Path) -> Path:
    """Every interval far below its default (1m, 15s, 1m, 30s, 5m), so that ten minutes hold
    hours' worth of refreshes; cooldowns short enough for dozens of runs. The query timeout
    stays at its default (20 s): GC counts the 10 M-row table exactly, which takes longer
    than 5 s on a busy 2-core machine."""
    path = tmp / "config.yml"
    path.write_text(f"""
collectors:
  messages: {{interval: 2s, timeout: 20s, query_timeout: 20s}}
  containers: {{interval: 2s, compose_project: {project}}}
  logs: {{interval: 2s}}
  volume: {{interval: 2s, path: {media}}}
  volume_scan: {{interval: 5s, workers: 2}}
actions:
  allowed: [gc, media_gc, cleanup]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {tmp / 'state'}
  cooldown: {{gc: 15s, media_gc: 30s, cleanup: 20s}}
  schedules:
    - {{action: cleanup, cron: "* * * * *"}}
  # The table sits near the 10 M rows at which GC repeats rounds, where the engine's
  # estimate decided by chance whether a run was one round or up to five, 60 s apart (and
  # then still in flight at the end): below the table, every run is two rounds, 5 s apart.
  gc: {{callback_timeout: 10s, settle_interval: 1s, round_timeout: 30s,
        large_table_rows: 5000000, max_rounds: 2, round_pause: 5s}}
  cleanup: {{timeout: 30s}}
webhook:
  bearer_token_file: {token_file}
""")
    return path


# --- the report -------------------------------------------------------------------------------


def audit_records(state: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted(state.glob("audit.jsonl*"), reverse=True):  # .5 … .1, then the live one
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def by_third(values: list[float]) -> list[tuple[int, int]]:
    """(lowest, highest) in each third of the run after warm-up."""
    third = max(1, len(values) // 3)
    parts = [values[:third], values[third:2 * third] or values[-1:],
             values[2 * third:] or values[-1:]]
    return [(int(min(part)), int(max(part))) for part in parts]


def growing(values: list[float]) -> bool:
    """Growth that coming and going cannot explain: even at its lowest, the last third of the
    run holds more than the first third ever did. A request, an action or a scan comes and
    goes, and a pool that fills up to its bound levels off; a leak keeps climbing."""
    (_, first_high), _, (last_low, _) = by_third(values)
    return len(values) >= 6 and last_low > first_high


def percentile(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def rss_of(code: str) -> int | None:
    """VmRSS in kB of a fresh interpreter after running ``code``; None if it fails (a module
    that is not installed)."""
    probe = (code + "\nimport re\nprint(re.search(r'VmRSS:\\s+(\\d+)', "
             "open('/proc/self/status').read()).group(1))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=False, cwd=Path(__file__).resolve().parent.parent)
    return int(done.stdout.split()[-1]) if done.returncode == 0 else None


# What ``import exporter.app`` (and the MySQL driver, loaded when the source is made) brings,
# in an order where each step adds one thing: (label, modules). Shared parts count for the
# first step that loads them: OpenSSL for requests (ssl), cryptography for pymysql. bcrypt
# is not among them: it is loaded with the first basic auth password to check.
FOOTPRINT_STEPS = [
    ("pydantic", "pydantic"),
    ("yaml", "yaml"),
    ("requests + urllib3 + ssl", "requests"),
    ("cryptography", "cryptography.hazmat.primitives.asymmetric.padding"),
    ("pymysql", "pymysql"),
    ("prometheus_client", "prometheus_client"),
    ("croniter + dateutil", "croniter"),
    ("paramiko (ssh extra)", "paramiko"),
    ("docker", "docker"),
    ("sqlalchemy", "sqlalchemy"),
    ("exporter.config", "exporter.config"),
    ("rest of exporter.app", "exporter.app"),
]


def import_footprint() -> list[str]:
    """Where the memory of a bare ``import exporter.app`` goes: the RSS each step of
    FOOTPRINT_STEPS adds, every step in a fresh interpreter that imports all steps so far."""
    bare = rss_of("pass") or 0
    app = rss_of("import exporter.app")
    lines = [f"bare interpreter {mb(bare):.1f} MiB; import exporter.app "
             + (f"{mb(app):.1f} MiB" if app else "fails")]
    previous = bare
    imported: list[str] = []
    for label, modules in FOOTPRINT_STEPS:
        now = rss_of("import " + ", ".join([*imported, modules]))
        if now is None:
            lines.append(f"  + {label:<24}   not installed")
            continue
        imported.append(modules)
        lines.append(f"  + {label:<24} {mb(now - previous):5.1f} MiB")
        previous = now
    loaded = subprocess.run([sys.executable, "-c", "import sys, exporter.app; "
                             "print(len(sys.modules), 'paramiko' in sys.modules)"],
                            capture_output=True, text=True, check=False,
                            cwd=Path(__file__).resolve().parent.parent).stdout.split()
    if loaded:
        lines.append(f"  = {mb(previous):.1f} MiB; import exporter.app loads {loaded[0]} "
                     f"modules, paramiko among them: {loaded[1]}")
    return lines


def exporter_log_findings(lines: list[str]) -> dict[str, Any]:
    """Levels, the warnings and errors by message, tracebacks, and lines that are not logfmt
    (a crash of the interpreter, a worker's stray output)."""
    levels: Counter[str] = Counter()
    problems: Counter[str] = Counter()
    for line in lines:
        level = re.search(r"\blevel=(\w+)", line)
        if level is None:
            continue
        levels[level.group(1)] += 1
        message = re.search(r'\bmsg=("[^"]*"|\S+)', line)
        if level.group(1) in ("warn", "error") and message is not None:
            problems[f"{level.group(1)}: {message.group(1).strip(chr(34))}"] += 1
    tracebacks = [line for line in lines if "Traceback" in line]
    unstructured = [line for line in lines if line and not line.startswith("ts=")]
    return {"levels": dict(levels), "warnings_and_errors": dict(problems),
            "warning_lines": [line for line in lines
                              if re.search(r"\blevel=(warn|error)\b", line)][:20],
            "traceback_count": len(tracebacks), "tracebacks": tracebacks[:5],
            "unstructured_count": len(unstructured), "unstructured": unstructured[:10]}


@dataclass
class Reference:
    """What the soak saw of query-exporter, the memory anchor."""

    process: ReferenceExporter
    samples: list[ProcSample]  # taken at the same moments as the exporter's
    scraper: Scraper
    memory: dict[str, dict[str, float]]  # memory_breakdown() at the last sample


@dataclass
class Run:
    """What a soak run observed, for the report."""

    samples: list[ProcSample]
    scraper: Scraper
    watcher: ChildWatcher
    driver: Driver
    media: MediaChurn
    state: Path  # the exporter's actions.state_dir, with audit.jsonl
    database: str
    rows_at_start: float | None
    final: Samples  # a scrape after the world stopped
    log_lines: list[str]
    exit_code: int | None
    died_at: float | None  # seconds after ready, if the exporter exited on its own
    drained: bool  # every action run finished after the world stopped changing
    memory: dict[str, dict[str, float]]  # memory_breakdown() after warm-up and at the end
    reference: Reference


def action_figures(state: Path) -> dict[str, Any]:
    """From the audit log: runs started and finished by result, messages deleted, cleanup
    results per container and the log files its runs rotated."""
    records = audit_records(state)
    finished = [r for r in records if r.get("event") == "finished"]
    per_container: Counter[str] = Counter()
    failures: list[str] = []
    rotated = 0
    for record in (r for r in finished if r["action"] == "cleanup"):
        for name, info in record.get("containers", {}).items():
            per_container[info.get("result", "?")] += 1
            rotated += len(ROTATED.findall(info.get("output_tail", "")))
            if info.get("result") != "success":
                why = info.get("error") or f"exit code {info.get('exit_code')}: " \
                    f"{info.get('output_tail', '').strip()[-160:]}"
                failures.append(f"{name}: {info.get('result')}: {why}")
    return {
        "started": dict(Counter(r["action"] for r in records if r.get("event") == "decision"
                                and r.get("outcome") == "started")),
        "finished": {action: dict(Counter(r["result"] for r in finished
                                          if r["action"] == action))
                     for action in ("gc", "cleanup", "media_gc")},
        "messages_deleted": sum(r.get("messages_deleted", 0) for r in finished
                                if r["action"] == "gc"),
        "cleanup_per_container": dict(per_container),
        "cleanup_failures": failures[:10],
        "log_files_rotated": rotated,
    }


def rss_figures(samples: list[ProcSample]) -> dict[str, Any]:
    """MiB after warm-up and at the end, growth between them, and the peak (VmHWM)."""
    if not samples:
        return {"start": None, "start_at_s": None, "end": None, "growth_percent": None,
                "max": None, "anon_start": None, "anon_end": None}
    start = next((s for s in samples if s.t >= WARMUP), samples[0])
    end = samples[-1]
    return {"start": round(mb(start.rss_kb), 1), "start_at_s": start.t,
            "end": round(mb(end.rss_kb), 1),
            "growth_percent": round(100.0 * (end.rss_kb - start.rss_kb) / start.rss_kb, 1),
            "max": round(mb(max(max(s.rss_kb for s in samples), end.hwm_kb)), 1),
            "anon_start": round(mb(start.rss_anon_kb), 1),
            "anon_end": round(mb(end.rss_anon_kb), 1)}


def anchor_missed(ours: dict[str, Any], reference: dict[str, Any],
                  reference_to_end: bool) -> str | None:
    """The memory goal, on two :func:`rss_figures`: our peak RSS is at most query-exporter's
    in the same run. Without its figure to the end there is nothing to compare with."""
    if not reference_to_end or reference["max"] is None:
        return ("query-exporter, the memory anchor, was not running to the end: no peak RSS "
                "to compare with")
    if ours["max"] > reference["max"]:
        return (f"peak RSS {ours['max']:.1f} MiB above query-exporter's {reference['max']:.1f} MiB "
                "in the same run (goal: at most)")
    return None


def scrape_figures(scraper: Scraper) -> dict[str, Any]:
    latencies_ms = [1000 * x for x in scraper.latencies]
    return {"ok": len(latencies_ms), "failed": len(scraper.failures),
            "p50_ms": round(percentile(latencies_ms, 50), 1),
            "p99_ms": round(percentile(latencies_ms, 99), 1),
            "max_ms": round(max(latencies_ms, default=float("nan")), 1),
            "failures": scraper.failures[:10]}


def report(run: Run) -> tuple[dict[str, Any], list[str]]:
    """The figures, and the goals missed."""
    samples = run.samples
    after = [s for s in samples if s.t >= WARMUP] or samples
    start, end = after[0], samples[-1]
    rss = rss_figures(samples)
    reference = rss_figures(run.reference.samples)
    series = {name: [float(getattr(s, name)) for s in after]
              for name in ("fds", "threads", "children")}
    actions = action_figures(run.state)
    actions["webhook_decisions"] = {f"{a}:{o}": n
                                    for (a, o), n in sorted(run.driver.decisions.items())}
    log = exporter_log_findings(run.log_lines)
    figures: dict[str, Any] = {
        "duration_s": DURATION, "warmup_s": WARMUP, "engine": ENGINE,
        "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                    "python": platform.python_version()},
        "rss_mb": rss,
        "reference": {
            "tool": run.reference.process.version,
            "interval_s": run.reference.process.interval_s, "rss_mb": reference,
            "memory_mb": run.reference.memory, "scrapes": scrape_figures(run.reference.scraper),
            "threads": [s.threads for s in run.reference.samples][-1:],
            "samples": [{"t": s.t, "rss_kb": s.rss_kb, "hwm_kb": s.hwm_kb}
                        for s in run.reference.samples]},
        **{name: {"start": int(values[0]), "end": int(values[-1]), "max": int(max(values)),
                  "by_third": by_third(values)}
           for name, values in series.items()},
        "memory_mb": run.memory,
        "breakdowns": {
            "fds": {"start": start.fd_kinds, "end": end.fd_kinds,
                    "peak": max(after, key=lambda x: x.fds).fd_kinds},
            "threads": {"start": start.thread_states, "end": end.thread_states,
                        "peak": max(after, key=lambda x: x.threads).thread_states}},
        "children_seen": {"distinct_pids": len(run.watcher.seen),
                          "most_at_once": run.watcher.most_at_once,
                          "largest_rss_mb": round(mb(run.watcher.largest_rss_kb), 1),
                          "zombies_at_samples": sum(s.zombies for s in samples),
                          "reaped_cpu_s": round(end.children_cpu_s, 2)},
        "scrapes": {**scrape_figures(run.scraper),
                    "collector_success_0": dict(run.scraper.collector_down)},
        "actions": actions,
        "world": {**dict(run.driver.counts), "rows_at_start": run.rows_at_start,
                  "rows_at_end": run.final.get(("whatsapp_messages_table_rows",
                                                (("database", run.database),))),
                  "media_files_added": run.media.added,
                  "media_files_removed": run.media.removed,
                  "media_files_aged": run.media.aged, "media_dirs_made": run.media.dirs_made,
                  "media_dirs_removed": run.media.dirs_removed},
        "driver_errors": run.driver.errors[:20],
        "exporter_log": log,
        "exporter_exit_code": run.exit_code,
        "samples": [asdict(s) for s in samples],
    }
    missed: list[str] = []
    if rss["growth_percent"] >= GOAL_RSS_GROWTH_PERCENT:
        missed.append(f"RSS grew {rss['growth_percent']:.1f} % from {start.t:.0f} s to the end "
                      f"(goal < {GOAL_RSS_GROWTH_PERCENT:.0f} %)")
    anchor = anchor_missed(rss, reference, reference["max"] is not None
                           and run.reference.samples[-1].t >= end.t)
    if anchor:
        missed.append(anchor)
    for name, values in series.items():
        if growing(values):
            missed.append(f"{name} keep growing: lowest-highest by third "
                          f"{by_third(values)}")
    if run.scraper.failures:
        missed.append(f"{len(run.scraper.failures)} scrapes failed, first: "
                      f"{run.scraper.failures[0]}")
    if run.died_at is not None:
        missed.append(f"the exporter exited on its own at {run.died_at:.0f} s "
                      f"(code {run.exit_code})")
    elif run.exit_code != 0:
        missed.append(f"the exporter exited with code {run.exit_code} on SIGTERM")
    if run.died_at is None and not run.drained:
        missed.append(f"action runs still in flight {DRAIN_TIMEOUT:.0f} s after the world "
                      "stopped changing")
    if log["traceback_count"]:
        missed.append(f"{log['traceback_count']} tracebacks in the exporter's log")
    if run.driver.errors:
        missed.append(f"{len(run.driver.errors)} changes to the world failed, first: "
                      f"{run.driver.errors[0]}")
    if DURATION >= 120:  # shorter runs only smoke-test this script
        for action in ("gc", "cleanup"):
            if sum(actions["finished"][action].values()) < 2:
                missed.append(f"fewer than 2 {action} runs finished: the world did not change")
        if not run.driver.counts["container restarts"]:
            missed.append("no container was restarted")
    return figures, missed


def print_report(figures: dict[str, Any]) -> None:
    r, s, a = figures["rss_mb"], figures["scrapes"], figures["actions"]
    print(f"\nsoak: {figures['duration_s']:.0f} s, WA database on {figures['engine']}, on "
          f"{figures['machine']['cores']} cores, "
          f"Linux {figures['machine']['kernel']}, Python {figures['machine']['python']}")
    q = figures["reference"]
    print(f"RSS: {r['start']} MiB at {r['start_at_s']:.0f} s, {r['end']} MiB at the end: "
          f"{r['growth_percent']:+.1f} % (goal < {GOAL_RSS_GROWTH_PERCENT:.0f} %); max "
          f"{r['max']} MiB (VmHWM; goal <= query-exporter's); anonymous "
          f"{r['anon_start']} -> {r['anon_end']} MiB")
    qr, qs = q["rss_mb"], q["scrapes"]
    print(f"query-exporter {q['tool']} (COUNT(*) every {q['interval_s']} s, same table, same "
          f"scrapes): RSS {qr['start']} MiB at {qr['start_at_s']} s, {qr['end']} MiB at the end "
          f"({qr['growth_percent']} %); max {qr['max']} MiB (VmHWM); anonymous "
          f"{qr['anon_start']} -> {qr['anon_end']} MiB; memory at the end (MiB) "
          f"{q['memory_mb'].get('end')}; scrapes {qs['ok']} ok, {qs['failed']} failed, "
          f"p50 {qs['p50_ms']} ms, p99 {qs['p99_ms']} ms")
    for name in ("fds", "threads", "children"):
        x = figures[name]
        print(f"{name}: start {x['start']}, end {x['end']}, max {x['max']}; (lowest, highest) by "
              f"third {x['by_third']} (goal: the last third's lowest not above the first "
              "third's highest)")
    for when in ("start", "end"):
        print(f"  memory at the {when} (MiB): {figures['memory_mb'].get(when)}")
    for what, moments in figures["breakdowns"].items():
        for when, breakdown in moments.items():
            print(f"  {what} at {when}: {breakdown}")
    c = figures["children_seen"]
    print(f"scan workers: {c['distinct_pids']} distinct child processes seen, at most "
          f"{c['most_at_once']} at once, the largest {c['largest_rss_mb']} MiB RSS; zombies at "
          f"samples {c['zombies_at_samples']}; CPU of reaped children {c['reaped_cpu_s']} s")
    print(f"scrapes: {s['ok']} ok, {s['failed']} failed; p50 {s['p50_ms']} ms, p99 "
          f"{s['p99_ms']} ms, max {s['max_ms']} ms; scrapes showing a collector_success 0: "
          f"{s['collector_success_0'] or 'none'}")
    print(f"actions finished: {a['finished']}; started {a['started']}; messages deleted "
          f"{a['messages_deleted']}; cleanup per container {a['cleanup_per_container']}; "
          f"log files rotated {a['log_files_rotated']}")
    for line in a["cleanup_failures"]:
        print(f"  cleanup not successful in {line}")
    print(f"webhook decisions: {a['webhook_decisions']}")
    print(f"world: {figures['world']}")
    log = figures["exporter_log"]
    print(f"exporter log: levels {log['levels']}; warnings/errors {log['warnings_and_errors']}; "
          f"tracebacks {log['traceback_count']}; other lines {log['unstructured_count']}")
    for line in log["warning_lines"] + log["tracebacks"] + log["unstructured"]:
        print(f"  | {line[:400]}")
    if figures["driver_errors"]:
        print(f"driver errors: {figures['driver_errors']}")


# --- the run ----------------------------------------------------------------------------------


@dataclass
class World:
    """What the exporter watches, set up for one run."""

    tmp: Path
    database: str
    engine: sa.Engine
    containers: dict[str, Container]  # by compose service
    media: MediaChurn
    exporter: ExporterProcess
    reference: ReferenceExporter  # query-exporter on the same table: the memory anchor


def build_world(stack: contextlib.ExitStack) -> World:
    """Everything on this machine; each part is removed by ``stack`` in reverse order."""
    pid = os.getpid()
    project = f"wasoak{pid}"
    tmp = Path(tempfile.mkdtemp(prefix=f"wa-soak{pid}-"))
    stack.callback(shutil.rmtree, tmp, ignore_errors=True)
    try:
        client = ensure_docker()
        build_standin_image(client)
    except DockerUnavailable as exc:
        raise SetupFailed(str(exc)) from None
    stack.callback(client.close)
    server = connect_server()
    stack.callback(server.cleanup)
    for leftover in remove_leftovers(client, server):
        print(f"removed a killed run's {leftover}", flush=True)
    prefix = f"wax_soak{pid}_"
    database = prefix + "main"
    engine = server.create_database(database)
    reference = stack.enter_context(
        query_exporter(ENGINE, fill_messages(ENGINE, database), tmp))
    stack.callback(remove_test_containers, client, project)
    containers = {
        service: start_wa_container(client, role=role, service=service, project=project,
                                    env=CONTAINER_ENV, labels={SOAK_LABEL: str(pid)})
        for role, service in (("webapp", "waweb"), ("coreapp", "wacore"),
                              ("master", "master1"))}
    media = MediaChurn(tmp / "media", random.Random(pid))
    token_file = tmp / "token"
    token_file.write_text(TOKEN)
    config = exporter_config(tmp, project, tmp / "media", token_file)
    standin = stack.enter_context(StandIn(server.url(database), gc_delay=0.5,
                                          gc_max_rows_per_round=GC_ROWS_PER_ROUND,
                                          media_dir=tmp / "media"))
    env = {**server.env(prefix), "WA_WEB_URL": standin.url, "WA_WEB_USERNAME": "admin",
           "WA_WEB_PASSWORD": "secret"}
    exporter = ExporterProcess(["--config.file", str(config)], env)
    stack.callback(exporter.stop)
    standin.set_callback(exporter.url + "/webhook/wa-callback",
                         {"Authorization": f"Bearer {TOKEN}"})
    wait_for(lambda: exporter.get("/-/ready").status_code == 200, timeout=60, interval=0.1,
             what="the exporter to be ready")
    print(f"soak: exporter pid {exporter.proc.pid} on {exporter.url}, {DURATION:.0f} s, "
          f"project {project}, database {database}; query-exporter {reference.version} pid "
          f"{reference.pid}, COUNT(*) every {reference.interval_s} s", flush=True)
    return World(tmp, database, engine, containers, media, exporter, reference)


def soak(world: World, stop: threading.Event) -> int:
    exporter, database = world.exporter, world.database
    exporter_pid = exporter.proc.pid
    ready_at = time.monotonic()
    scraper = Scraper(exporter.url + "/metrics", ready_at, stop)
    reference_scraper = Scraper(world.reference.metrics_url, ready_at, stop,
                                required="messages_table_rows")
    watcher = ChildWatcher(exporter_pid, stop)
    scraper.start()
    reference_scraper.start()
    watcher.start()
    started_rows = scraper.wait_until(
        lambda s: any(n == "whatsapp_messages_table_rows" for n, _ in s),
        "the messages table").get(("whatsapp_messages_table_rows", (("database", database),)))

    driver = Driver(exporter.url, stop)
    webapp, coreapp, master = (world.containers[name] for name in ("waweb", "wacore", "master1"))

    def insert(number: int) -> None:
        insert_messages(world.engine, ROWS_PER_INSERT, read_fraction=0.6, seed=1000 + number)
        driver.count("rows inserted", ROWS_PER_INSERT)

    def chaos(number: int) -> None:
        if number % 2 == 0:
            restart(coreapp)
            driver.count("container restarts")
        else:
            stop_and_start(master, scraper, stop)
            driver.count("container stop/starts")

    driver.every("insert", 2.0, 1.0, insert)
    driver.every("gc", 20.0, 5.0, lambda n: driver.fire("gc", "WhatsAppMessagesTableLarge"))
    driver.every("cleanup", 25.0, 10.0, lambda n: driver.fire(
        "cleanup", "WhatsAppLogArchiveTooManyFiles", webapp.name if n % 2 else None))
    driver.every("media_gc", 45.0, 15.0,
                 lambda n: driver.fire("media_gc", "WhatsAppMediaVolumeLow"))
    driver.every("chaos", 30.0, 20.0, chaos)
    driver.every("media", 1.0, 0.5, lambda n: world.media.step())

    samples: list[ProcSample] = []
    reference_samples: list[ProcSample] = []
    memory: dict[str, dict[str, float]] = {}
    reference_memory: dict[str, dict[str, float]] = {}
    died_at: float | None = None
    for due in ticks(stop, SAMPLE_EVERY):
        t = due - ready_at
        if exporter.proc.poll() is not None:
            died_at = time.monotonic() - ready_at
            break
        samples.append(sample_process(exporter_pid, t))
        with contextlib.suppress(OSError):  # query-exporter gone: the report says so
            reference_samples.append(sample_process(world.reference.pid, t))
            reference_memory["end"] = memory_breakdown(world.reference.pid)
        if t >= WARMUP and "start" not in memory:
            memory["start"] = memory_breakdown(exporter_pid)
        memory["end"] = memory_breakdown(exporter_pid)
        last = samples[-1]
        reference_rss = (f"{mb(reference_samples[-1].rss_kb):5.1f} MiB"
                         if reference_samples and reference_samples[-1].t == last.t else "gone")
        full_gcs = scraper.latest().get(("python_gc_collections_total",
                                         (("generation", "2"),)), 0)
        print(f"  {t:5.0f} s  RSS {mb(last.rss_kb):5.1f} MiB  fds {last.fds:3d} (docker "
              f"{last.fd_kinds.get('unix (client)', 0):2d})  threads {last.threads:3d} "
              f"({sum(n for k, n in last.thread_states.items() if k != 'futex'):2d} not in "
              f"futex)  children {last.children}  full GCs {full_gcs:.0f}  scrapes "
              f"{len(scraper.latencies)}/{len(scraper.failures)} failed  query-exporter RSS "
              f"{reference_rss}", flush=True)
        if t >= DURATION - 0.5:
            break

    stop.set()  # the world stops changing; runs in flight finish on their own
    driver.join(30)
    scraper.join(SCRAPE_TIMEOUT + 1)
    reference_scraper.join(SCRAPE_TIMEOUT + 1)
    watcher.join(1)
    state = world.tmp / "state"
    final: Samples = {}
    drained = False
    if died_at is None:
        with contextlib.suppress(AssertionError):
            drained = wait_for(lambda: all_runs_finished(state), timeout=DRAIN_TIMEOUT,
                               interval=0.2, what="the actions in flight to finish")
        with contextlib.suppress(requests.RequestException, ValueError), requests.Session() as s:
            final = scrape(s, exporter.url + "/metrics")
    exporter.stop()
    figures, missed = report(Run(samples, scraper, watcher, driver, world.media, state,
                                 database, started_rows, final, list(exporter.lines),
                                 exporter.proc.returncode, died_at, drained, memory,
                                 Reference(world.reference, reference_samples,
                                           reference_scraper, reference_memory)))
    print_report(figures)
    footprint: list[str] = []
    if (figures["rss_mb"]["max"] > (figures["reference"]["rss_mb"]["max"] or 0)
            or os.environ.get("SOAK_FOOTPRINT")):
        print("where the memory goes (fresh interpreters, nothing done):", flush=True)
        footprint = import_footprint()
        print("\n".join(footprint))
    print("goals: " + ("all met" if not missed else "MISSED"))
    for line in missed:
        print(f"  - {line}")
    figures["footprint"] = footprint
    figures["missed"] = missed
    if os.environ.get("SOAK_JSON"):
        Path(os.environ["SOAK_JSON"]).write_text(json.dumps(figures, indent=2, default=str))
    if os.environ.get("SOAK_LOG"):
        Path(os.environ["SOAK_LOG"]).write_text("\n".join(exporter.lines) + "\n")
    return 1 if missed else 0


def all_runs_finished(state: Path) -> bool:
    records = audit_records(state)
    started = {r["run_id"] for r in records if r.get("event") == "decision"
               and r.get("outcome") == "started"}
    return started <= {r.get("run_id") for r in records if r.get("event") == "finished"}


def main() -> int:
    if DURATION < 30:
        print("soak: SOAK_SECONDS must be at least 30", file=sys.stderr)
        return 2

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    # Also SIGINT: a shell starts background jobs with it ignored, which Python would keep.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    stop = threading.Event()
    stack = contextlib.ExitStack()
    try:
        try:
            world = build_world(stack)
        except (SetupFailed, DockerException, sa.exc.SQLAlchemyError, AssertionError,
                TimeoutError, OSError, RuntimeError, subprocess.SubprocessError) as exc:
            print(f"soak: cannot set up the world: {exc}", file=sys.stderr)
            return 2
        return soak(world, stop)
    except KeyboardInterrupt:
        print("soak: interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        stop.set()
        # A second Ctrl-C must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.close()


if __name__ == "__main__":
    raise SystemExit(main())
