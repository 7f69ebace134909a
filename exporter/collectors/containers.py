"""``whatsapp_container_up``: every WA container the directory finds, running or not."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import Collector, Snapshot
from exporter.config import ContainersSettings, Role
from exporter.sources.docker import ContainerDirectory


@dataclass(frozen=True)
class _Seen:
    role: Role
    at: float  # when discovery last listed it


class ContainersCollector(Collector):
    name = "containers"

    def __init__(self, directory: ContainerDirectory, settings: ContainersSettings,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings)
        self.directory = directory
        self.clock = clock
        # A container that disappears (removed, or between compose down and up) is reported
        # down until stale_after, rather than vanishing from alerts at once.
        self._seen: dict[str, _Seen] = {}

    def refresh(self) -> Sequence[Metric]:
        found = {container.name: container for container in self.directory.discover()}
        now = self.clock()
        for container in found.values():
            self._seen[container.name] = _Seen(container.role, now)
        for name, seen in list(self._seen.items()):
            if now - seen.at > self.stale_after:
                del self._seen[name]
        return [self._family({name: (seen.role, name in found and found[name].running)
                              for name, seen in self._seen.items()})]

    def failed(self, error: BaseException, previous: Snapshot | None, now: float) -> Snapshot:
        """The engine is out of reach: every known WA container counts as down."""
        return Snapshot([self._family({name: (seen.role, False)
                                       for name, seen in self._seen.items()})], now)

    def _family(self, state: dict[str, tuple[Role, bool]]) -> Metric:
        for name, role in self.directory.settings.names.items():
            state.setdefault(name, (role, False))  # listed by the operator, so always shown
        up = GaugeMetricFamily("whatsapp_container_up", "1 if the WA container is running.",
                               labels=["container", "role"])
        for name in sorted(state):
            role, running = state[name]
            up.add_metric([name, role], 1.0 if running else 0.0)
        return up
