"""Where the media volume is, asked anew before every reading: its figures come from
:mod:`exporter.sources.files` (statvfs) and :mod:`exporter.sources.media` (the scan)."""

from __future__ import annotations

from pathlib import Path

from exporter.config import VolumeSettings
from exporter.sources.docker import DockerEngine, find_volume


class MediaVolume:
    """Where the media volume is: a path mounted into the exporter, or Docker's mountpoint of
    the named volume (``<name>`` or a compose-prefixed ``<project>_<name>``)."""

    def __init__(self, settings: VolumeSettings, engine: DockerEngine,
                 project: str | None) -> None:
        self.settings = settings
        self.engine = engine
        self.project = project

    def locate(self) -> tuple[str, Path]:
        """``(volume label, path)``; asks Docker every time, as a volume may be re-created."""
        if self.settings.source == "path":
            return self.settings.name, self.settings.path
        name, mountpoint = find_volume(self.engine, self.settings.name, self.project)
        return name, Path(mountpoint)
