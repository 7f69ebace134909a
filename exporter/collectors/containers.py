"""``whatsapp_container_up``: every WA container the directory finds, running or not; and
``whatsapp_container_media_mount``/``_info``: what each has at the media path, which the
guide says every webapp and coreapp container needs read/write."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import Collector, Snapshot, described
from exporter.config import ContainersSettings, Role
from exporter.sources.docker import MEDIA_MODES, ContainerDirectory, WaContainer


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
                              for name, seen in self._seen.items()}),
                *media_families(found[name] for name in sorted(found))]

    def describe(self) -> Sequence[Metric]:
        return described([self._family({}), *media_families([])])

    def failed(self, error: BaseException, previous: Snapshot | None, now: float) -> Snapshot:
        """The engine is out of reach: every known WA container counts as down, and what they
        mount is unknown."""
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


def media_families(containers: Iterable[WaContainer]) -> list[Metric]:
    """One series per mode for each container (1 for the mode it has: a state set, so a
    missing mount reads as ``mode="none"`` rather than as an absent series), and the source
    of each mount there. Containers only of the last discovery: a removed one mounts
    nothing."""
    mode = GaugeMetricFamily(
        "whatsapp_container_media_mount",
        "1 for what the WA container has at the media path: rw, ro (read-only) or none.",
        labels=["container", "role", "mode"])
    info = GaugeMetricFamily(
        "whatsapp_container_media_mount_info",
        "The mount at the media path: its type (volume, bind) and source (volume name or "
        "host path); always 1.", labels=["container", "role", "type", "source"])
    for container in containers:
        for each in MEDIA_MODES:
            mode.add_metric([container.name, container.role, each],
                            1.0 if container.media.mode == each else 0.0)
        if container.media.mode != "none":
            info.add_metric([container.name, container.role, container.media.type,
                             container.media.source], 1.0)
    return [mode, info]
