"""Fake sources for testing a collector alone: each answers from fixed data, counts the calls
it gets and never opens a socket, so a test runs in milliseconds and can say whether
registration or a scrape did any work."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.config import ContainersSettings, MessagesSettings
from exporter.sources.database import MessagesSource, ServerReading
from exporter.sources.docker import PROJECT_LABEL, SERVICE_LABEL, DockerEngine
from exporter.sources.files import VolumeStats
from exporter.sources.volume import MediaVolume

# Every fixture's timestamps: 2026-10-15T12:00:00Z, inside the years the WA client runs on.
EPOCH = 1_792_065_600.0


class Clock:
    """Wall-clock time the test sets."""

    def __init__(self, now: float = EPOCH) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FixedReadings(MessagesSource):
    """A database server that answers each ``read()`` with the next reading (or raises it)."""

    def __init__(self, *readings: ServerReading | Exception, prefix: str = "wa_",
                 visible: tuple[str, ...] = ()) -> None:
        # No DatabaseSettings: nothing here connects anywhere.
        self.settings = MessagesSettings()
        self.prefix = prefix
        self.readings = list(readings)
        self.visible = visible
        self.calls = 0

    def read(self) -> ServerReading:
        self.calls += 1
        reading = self.readings.pop(0)
        if isinstance(reading, Exception):
            raise reading
        return reading

    def list_databases(self) -> list[str]:
        self.calls += 1
        return list(self.visible)


@dataclass
class FakeContainer:
    """One container as the Docker API lists it, and what a ``docker exec`` in it answers."""

    name: str
    service: str | None = None
    image: str = "wa-standin:test"
    running: bool = True
    project: str = "wa"
    media: str = "rw"  # how the media volume is mounted: rw, ro or none
    listing: bytes = b""  # stdout of the log listing script
    exit_code: int = 0
    stderr: bytes = b""

    @property
    def id(self) -> str:
        return f"{self.name:0<12}"[:12] + "0" * 52

    def mounts(self) -> list[dict[str, Any]]:
        if self.media == "none":
            return []
        volume = f"{self.project}_whatsappMedia"
        return [{"Type": "volume", "Name": volume, "Destination": "/usr/local/wamedia",
                 "Source": f"/var/lib/docker/volumes/{volume}/_data", "RW": self.media == "rw"}]


@dataclass
class FakeDockerApi:
    """The few ``docker.APIClient`` calls the exporter makes, answered from ``containers``."""

    containers_listed: list[FakeContainer] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def containers(self, all: bool = False) -> list[dict[str, Any]]:  # docker-py names it all
        self.calls.append("containers")
        return [{"Id": c.id, "Names": [f"/{c.name}"], "Image": c.image,
                 "State": "running" if c.running else "exited", "Mounts": c.mounts(),
                 "Labels": {PROJECT_LABEL: c.project} | (
                     {SERVICE_LABEL: c.service} if c.service else {})}
                for c in self.containers_listed if all or c.running]

    def _by_id(self, container_id: str) -> FakeContainer:
        return next(c for c in self.containers_listed if c.id == container_id)

    def exec_create(self, container: str, cmd: list[str], **_: Any) -> dict[str, str]:
        self.calls.append(f"exec {self._by_id(container).name}")
        return {"Id": container}

    def exec_start(self, exec_id: str, demux: bool = False) -> tuple[bytes, bytes]:
        container = self._by_id(exec_id)
        return container.listing, container.stderr

    def exec_inspect(self, exec_id: str) -> dict[str, int]:
        return {"ExitCode": self._by_id(exec_id).exit_code}


class _FakeClient:
    def __init__(self, api: FakeDockerApi) -> None:
        self.api = api

    def close(self) -> None:
        pass


def fake_engine(api: FakeDockerApi) -> DockerEngine:
    """A real :class:`DockerEngine` whose client is ``api``: the collector's own error
    handling and discovery run unchanged."""
    return DockerEngine(timeout=5, factory=lambda **_: _FakeClient(api))


def listing(*entries: tuple[int, int, str]) -> bytes:
    """The listing script's output for ``(size, mtime, path)`` entries (``./x`` or
    ``archive/x``)."""
    return b"".join(f"{size} {mtime} {path}\n".encode() for size, mtime, path in entries)


def compose_settings(**extra: Any) -> ContainersSettings:
    return ContainersSettings.model_validate({"compose_project": "wa", **extra})


class FixedVolume(MediaVolume):
    """The media volume at a fixed place, with fixed filesystem figures."""

    def __init__(self, label: str = "whatsappMedia",
                 path: Path = Path("/usr/local/wamedia")) -> None:
        # No settings or engine: nothing here asks Docker.
        self.label, self.path = label, path
        self.figures = VolumeStats(size_bytes=107_374_182_400, free_bytes=42_949_672_960,
                                   avail_bytes=37_580_963_840, files=6_553_600,
                                   files_free=6_000_000)
        self.calls = 0

    def locate(self) -> tuple[str, Path]:
        self.calls += 1
        return self.label, self.path

    def stats(self, path: Path) -> VolumeStats:
        """``statvfs`` of ``path``, as :func:`exporter.sources.files.volume_stats` reports it."""
        assert path == self.path
        self.calls += 1
        return self.figures
