"""Background refresh for every collector, and the one registry collector serving snapshots.

A collector does the expensive work in ``refresh()`` on its own thread and interval;
``/metrics`` only reads the last :class:`Snapshot`. A refresh that raises or overruns
its timeout marks the collector failed; the collector's ``failed()`` says what to
show instead (by default: the last snapshot, until it is older than ``stale_after``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector as PromCollector

from exporter.config import CollectorSettings
from exporter.errors import Degraded, SourceError
from exporter.workers import DaemonExecutor

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)  # one per refresh, compared by identity: cheap to compare
class Snapshot:
    families: Sequence[Metric]
    taken_at: float  # wall-clock seconds when the data was read


class Collector:
    """Base for every collector: a name, a schedule and the work that yields metric families."""

    name: str = "collector"

    def __init__(self, settings: CollectorSettings) -> None:
        assert settings.timeout is not None  # the settings model fills in its default
        self.interval = settings.interval
        self.timeout = settings.timeout
        self.stale_after = settings.stale_after

    def refresh(self) -> Sequence[Metric]:
        raise NotImplementedError

    def describe(self) -> Sequence[Metric]:
        """The families ``refresh()`` yields, without values and without any work, so the
        registry refuses two collectors that export one name when they are registered."""
        return ()

    def failed(self, error: BaseException, previous: Snapshot | None,
               now: float) -> Snapshot | None:
        """What to serve after a failed refresh; ``None`` keeps the previous snapshot."""
        return None

    def close(self) -> None:
        """Release connections and clients."""


@dataclass
class _State:
    snapshot: Snapshot | None = None
    success: bool = False
    duration: float = 0.0
    last_success: float = 0.0
    last_error: str = ""
    last_kind: str = ""  # a new log line only when the kind of failure changes
    finished_once: threading.Event = field(default_factory=threading.Event)


class Refresher:
    """Runs one collector's ``refresh()`` on its interval, with a timeout, in the background."""

    def __init__(self, collector: Collector, *, clock: Callable[[], float] = time.time) -> None:
        self.collector = collector
        self.clock = clock
        self.state = _State()
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by stop or by a request for a refresh now
        self._thread: threading.Thread | None = None
        # One thread runs every refresh, so a refresh left running past its timeout is
        # still the only one: the next sees it unfinished and does not start another.
        self._worker = DaemonExecutor(1, f"work-{self.name}")
        self._refreshing: Future[list[Metric]] | None = None

    @property
    def name(self) -> str:
        return self.collector.name

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=f"refresh-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, wait: float = 2.0) -> None:
        """Stop refreshing; wait up to ``wait`` seconds for a refresh in progress."""
        self.signal_stop()
        self.join(wait)

    def signal_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def refresh_soon(self) -> None:
        """Refresh now rather than at the end of the interval (the interval then starts
        again); asked during a refresh, one more follows it, as the data asked for may be
        newer than what that refresh read."""
        self._wake.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while True:
            self._wake.clear()  # before the check: a stop signalled after it still wakes
            if self._stop.is_set():
                break
            started = time.monotonic()
            self.refresh_once()
            elapsed = time.monotonic() - started
            self._wake.wait(max(0.0, self.collector.interval - elapsed))
        self._worker.shutdown(wait=False)  # here, as only this thread submits once started

    def refresh_once(self) -> bool:
        """Run one refresh now (waiting at most the timeout); return whether it succeeded."""
        if self._refreshing is not None and not self._refreshing.done():
            # The previous refresh is stuck past its timeout: do not pile up another.
            self._record_failure(SourceError("previous refresh still running", kind="timeout"), 0.0)
            return False
        started = time.monotonic()
        self._refreshing = refreshing = self._worker.submit(self._families)
        finished, _ = wait([refreshing], self.collector.timeout)
        duration = time.monotonic() - started
        if not finished:
            error: BaseException = SourceError(
                f"refresh took longer than {self.collector.timeout:g}s", kind="timeout")
        elif (raised := refreshing.exception()) is not None:
            error = raised  # reported through the collector's metrics
        else:
            self._record_success(refreshing.result(), duration)
            return True
        self._record_failure(error, duration)
        return False

    def _families(self) -> list[Metric]:
        return list(self.collector.refresh())

    def _record_success(self, families: Sequence[Metric], duration: float) -> None:
        now = self.clock()
        state = self.state
        if not state.success and state.finished_once.is_set():
            log.info("collector recovered", extra={"collector": self.name})
        state.snapshot = Snapshot(families, now)
        state.success, state.duration, state.last_success = True, duration, now
        state.last_error = ""
        state.finished_once.set()

    def _record_failure(self, error: BaseException, duration: float) -> None:
        now = self.clock()
        state = self.state
        message = str(error) or type(error).__name__
        kind = getattr(error, "kind", type(error).__name__)
        if state.success or not state.finished_once.is_set() or kind != state.last_kind:
            # One line per change of state, not one per refresh.
            unexpected = not isinstance(error, SourceError)
            log.warning("collector refresh failed", exc_info=error if unexpected else None,
                        extra={"collector": self.name, "err": message})
        if isinstance(error, Degraded):
            replacement: Snapshot | None = Snapshot(error.families, now)
        else:
            replacement = self.collector.failed(error, state.snapshot, now)
        if replacement is not None:
            state.snapshot = replacement
        state.success, state.duration, state.last_error = False, duration, message
        state.last_kind = kind
        state.finished_once.set()

    def fresh_snapshot(self) -> Snapshot | None:
        snapshot = self.state.snapshot
        if snapshot is None or self.clock() - snapshot.taken_at > self.collector.stale_after:
            return None
        return snapshot

    def fresh_families(self) -> Sequence[Metric]:
        snapshot = self.fresh_snapshot()
        return () if snapshot is None else snapshot.families


def stop_all(refreshers: Iterable[Refresher], wait: float = 2.0) -> None:
    """Stop every refresher, waiting ``wait`` seconds in all for refreshes in progress:
    each told first, so that one refresh in progress in each does not cost ``wait`` apiece."""
    refreshers = list(refreshers)
    for refresher in refreshers:
        refresher.signal_stop()
    deadline = time.monotonic() + wait
    for refresher in refreshers:
        refresher.join(max(0.0, deadline - time.monotonic()))


def described(families: Iterable[Metric]) -> list[Metric]:
    """``families`` as ``describe()`` gives them: name, type and help, no samples."""
    return [Metric(family.name, family.documentation, family.type) for family in families]


class SnapshotCollector(PromCollector):
    """The only thing registered with prometheus_client: reads snapshots, never does work."""

    def __init__(self, refreshers: Iterable[Refresher], build_info: dict[str, str]) -> None:
        self.refreshers = list(refreshers)
        self.build_info = build_info

    def describe(self) -> Iterable[Metric]:
        """Every collector's families and our own; the registry sees them as one collector,
        so a name two of ours export is refused here, as the registry refuses it between
        collectors registered apart."""
        owners = [(r.name, r.collector.describe()) for r in self.refreshers]
        owners.append(("exporter", described(self._own_families())))
        exported_by: dict[str, str] = {}
        for owner, families in owners:
            for family in families:
                first = exported_by.setdefault(family.name, owner)
                if first != owner:
                    raise ValueError(f"Duplicated timeseries in CollectorRegistry: "
                                     f"{family.name} from both {first} and {owner}")
                yield family

    def collect(self) -> Iterable[Metric]:
        for refresher in self.refreshers:
            yield from refresher.fresh_families()
        yield from self._own_families()

    def exposition_version(self) -> object:
        """Equal for as long as :meth:`collect` yields the same (see
        :mod:`exporter.exposition`): each snapshot served (a new one per refresh, compared
        by identity) and each collector's health."""
        return tuple((r.fresh_snapshot(), r.state.success, r.state.duration,
                      r.state.last_success) for r in self.refreshers)

    def _own_families(self) -> list[Metric]:
        success = GaugeMetricFamily("whatsapp_exporter_collector_success",
                                    "1 if the collector's last refresh succeeded.",
                                    labels=["collector"])
        duration = GaugeMetricFamily("whatsapp_exporter_collector_duration_seconds",
                                     "How long the collector's last refresh took.",
                                     labels=["collector"])
        last = GaugeMetricFamily("whatsapp_exporter_collector_last_success_timestamp_seconds",
                                 "When the collector last refreshed successfully.",
                                 labels=["collector"])
        for refresher in self.refreshers:
            state = refresher.state
            success.add_metric([refresher.name], 1.0 if state.success else 0.0)
            duration.add_metric([refresher.name], state.duration)
            last.add_metric([refresher.name], state.last_success)
        info = GaugeMetricFamily("whatsapp_exporter_build_info",
                                 "Version of the exporter; always 1.",
                                 labels=list(self.build_info))
        info.add_metric(list(self.build_info.values()), 1.0)
        return [success, duration, last, info]

    def ready(self) -> bool:
        return all(r.state.finished_once.is_set() for r in self.refreshers)
