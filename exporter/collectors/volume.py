"""The media volume: filesystem figures (``volume``, frequent) and a ``du``-like scan
(``volume_scan``, on its own slower interval, so a long walk never delays the cheap figures).
The scan is incremental (:mod:`exporter.sources.media`): its state lives in the collector for
as long as the exporter runs, and starts over when the volume's path changes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import Collector, described
from exporter.config import VolumeScanSettings, VolumeSettings
from exporter.sources.files import VolumeStats, volume_stats
from exporter.sources.media import MediaScan
from exporter.sources.media_state import ScanResult
from exporter.sources.volume import MediaVolume


def _gauge(name: str, help_text: str, volume: str, value: float) -> Metric:
    family = GaugeMetricFamily(name, help_text, labels=["volume"])
    family.add_metric([volume], value)
    return family


class VolumeCollector(Collector):
    name = "volume"

    def __init__(self, media: MediaVolume, settings: VolumeSettings,
                 stats: Callable[[Path], VolumeStats] = volume_stats) -> None:
        super().__init__(settings)
        self.media = media
        self.stats = stats

    def refresh(self) -> Sequence[Metric]:
        volume, path = self.media.locate()
        return self._families(volume, self.stats(path))

    def describe(self) -> Sequence[Metric]:
        return described(self._families("", VolumeStats(0, 0, 0, 0, 0)))

    def _families(self, volume: str, stats: VolumeStats) -> list[Metric]:
        prefix = "whatsapp_media_volume_"
        return [
            _gauge(prefix + "size_bytes", "Size of the filesystem holding the media volume.",
                   volume, stats.size_bytes),
            _gauge(prefix + "avail_bytes", "Bytes available to unprivileged users on that "
                   "filesystem.", volume, stats.avail_bytes),
            _gauge(prefix + "free_bytes", "Free bytes on that filesystem.", volume,
                   stats.free_bytes),
            _gauge(prefix + "files", "Inodes on that filesystem.", volume, stats.files),
            _gauge(prefix + "files_free", "Free inodes on that filesystem.", volume,
                   stats.files_free),
        ]


class VolumeScanCollector(Collector):
    name = "volume_scan"

    def __init__(self, media: MediaVolume, settings: VolumeScanSettings) -> None:
        super().__init__(settings)
        self.media = media
        self.workers = settings.workers or min(4, len(os.sched_getaffinity(0)))
        self.full_every = settings.full_scan_every_refreshes()
        # The scan stops itself a little before the refresher gives up on it, so its progress
        # is kept for the next refresh instead of a thread left running past the timeout.
        self.scan_timeout = self.timeout - min(1.0, self.timeout / 10)
        self.scan: MediaScan | None = None

    def refresh(self) -> Sequence[Metric]:
        volume, path = self.media.locate()
        if self.scan is None or self.scan.path != path:
            self.scan = MediaScan(path, workers=self.workers, full_every=self.full_every)
        return self._families(volume, self.scan.scan(self.scan_timeout))

    def describe(self) -> Sequence[Metric]:
        return described(self._families("", ScanResult(0, 0, 0, 0, 0, False, 0, 0.0, 0.0)))

    def _families(self, volume: str, usage: ScanResult) -> list[Metric]:
        prefix = "whatsapp_media_volume_"
        return [
            _gauge(prefix + "used_bytes", "Bytes allocated under the media path (st_blocks, "
                   "like du -s; hard-linked files once, symlinks not followed).", volume,
                   usage.allocated_bytes),
            _gauge(prefix + "stored_files", "Regular files under the media path.", volume,
                   usage.files),
            _gauge(prefix + "scan_errors", "Entries the last scan could not read (e.g. "
                   "directories without permission); their contents are not counted.", volume,
                   usage.errors),
            _gauge(prefix + "scan_directories_listed", "Directories the last scan listed again "
                   "(mtime changed, new, or a full pass).", volume, usage.directories_listed),
            _gauge(prefix + "scan_directories_remembered", "Directories the last scan took "
                   "from memory (mtime unchanged).", volume, usage.directories_remembered),
            _gauge(prefix + "scan_full", "1 if the last scan was a full pass, 0 if incremental.",
                   volume, 1.0 if usage.full else 0.0),
            _gauge(prefix + "scan_last_full_timestamp_seconds", "When the last full pass of the "
                   "scan finished.", volume, usage.last_full_finished),
            _gauge(prefix + "scan_last_full_duration_seconds", "How long the last full pass "
                   "took, over all the refreshes it needed.", volume, usage.last_full_seconds),
            _gauge(prefix + "scan_state_bytes", "Memory held by the scan's remembered "
                   "directories (one record per directory, none per file).", volume,
                   usage.state_bytes),
        ]
