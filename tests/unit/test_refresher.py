"""The collector framework: timeouts, staleness, one log line per change, no pile-up."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import wait

import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import Collector, Refresher, SnapshotCollector, stop_all
from exporter.config import CollectorSettings
from exporter.errors import Degraded, SourceError
from exporter.server import Server
from tests.support import parse_metrics, value


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class Scripted(Collector):
    """A collector whose refresh does whatever the test says next."""

    name = "scripted"

    def __init__(self, timeout: float = 0.5, stale_after: float = 60.0) -> None:
        # Tests call refresh_once; a refresher started refreshes once within a test.
        super().__init__(CollectorSettings(interval=30, timeout=timeout,
                                           stale_after=stale_after))
        self.value = 1.0
        self.error: BaseException | None = None
        self.block = threading.Event()
        self.blocking = False
        self.calls = 0
        self.threads: list[threading.Thread] = []  # the thread of each refresh

    def refresh(self) -> Sequence[Metric]:
        self.calls += 1
        self.threads.append(threading.current_thread())
        if self.blocking:
            self.block.wait(10)
        if self.error is not None:
            raise self.error
        family = GaugeMetricFamily("whatsapp_test_value", "A test value.")
        family.add_metric([], self.value)
        return [family]


def _scrape(refresher: Refresher) -> dict:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector([refresher], {"version": "t", "python_version": "3"}))
    return parse_metrics(generate_latest(registry).decode())


def test_success_then_failure_keeps_values_until_stale() -> None:
    clock, collector = Clock(), Scripted(stale_after=60)
    refresher = Refresher(collector, clock=clock)
    assert refresher.refresh_once()
    samples = _scrape(refresher)
    assert value(samples, "whatsapp_test_value") == 1
    assert value(samples, "whatsapp_exporter_collector_success", collector="scripted") == 1
    assert value(samples, "whatsapp_exporter_collector_last_success_timestamp_seconds",
                 collector="scripted") == clock.now

    collector.error = SourceError("db gone", kind="connect")
    clock.now += 30
    assert not refresher.refresh_once()
    samples = _scrape(refresher)
    assert value(samples, "whatsapp_exporter_collector_success", collector="scripted") == 0
    assert value(samples, "whatsapp_test_value") == 1  # 30 s old: still within stale_after

    clock.now += 31
    assert value(_scrape(refresher), "whatsapp_test_value") is None  # stale: dropped


def test_timeout_fails_fast_and_does_not_pile_up() -> None:
    collector = Scripted(timeout=0.2)
    refresher = Refresher(collector)
    collector.blocking = True
    started = time.monotonic()
    assert not refresher.refresh_once()
    assert time.monotonic() - started < 1
    assert "longer than 0.2s" in refresher.state.last_error
    assert not refresher.refresh_once()  # the stuck one is still running: no second worker
    assert collector.calls == 1
    assert refresher.state.last_error == "previous refresh still running"
    collector.blocking = False
    collector.block.set()
    assert refresher._refreshing is not None
    wait([refresher._refreshing], 5)
    assert refresher.refresh_once()


def test_every_refresh_runs_on_one_worker_thread() -> None:
    collector = Scripted()
    refresher = Refresher(collector)
    assert refresher.refresh_once()
    threads = threading.active_count()
    for _ in range(4):
        assert refresher.refresh_once()
    assert threading.active_count() == threads
    assert len(set(collector.threads)) == 1
    worker = collector.threads[0]
    assert worker.name == "work-scripted" and worker.daemon
    assert worker is not threading.current_thread() and worker.is_alive()


def test_degraded_serves_its_metrics_but_reports_failure() -> None:
    family = GaugeMetricFamily("whatsapp_test_partial", "Partial.")
    family.add_metric([], 7)
    collector = Scripted()
    collector.error = Degraded("one database failed", [family])
    refresher = Refresher(collector)
    assert not refresher.refresh_once()
    samples = _scrape(refresher)
    assert value(samples, "whatsapp_test_partial") == 7
    assert value(samples, "whatsapp_exporter_collector_success", collector="scripted") == 0


def test_one_log_line_per_change_of_state(caplog: pytest.LogCaptureFixture) -> None:
    collector = Scripted()
    refresher = Refresher(collector)
    caplog.set_level(logging.INFO)
    collector.error = SourceError("db gone", kind="connect")
    for _ in range(5):
        refresher.refresh_once()
    collector.error = None
    for _ in range(3):
        refresher.refresh_once()
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count("collector refresh failed") == 1
    assert messages.count("collector recovered") == 1
    assert all(r.exc_info is None for r in caplog.records)  # expected failures: no traceback


def test_unexpected_errors_are_logged_with_traceback_once(
        caplog: pytest.LogCaptureFixture) -> None:
    collector = Scripted()
    collector.error = ZeroDivisionError("bug")
    refresher = Refresher(collector)
    refresher.refresh_once()
    refresher.refresh_once()
    failures = [r for r in caplog.records if r.getMessage() == "collector refresh failed"]
    assert len(failures) == 1 and failures[0].exc_info is not None


def test_metrics_and_ready_answer_at_once_while_a_refresh_hangs() -> None:
    collector = Scripted(timeout=30)
    collector.blocking = True
    refresher = Refresher(collector)
    snapshots = SnapshotCollector([refresher], {"version": "t", "python_version": "3"})
    registry = CollectorRegistry(auto_describe=False)
    registry.register(snapshots)
    server = Server("127.0.0.1:0", registry, snapshots.ready)
    server.start()
    refresher.start()
    try:
        url = f"http://{server.address}"
        assert requests.get(url + "/-/ready", timeout=2).status_code == 503
        assert requests.get(url + "/-/healthy", timeout=2).status_code == 200
        results: list[float] = []

        def scrape() -> None:
            started = time.monotonic()
            assert requests.get(url + "/metrics", timeout=2).status_code == 200
            results.append(time.monotonic() - started)

        threads = [threading.Thread(target=scrape) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 20 and max(results) < 1.0
        collector.blocking = False
        collector.block.set()
        assert refresher.state.finished_once.wait(5)
        assert requests.get(url + "/-/ready", timeout=2).status_code == 200
        assert requests.get(url + "/nope", timeout=2).status_code == 404
    finally:
        refresher.stop()
        server.stop()


def test_stopping_many_refreshers_mid_refresh_takes_one_wait_not_one_each() -> None:
    """Four refreshers each inside a refresh that lasts 10 s: stopping them all waits 2 s in
    all (a SIGTERM must end the exporter in a few seconds), not 2 s apiece."""
    collectors = [Scripted(timeout=10) for _ in range(4)]
    refreshers = [Refresher(c) for c in collectors]
    for collector, refresher in zip(collectors, refreshers, strict=True):
        collector.blocking = True
        refresher.start()
    deadline = time.monotonic() + 5
    while not all(c.calls for c in collectors):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    started = time.monotonic()
    stop_all(refreshers, wait=2)
    took = time.monotonic() - started
    for collector in collectors:
        collector.block.set()
    assert 1.5 < took < 3.5
