"""Registration: every collector describes its families, so the registry refuses two that
export one name when they are registered (not at the first scrape), and registering asks no
source for anything."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

import exporter.collectors
from exporter.actions.audit import AuditLog
from exporter.collectors.action_state import AuditMetrics
from exporter.collectors.base import Collector, Refresher, SnapshotCollector
from exporter.collectors.containers import ContainersCollector
from exporter.collectors.logs import LogsCollector
from exporter.collectors.messages import MessagesCollector
from exporter.collectors.volume import VolumeCollector, VolumeScanCollector
from exporter.config import (
    LogsSettings,
    MessagesSettings,
    VolumeScanSettings,
    VolumeSettings,
)
from exporter.sources.database import RowSource, ServerReading, TableReading
from exporter.sources.docker import ContainerDirectory
from tests.unit.expositions import refreshed
from tests.unit.fakes import (
    FakeContainer,
    FakeDockerApi,
    FixedReadings,
    FixedVolume,
    compose_settings,
    fake_engine,
    listing,
)

BUILD_INFO = {"version": "test", "python_version": "3.11"}


def every_collector_class() -> set[type[Collector]]:
    for module in pkgutil.iter_modules(exporter.collectors.__path__):
        importlib.import_module(f"exporter.collectors.{module.name}")
    found: set[type[Collector]] = set()
    todo = [Collector]
    while todo:
        for subclass in todo.pop().__subclasses__():
            if subclass.__module__.startswith("exporter."):
                found.add(subclass)
            todo.append(subclass)
    return found


def test_every_collector_describes_its_families() -> None:
    undescribed = sorted(c.__name__ for c in every_collector_class()
                         if c.describe is Collector.describe)
    assert not undescribed, f"no describe(): {undescribed}"


class World:
    """Every background collector on fake sources that count the calls they get."""

    def __init__(self, tmp_path: Path) -> None:
        self.database = FixedReadings(ServerReading(
            tables={"wa_main": TableReading("wa_main", 10, 16_384, RowSource.COUNT)}))
        self.api = FakeDockerApi([FakeContainer("wa-waweb-1", "waweb",
                                                listing=listing((5, 1, "./web.log")))])
        self.media = FixedVolume(path=tmp_path)
        directory = ContainerDirectory(fake_engine(self.api), compose_settings())
        self.collectors: list[Collector] = [
            MessagesCollector(self.database, MessagesSettings()),
            ContainersCollector(directory, compose_settings()),
            LogsCollector(directory, LogsSettings()),
            VolumeCollector(self.media, VolumeSettings(), stats=self.media.stats),
            VolumeScanCollector(self.media, VolumeScanSettings()),
        ]

    def calls(self) -> int:
        return self.database.calls + len(self.api.calls) + self.media.calls


def test_registering_every_collector_does_no_work(tmp_path: Path) -> None:
    world = World(tmp_path)
    registry = CollectorRegistry(auto_describe=False)  # as the exporter builds it
    registry.register(SnapshotCollector([Refresher(c) for c in world.collectors], BUILD_INFO))
    assert world.calls() == 0
    # ...and the registry now knows every name, so a later duplicate is refused.
    with pytest.raises(ValueError, match="whatsapp_log_file_size_bytes"):
        registry.register(SnapshotCollector([Refresher(LogsCollector(
            ContainerDirectory(fake_engine(FakeDockerApi()), compose_settings()),
            LogsSettings()))], {}))


def test_describe_names_what_a_refresh_exports(tmp_path: Path) -> None:
    """A family added to refresh() but not to describe() would escape the duplicate check."""
    for collector in World(tmp_path).collectors:
        described = {(f.name, f.type) for f in collector.describe()}
        exported = {(f.name, f.type) for f in refreshed(collector)}
        assert described == exported, type(collector).__name__
        assert all(not f.samples for f in collector.describe()), type(collector).__name__


class SecondVolume(VolumeCollector):
    """Another collector exporting the volume collector's names."""

    name = "second_volume"


def test_two_collectors_exporting_one_name_fail_at_registration(tmp_path: Path) -> None:
    media = FixedVolume(path=tmp_path)
    refreshers = [Refresher(VolumeCollector(media, VolumeSettings(), stats=media.stats)),
                  Refresher(SecondVolume(media, VolumeSettings(), stats=media.stats))]
    registry = CollectorRegistry(auto_describe=False)
    with pytest.raises(ValueError, match="whatsapp_media_volume_size_bytes from both volume "
                                         "and second_volume"):
        registry.register(SnapshotCollector(refreshers, BUILD_INFO))
    assert media.calls == 0


class PendingRecords(Collector):
    """A collector that exports a name the audit metrics already export."""

    name = "pending"

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily("whatsapp_audit_pending_records", "Clash.")]


def test_a_collector_clashing_with_a_separately_registered_one_fails(tmp_path: Path) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AuditMetrics(AuditLog(tmp_path / "audit.jsonl")))
    clashing = SnapshotCollector([Refresher(PendingRecords(VolumeSettings()))], BUILD_INFO)
    with pytest.raises(ValueError, match="whatsapp_audit_pending_records"):
        registry.register(clashing)


def test_a_collector_clashing_with_the_exporters_own_families_fails(tmp_path: Path) -> None:
    class BuildInfo(PendingRecords):
        name = "build"

        def describe(self) -> list[Metric]:
            return [GaugeMetricFamily("whatsapp_exporter_build_info", "Clash.")]

    with pytest.raises(ValueError, match="whatsapp_exporter_build_info from both build and "
                                         "exporter"):
        CollectorRegistry(auto_describe=False).register(
            SnapshotCollector([Refresher(BuildInfo(VolumeSettings()))], BUILD_INFO))
