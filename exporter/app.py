"""Wiring: settings -> sources -> collectors -> registry -> HTTP server, and a clean stop."""

from __future__ import annotations

import logging
import platform
import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

from exporter import __version__
from exporter.collectors.base import Collector, Refresher, SnapshotCollector
from exporter.collectors.containers import ContainersCollector
from exporter.collectors.logs import LogsCollector
from exporter.collectors.messages import MessagesCollector
from exporter.collectors.volume import MediaVolume, VolumeCollector, VolumeScanCollector
from exporter.config import Settings
from exporter.server import Server
from exporter.sources.database import open_source
from exporter.sources.docker import ContainerDirectory, DockerEngine

log = logging.getLogger(__name__)


def build_collectors(settings: Settings) -> list[Collector]:
    collectors: list[Collector] = []
    messages = settings.collectors.messages
    if messages.enabled and settings.database is not None:
        collectors.append(MessagesCollector(open_source(settings.database, messages), messages))
    wanted = settings.collectors
    # One engine client and one container directory for everything that talks to Docker.
    engine = DockerEngine(timeout=max(wanted.containers.timeout or 0, wanted.logs.timeout or 0,
                                      wanted.volume.timeout or 0))
    directory = ContainerDirectory(engine, wanted.containers)
    if wanted.containers.enabled:
        collectors.append(ContainersCollector(directory, wanted.containers))
    if wanted.logs.enabled:
        collectors.append(LogsCollector(directory, wanted.logs))
    media = MediaVolume(wanted.volume, engine, wanted.containers.compose_project)
    if wanted.volume.enabled:
        collectors.append(VolumeCollector(media, wanted.volume))
    if wanted.volume_scan.enabled:
        collectors.append(VolumeScanCollector(media, wanted.volume_scan))
    return collectors


class App:
    def __init__(self, settings: Settings, listen_address: str, telemetry_path: str) -> None:
        self.settings = settings
        self.collectors = build_collectors(settings)
        self.refreshers = [Refresher(c) for c in self.collectors]
        self.snapshots = SnapshotCollector(self.refreshers, {
            "version": __version__, "python_version": platform.python_version()})
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.snapshots)
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.server = Server(listen_address, self.registry, self.snapshots.ready, telemetry_path)
        self._stop = threading.Event()

    def start(self) -> None:
        for refresher in self.refreshers:
            refresher.start()
        self.server.start()
        log.info("listening", extra={"address": self.server.address,
                                     "collectors": ",".join(r.name for r in self.refreshers)})

    def stop(self) -> None:
        self.server.stop()
        for refresher in self.refreshers:
            refresher.stop()
        for collector in self.collectors:
            collector.close()

    def serve_until_signalled(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("stopping", extra={"signal": signal.Signals(signum).name})
            self._stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        self.start()
        self._stop.wait()
        self.stop()
        log.info("stopped")
