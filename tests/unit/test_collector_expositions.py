"""Each collector alone, on a fake source with fixed data: its whole exposition, compared
with a fixture in tests/unit/fixtures (``UPDATE_FIXTURES=1 make test-fast`` rewrites them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from exporter.actions.audit import StateFile
from exporter.actions.base import ActionResult, Request
from exporter.collectors.action_state import ActionStateMetrics, AuditMetrics
from exporter.collectors.actions import ActionMetrics
from exporter.collectors.containers import ContainersCollector
from exporter.collectors.logs import LogsCollector
from exporter.collectors.messages import MessagesCollector
from exporter.collectors.readiness import ReadinessCollector
from exporter.collectors.volume import VolumeCollector, VolumeScanCollector
from exporter.config import (
    LogsSettings,
    MessagesSettings,
    UpgradeSettings,
    VolumeScanSettings,
    VolumeSettings,
)
from exporter.sources.database import DatabaseError, RowSource, ServerReading, TableReading
from exporter.sources.docker import ContainerDirectory, DockerError, WaContainer
from exporter.sources.media_state import ScanResult
from tests.unit.expositions import (
    assert_matches_fixture,
    exposition,
    live_exposition,
    refreshed,
)
from tests.unit.fakes import (
    EPOCH,
    Clock,
    FakeContainer,
    FakeDockerApi,
    FixedReadings,
    FixedVolume,
    compose_settings,
    fake_engine,
    listing,
)


def two_databases_and_a_failing_one() -> ServerReading:
    return ServerReading(
        tables={"wa_main": TableReading("wa_main", 1_250, 196_608, RowSource.COUNT),
                "wa_second": TableReading("wa_second", 2_400_000, 734_003_200,
                                           RowSource.N_LIVE_TUP)},
        errors={"wa_third": DatabaseError("wa_third: query took longer than 20s",
                                          kind="timeout")})


def test_messages_exposition_with_one_database_failing() -> None:
    collector = MessagesCollector(FixedReadings(two_databases_and_a_failing_one()),
                                  MessagesSettings(), clock=Clock())
    assert_matches_fixture("messages_one_database_failing.prom",
                           exposition(collector, refreshed(collector)))


def test_messages_exposition_when_the_server_is_unreachable_then_stale() -> None:
    clock = Clock()
    collector = MessagesCollector(FixedReadings(two_databases_and_a_failing_one()),
                                  MessagesSettings(stale_after=300), clock=clock)
    refreshed(collector)
    unreachable = DatabaseError("cannot connect to 127.0.0.1:3306", kind="connect")
    clock.now += 60  # figures of a minute ago are still served, every database down
    snapshot = collector.failed(unreachable, None, clock.now)
    assert_matches_fixture("messages_server_unreachable.prom",
                           exposition(collector, snapshot.families))
    clock.now += 300  # now they are stale: only the down databases remain
    snapshot = collector.failed(unreachable, None, clock.now)
    assert_matches_fixture("messages_server_unreachable_stale.prom",
                           exposition(collector, snapshot.families))


def test_messages_exposition_when_no_wa_database_is_found() -> None:
    collector = MessagesCollector(FixedReadings(ServerReading(), visible=("postgres", "crm")),
                                  MessagesSettings(), clock=Clock())
    assert_matches_fixture("messages_none_found.prom",
                           exposition(collector, refreshed(collector)))


def wa_install() -> FakeDockerApi:
    """A multiconnect install (project wa) beside its database and another project's webapp."""
    return FakeDockerApi([
        FakeContainer("wa-waweb-1", "waweb"),
        FakeContainer("wa-wacore1-1", "wacore1", media="ro"),  # the guide wants rw
        FakeContainer("wa-wacore2-1", "wacore2", running=False),
        FakeContainer("wa-master1-1", "master1", media="none"),
        FakeContainer("wa-db-1", "db", image="mariadb:10.11", media="none"),
        FakeContainer("staging-waweb-1", "waweb", project="staging"),
    ])


def test_containers_exposition_then_one_removed_then_engine_down() -> None:
    api, clock = wa_install(), Clock()
    directory = ContainerDirectory(fake_engine(api),
                                   compose_settings(names={"legacy_core": "coreapp"}))
    collector = ContainersCollector(directory, compose_settings(stale_after=300), clock=clock)
    assert_matches_fixture("containers.prom", exposition(collector, refreshed(collector)))

    api.containers_listed = [c for c in api.containers_listed if c.name != "wa-wacore2-1"]
    clock.now += 60  # removed a minute ago: reported down, not gone, until stale
    assert_matches_fixture("containers_one_removed.prom",
                           exposition(collector, refreshed(collector)))

    clock.now += 60
    down = collector.failed(DockerError("Docker engine is unreachable", kind="connect"), None,
                            clock.now)
    assert_matches_fixture("containers_engine_down.prom", exposition(collector, down.families))


def test_logs_exposition_in_exec_mode_with_one_listing_failing() -> None:
    day = int(EPOCH) - 86_400
    webapp_logs = listing(
        (1_048_576, int(EPOCH), "./web.log"), (52_428, int(EPOCH), "./access.log"),
        (0, int(EPOCH), "./error.log"),
        *[(2_097_152, day - i * 86_400, f"archive/web.log.{i}.gz") for i in range(1, 4)],
        *[(409_600, day - i * 86_400, f"archive/access.log-202610{10 - i:02d}.gz")
          for i in range(1, 3)],
        (20_971_520, day, "archive/error.log.1"),  # not compressed
        (77, day - 40 * 86_400, "archive/notes.txt"),  # from no live log: family other
    )
    api = FakeDockerApi([
        FakeContainer("wa-waweb-1", "waweb", listing=webapp_logs),
        FakeContainer("wa-wacore1-1", "wacore1", exit_code=2,
                      stderr=b"find: 'archive/': Permission denied\n"),
        FakeContainer("wa-wacore2-1", "wacore2", running=False),
    ])
    directory = ContainerDirectory(fake_engine(api), compose_settings())
    collector = LogsCollector(directory, LogsSettings(mode="exec"), clock=Clock())
    assert_matches_fixture("logs_exec.prom", exposition(collector, refreshed(collector)))
    assert "exec wa-wacore2-1" not in api.calls  # a stopped container is not listed


def test_volume_exposition() -> None:
    media = FixedVolume()
    collector = VolumeCollector(media, VolumeSettings(), stats=media.stats)
    assert_matches_fixture("volume.prom", exposition(collector, refreshed(collector)))


def test_action_metrics_exposition_before_and_after_runs() -> None:
    registry = CollectorRegistry()
    metrics = ActionMetrics(registry, ["gc", "media_gc", "cleanup"])
    metrics.containers_found([WaContainer("1", "wa-waweb-1", "webapp", True),
                              WaContainer("2", "wa-wacore1-1", "coreapp", True)])
    assert_matches_fixture("actions_before_any_run.prom", generate_latest(registry).decode())

    metrics.decided("gc", "started")
    metrics.finished(Request("gc", "alert"), [],
                     ActionResult("success", {"messages_deleted": 5}), EPOCH, EPOCH + 42)
    metrics.decided("cleanup", "started")
    metrics.finished(Request("cleanup", "schedule"), ["wa-waweb-1", "wa-wacore1-1"],
                     ActionResult("failed", {"containers": {
                         "wa-waweb-1": {"role": "webapp"}, "wa-wacore1-1": {"role": "coreapp"}}},
                         per_target={"wa-waweb-1": "success", "wa-wacore1-1": "failed"}),
                     EPOCH + 100, EPOCH + 103)
    metrics.decided("media_gc", "started")
    metrics.callback_received("media", "matched")
    metrics.finished(Request("media_gc", "manual"), [],
                     ActionResult("success", {"items_deleted": 7, "completed_by": "callback"}),
                     EPOCH + 200, EPOCH + 260)
    metrics.decided("gc", "started")
    metrics.callback_received("message", "no_gc_running")
    metrics.finished(Request("gc", "schedule"), [],
                     ActionResult("unconfirmed", {"messages_deleted": 0}), EPOCH + 300,
                     EPOCH + 330)
    metrics.decided("media_gc", "skipped_cooldown")
    assert_matches_fixture("actions_after_runs.prom", generate_latest(registry).decode())


class FixedScan:
    """A media scan that always ends with the same figures."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def scan(self, timeout: float | None = None) -> ScanResult:
        return ScanResult(allocated_bytes=53_687_091_200, files=1_250_000, errors=2,
                          directories_listed=1_024, directories_remembered=77_000, full=False,
                          state_bytes=9_437_184, last_full_finished=EPOCH - 3_600,
                          last_full_seconds=95.5)


def test_volume_scan_exposition() -> None:
    media = FixedVolume()
    collector = VolumeScanCollector(media, VolumeScanSettings())
    collector.scan = FixedScan(media.path)  # type: ignore[assignment]
    assert_matches_fixture("volume_scan.prom", exposition(collector, refreshed(collector)))


class Runs:
    """The runner's view: one cleanup in flight, two gc alerts waiting for the window."""

    def running(self) -> list[str]:
        return ["cleanup:wa-waweb-1"]

    def deferred_count(self, action: str) -> int:
        return {"gc": 2}.get(action, 0)


class Window:
    def describe(self, now: float) -> dict[str, Any]:
        assert now == EPOCH
        return {"mode": "fixed", "start": "01:00", "end": "05:00", "timezone": "Europe/Madrid",
                "open": False}


def test_action_state_exposition() -> None:
    collector = ActionStateMetrics(["gc", "media_gc", "cleanup"], Runs(), Window(),
                                   clock=lambda: EPOCH)
    assert_matches_fixture("action_state.prom", live_exposition(collector))


@dataclass
class Audit:
    write_errors: int = 3
    pending: int = 2


def test_audit_exposition() -> None:
    assert_matches_fixture("audit.prom", live_exposition(AuditMetrics(Audit())))


def test_readiness_exposition(tmp_path: Path) -> None:
    """One database under the bound, one over: the first is ready while GC is neither running
    nor failing."""
    messages = MessagesCollector(FixedReadings(ServerReading(tables={
        "wa_main": TableReading("wa_main", 1_250_000, 196_608, RowSource.COUNT),
        "wa_second": TableReading("wa_second", 2_400_000, 734_003_200, RowSource.N_LIVE_TUP)})),
        MessagesSettings())
    messages.refresh()
    state = StateFile(tmp_path / "state.json")
    state.update(lambda data: data["last_success"].update(gc=EPOCH))
    state.update(lambda data: data["last_run"].update(gc=EPOCH))
    collector = ReadinessCollector(messages, state, UpgradeSettings())
    assert_matches_fixture("readiness.prom", live_exposition(collector))
