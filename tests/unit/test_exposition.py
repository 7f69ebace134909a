"""The /metrics body rendered collector by collector: byte for byte what prometheus_client
renders for the whole registry, whatever changed between two scrapes; a collector's text
rendered again only when its ``exposition_version()`` changes."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from exporter.actions.base import ActionResult, Request
from exporter.collectors.action_state import ActionStateMetrics, AuditMetrics
from exporter.collectors.actions import ActionMetrics
from exporter.collectors.base import Refresher, SnapshotCollector
from exporter.exposition import MAX_KEPT_ENCODINGS, PythonGcCollector, Registry, exposition
from exporter.sources.docker import WaContainer
from tests.unit.fakes import EPOCH
from tests.unit.test_refresher import Clock, Scripted

TEXT = None
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
ACCEPTS = (TEXT, "text/plain; version=0.0.4", OPENMETRICS,
           "application/openmetrics-text; version=1.0.0; escaping=values",
           "text/plain; version=1.0.0; escaping=dots")


class Counted(Collector):
    """A gauge whose value and version the test sets; counts how often it is collected."""

    def __init__(self, name: str, versioned: bool = True) -> None:
        self.name = name
        self.value = 1.0
        self.version = 0
        self.collected = 0
        if versioned:
            self.exposition_version = lambda: self.version

    def collect(self) -> Iterator[Metric]:
        self.collected += 1
        family = GaugeMetricFamily(self.name, "A test value.", labels=["which"])
        family.add_metric(["a"], self.value)
        yield family


class Runs:
    """The runner's view for ActionStateMetrics: what ``running`` holds runs."""

    def __init__(self, running: list[str]) -> None:
        self.keys = running

    def running(self) -> list[str]:
        return list(self.keys)

    def deferred_count(self, action: str) -> int:
        return 0


class Window:
    def describe(self, now: float) -> dict[str, Any]:
        return {"mode": "always", "start": "", "end": "", "timezone": "UTC", "open": True}


@dataclass
class Audit:
    write_errors: int = 0
    pending: int = 0


def whole(registry: Registry, accept: str | None) -> bytes:
    """What prometheus_client renders for the whole registry at once."""
    encoder, _ = choose_encoder(accept or "")
    return encoder(registry)


def actions_and_snapshots(
        ) -> tuple[Registry, ActionMetrics, Scripted, Refresher, Clock, Audit]:
    registry = Registry()
    collector = Scripted(stale_after=60)
    clock = Clock()
    refresher = Refresher(collector, clock=clock)
    refresher.refresh_once()
    registry.register(SnapshotCollector([refresher], {"version": "t", "python_version": "3"}))
    metrics = ActionMetrics(registry, ["gc", "cleanup"])
    registry.register(Counted("whatsapp_test_live", versioned=False))
    audit = Audit()
    registry.register(AuditMetrics(audit))
    PythonGcCollector(registry=registry)
    return registry, metrics, collector, refresher, clock, audit


@pytest.mark.parametrize("accept", ACCEPTS)
def test_body_is_what_prometheus_client_renders_for_the_whole_registry(accept: str | None
                                                                       ) -> None:
    registry, metrics, collector, refresher, clock, audit = actions_and_snapshots()
    running: list[str] = []
    registry.register(ActionStateMetrics(["gc"], Runs(running), Window()))

    def same() -> None:
        gc.disable()  # no collection between the two renders: python_gc_* stay as they are
        try:
            body, content_type = exposition(registry, accept)
            assert body == whole(registry, accept)
        finally:
            gc.enable()
        assert content_type == choose_encoder(accept or "")[1]

    same()
    same()  # from what was kept
    metrics.decided("gc", "started")
    same()
    running.append("gc")  # read live, whatever the other action metrics' version
    same()
    running.clear()
    same()
    metrics.finished(Request("gc", "alert"), [], ActionResult("success", {
        "messages_deleted": 5, "databases_after": {"wa_main": 10}}), EPOCH, EPOCH + 42)
    same()
    metrics.containers_found([WaContainer("1", "wa-waweb-1", "webapp", True)])
    same()
    metrics.restore({"last_run": {"gc": EPOCH}, "last_success": {}, "roles": {}})
    same()
    collector.value = 7.0
    refresher.refresh_once()
    same()
    collector.error = RuntimeError("down")  # a failed refresh: same snapshot, health changes
    refresher.refresh_once()
    same()
    clock.now += 3600  # the snapshot goes stale
    same()
    audit.pending = 3
    same()
    audit.write_errors = 1
    same()
    gc.collect()
    same()


def test_a_versioned_collector_is_rendered_again_only_when_its_version_changes() -> None:
    registry = Registry()
    kept, live = Counted("whatsapp_test_kept"), Counted("whatsapp_test_live", versioned=False)
    registry.register(kept)
    registry.register(live)
    for _ in range(3):
        exposition(registry, TEXT)
    assert (kept.collected, live.collected) == (1, 3)
    kept.value = 2.0  # a change the version does not show is not rendered: the contract
    assert b'whatsapp_test_kept{which="a"} 1.0' in exposition(registry, TEXT)[0]
    kept.version += 1
    assert b'whatsapp_test_kept{which="a"} 2.0' in exposition(registry, TEXT)[0]
    assert kept.collected == 2
    exposition(registry, OPENMETRICS)  # each encoding is kept apart
    assert kept.collected == 3
    exposition(registry, OPENMETRICS)
    exposition(registry, TEXT)
    assert kept.collected == 3


def test_made_up_accept_versions_do_not_grow_what_is_kept() -> None:
    registry = Registry()
    kept = Counted("whatsapp_test_kept")
    registry.register(kept)
    for minor in range(50):
        accept = f"application/openmetrics-text; version=1.{minor}.0"
        assert exposition(registry, accept)[0] == whole(registry, accept)
    assert len(registry._texts[kept]) <= MAX_KEPT_ENCODINGS


def test_unregistered_collectors_leave_the_body() -> None:
    registry = Registry()
    first, second = Counted("whatsapp_test_first"), Counted("whatsapp_test_second")
    registry.register(first)
    registry.register(second)
    exposition(registry, TEXT)
    registry.unregister(first)
    body = exposition(registry, TEXT)[0]
    assert b"whatsapp_test_first" not in body
    assert body == generate_latest(registry)


def test_every_change_of_the_action_metrics_changes_their_version() -> None:
    metrics = ActionMetrics(Registry(), ["gc", "cleanup"])
    versions = [metrics.exposition_version()]

    def changed() -> None:
        versions.append(metrics.exposition_version())
        assert versions[-1] != versions[-2]

    metrics.decided("gc", "skipped_running")
    changed()
    metrics.finished(Request("cleanup", "manual"), ["wa-waweb-1"],
                     ActionResult("success", {"containers": {"wa-waweb-1": {"role": "webapp"}}}),
                     EPOCH, EPOCH + 1)
    changed()
    metrics.containers_found([WaContainer("1", "wa-wacore-1", "coreapp", True)])
    changed()
    metrics.restore({"last_run": {}, "last_success": {"gc": EPOCH}, "roles": {}})
    changed()
    assert metrics.exposition_version() == versions[-1]  # nothing changed: the same
