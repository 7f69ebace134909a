"""Live log sizes and archive figures of every WA container.

``exec`` mode lists each running container's log directory with one ``docker exec``;
``host`` mode reads directories the operator bind-mounted into the exporter. Live files get
a ``file`` label; archived files are counted per container and per log family (the live log
each was rotated from, or ``other``), so the label set stays bounded by the live logs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import Collector, described
from exporter.config import LogsSettings
from exporter.errors import Degraded, SourceError
from exporter.sources.docker import ContainerDirectory, DockerError, WaContainer, list_logs
from exporter.sources.files import LogEntry, list_log_dir
from exporter.workers import DaemonExecutor

# What logrotate (``compressext``) and the WA rotation scripts append when they compress.
_COMPRESSED = re.compile(r"\.(?:gz|bz2|xz|zst|lz4|Z)\Z")
# One rotation token at the end of a name: ".1", "-20260101", ".20260101T000000Z", "-2".
_ROTATION_TOKEN = re.compile(r"[._-][0-9][0-9TZ]*\Z")
# The family of archived files that belong to no live log: bounded, whatever the names.
OTHER_FAMILY = "other"


def is_compressed(name: str) -> bool:
    return _COMPRESSED.search(name) is not None


def archive_family(name: str, live_logs: Collection[str]) -> str:
    """The live log an archived file was rotated from: its name without a compression suffix
    and without rotation tokens (``web.log.1.gz``, ``access.log-20260101.gz`` and
    ``coreapp.log.20260101T000000Z-1.gz`` come from ``web.log``, ``access.log`` and
    ``coreapp.log``), if that is a live log of the same container; :data:`OTHER_FAMILY` if not."""
    stem = _COMPRESSED.sub("", name)
    while stem not in live_logs:
        shorter = _ROTATION_TOKEN.sub("", stem)
        if shorter == stem:
            return OTHER_FAMILY
        stem = shorter
    return stem


@dataclass(frozen=True)
class LogSummary:
    live: dict[str, int]  # file label -> bytes
    archive_files: int
    archive_bytes: int
    archive_oldest: float | None  # mtime; None with an empty archive
    # family -> archived files: every live log (0 if none), OTHER_FAMILY only when it has some
    archive_families: dict[str, int]
    uncompressed_files: int
    uncompressed_bytes: int


def _label(name: bytes) -> str:
    # Names are bytes on disk; a non-UTF-8 one shows with \xNN escapes.
    return name.decode("utf-8", errors="backslashreplace")


def summarise(entries: Iterable[LogEntry]) -> LogSummary:
    entries = list(entries)
    live = {_label(e.name): e.size for e in entries if e.where == "live"}
    archived = [e for e in entries if e.where == "archive"]
    families = dict.fromkeys(live, 0)
    uncompressed = uncompressed_bytes = 0
    for entry in archived:
        name = _label(entry.name)
        family = archive_family(name, live)
        families[family] = families.get(family, 0) + 1
        if not is_compressed(name):
            uncompressed += 1
            uncompressed_bytes += entry.size
    return LogSummary(
        live=live,
        archive_files=len(archived),
        archive_bytes=sum(e.size for e in archived),
        archive_oldest=min((e.mtime for e in archived), default=None),
        archive_families=families,
        uncompressed_files=uncompressed,
        uncompressed_bytes=uncompressed_bytes,
    )


@dataclass(frozen=True)
class _Reading:
    role: str
    summary: LogSummary
    at: float


# Listings run side by side: each is mostly the engine's own exec overhead.
_PARALLEL_LISTINGS = 4
_Readings = dict[str, tuple[str, LogSummary]]  # container -> (role, summary)
_Failures = dict[str, tuple[str, SourceError]]  # container -> (role, error)


class LogsCollector(Collector):
    name = "logs"

    def __init__(self, directory: ContainerDirectory, settings: LogsSettings,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings)
        self.directory = directory
        self.settings = settings
        self.clock = clock
        self._last: dict[str, _Reading] = {}  # by container name, served until stale
        # For the collector's life: at most _PARALLEL_LISTINGS docker execs at any time,
        # on threads kept from one refresh to the next.
        self._listings = DaemonExecutor(_PARALLEL_LISTINGS, "logs-listing")
        self._unfinished: dict[str, Future[list[LogEntry]]] = {}  # by container ID

    def close(self) -> None:
        self._listings.shutdown(wait=False, cancel_futures=True)

    def refresh(self) -> Sequence[Metric]:
        if self.settings.mode == "exec":
            readings, failures = self._read_exec()
        else:
            readings, failures = self._read_host()
        now = self.clock()
        for name in [n for n in self._last if n not in readings and n not in failures]:
            del self._last[name]  # removed, stopped, or no longer a WA container
        for name, (role, summary) in readings.items():
            self._last[name] = _Reading(role, summary, now)
        families = self._families(now, {name: role for name, (role, _) in failures.items()})
        if failures:
            detail = "; ".join(str(error) for _, error in failures.values())
            raise Degraded(f"log listing failed: {detail}", families)
        return families

    def describe(self) -> Sequence[Metric]:
        return described(self._families(0.0, {}))

    def _read_exec(self) -> tuple[_Readings, _Failures]:
        running = [c for c in self.directory.discover() if c.running]
        listed = self._list_all(running)
        readings: _Readings = {}
        failures: _Failures = {}
        for container in running:
            result = listed.get(container.name)
            if result is None:
                result = DockerError(f"listing in {container.name} did not finish in time",
                                     kind="timeout")
            if isinstance(result, DockerError):
                if result.kind == "connect":
                    raise result  # the engine itself went away: the whole refresh failed
                if result.kind != "not_running":  # stopped under us: nothing wrong
                    failures[container.name] = (container.role, result)
                continue
            readings[container.name] = (container.role, summarise(result))
        return readings, failures

    def _list_all(self, containers: list[WaContainer]) -> dict[str, list[LogEntry] | DockerError]:
        """List every container, a few at a time, until most of the timeout has passed. A
        listing that hangs is left behind and missing from the answer; if it is still
        running at the next refresh, that refresh waits for it rather than start a second
        listing in the same container."""
        listings: dict[str, Future[list[LogEntry]]] = {}
        for container in containers:
            listing = self._unfinished.get(container.id)
            if listing is None or listing.done():
                listing = self._listings.submit(list_logs, self.directory.engine, container,
                                                self.settings.log_dir)
            listings[container.name] = listing
        wait(listings.values(), timeout=self.timeout * 0.8)
        for listing in listings.values():
            listing.cancel()  # out of time: start no more listings for this refresh
        self._unfinished = {c.id: listings[c.name] for c in containers
                            if not listings[c.name].done()}
        results: dict[str, list[LogEntry] | DockerError] = {}
        for name, listing in listings.items():
            if listing.done() and not listing.cancelled():
                try:
                    results[name] = listing.result()
                except DockerError as exc:
                    results[name] = exc
        return results

    def _read_host(self) -> tuple[_Readings, _Failures]:
        try:
            known = {c.name: c.role for c in self.directory.discover()}
        except SourceError:
            known = {n: c.role for n, c in self.directory.known().items()}  # logs need no engine
        readings: _Readings = {}
        failures: _Failures = {}
        for name, path in sorted(self.settings.host_paths.items()):
            role = known.get(name) or self.directory.settings.names.get(name) or "unknown"
            try:
                readings[name] = (role, summarise(list_log_dir(path)))
            except SourceError as exc:
                failures[name] = (role, SourceError(f"{name}: {exc}", kind=exc.kind))
        return readings, failures

    def _families(self, now: float, failed: dict[str, str]) -> list[Metric]:
        labels = ["container", "role"]
        size = GaugeMetricFamily("whatsapp_log_file_size_bytes",
                                 "Size of each live (not archived) log file.",
                                 labels=[*labels, "file"])
        files = GaugeMetricFamily("whatsapp_log_archive_files",
                                  "Files in the log archive directory.", labels=labels)
        total = GaugeMetricFamily("whatsapp_log_archive_size_bytes",
                                  "Total size of the archived log files.", labels=labels)
        oldest = GaugeMetricFamily("whatsapp_log_archive_oldest_timestamp_seconds",
                                   "Modification time of the oldest archived log file.",
                                   labels=labels)
        by_family = GaugeMetricFamily("whatsapp_log_archive_family_files",
                                      "Archived files per log family: the live log each was "
                                      "rotated from, or other.", labels=[*labels, "family"])
        uncompressed = GaugeMetricFamily("whatsapp_log_archive_uncompressed_files",
                                         "Archived log files without a compression suffix.",
                                         labels=labels)
        uncompressed_bytes = GaugeMetricFamily("whatsapp_log_archive_uncompressed_size_bytes",
                                               "Total size of the uncompressed archived log "
                                               "files.", labels=labels)
        listed = GaugeMetricFamily("whatsapp_log_listing_success",
                                   "1 if the container's log directory was listed in the last "
                                   "refresh.", labels=labels)
        for name in sorted(set(self._last) | set(failed)):
            reading = self._last.get(name)
            role = failed.get(name) or (reading.role if reading else "unknown")
            listed.add_metric([name, role], 0.0 if name in failed else 1.0)
            if reading is None or now - reading.at > self.stale_after:
                continue
            summary = reading.summary
            for file in sorted(summary.live):
                size.add_metric([name, role, file], float(summary.live[file]))
            files.add_metric([name, role], float(summary.archive_files))
            total.add_metric([name, role], float(summary.archive_bytes))
            if summary.archive_oldest is not None:
                oldest.add_metric([name, role], summary.archive_oldest)
            for family in sorted(summary.archive_families):
                by_family.add_metric([name, role, family],
                                     float(summary.archive_families[family]))
            uncompressed.add_metric([name, role], float(summary.uncompressed_files))
            uncompressed_bytes.add_metric([name, role], float(summary.uncompressed_bytes))
        return [size, files, total, oldest, by_family, uncompressed, uncompressed_bytes, listed]
