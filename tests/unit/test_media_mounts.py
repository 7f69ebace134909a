"""What a WA container has at the media path: parsed from Docker's ``Mounts``, exposed as a
state set and an info metric (hermetic: Docker's answer as data, the collector on a fixed
directory)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector as PromCollector

from exporter.collectors.containers import ContainersCollector
from exporter.config import ConfigError, ContainersSettings, load_settings
from exporter.sources.docker import MediaMount, WaContainer, media_mount

MEDIA = "/usr/local/wamedia"
VOLUME = {"Type": "volume", "Name": "wa_whatsappMedia", "Driver": "local",
          "Source": "/var/lib/docker/volumes/wa_whatsappMedia/_data", "Destination": MEDIA,
          "Mode": "z", "RW": True, "Propagation": ""}
LOGS = {"Type": "bind", "Source": "/srv/logs", "Destination": "/var/log/whatsapp",
        "Mode": "", "RW": True, "Propagation": "rprivate"}


@pytest.mark.parametrize(("mounts", "expected"), [
    ([LOGS, VOLUME], MediaMount("rw", "volume", "wa_whatsappMedia")),
    ([{**VOLUME, "RW": False, "Mode": "ro"}], MediaMount("ro", "volume", "wa_whatsappMedia")),
    ([{**LOGS, "Source": "/srv/wamedia", "Destination": MEDIA + "/"}],
     MediaMount("rw", "bind", "/srv/wamedia")),
    ([{**VOLUME, "Destination": MEDIA + "/incoming"}], MediaMount()),  # not the media path
    ([LOGS], MediaMount()),
    ([], MediaMount("none", "", "")),
])
def test_the_mount_at_the_media_path_is_found_with_its_mode_and_source(
        mounts: list[dict[str, Any]], expected: MediaMount) -> None:
    assert media_mount(mounts, MEDIA) == expected


class Directory:
    """A fixed discovery result, in place of the Docker engine."""

    def __init__(self, containers: Sequence[WaContainer]) -> None:
        self.containers = list(containers)
        self.settings = ContainersSettings()

    def discover(self) -> list[WaContainer]:
        return self.containers


class Serve(PromCollector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Sequence[Metric]:
        return self.families


def exposition(families: Sequence[Metric], prefix: str) -> list[str]:
    registry = CollectorRegistry()
    registry.register(Serve(families))
    return [line for line in generate_latest(registry).decode().splitlines()
            if line.startswith(prefix)]


def test_every_container_gets_all_three_modes_and_mounted_ones_their_source() -> None:
    volume = MediaMount("rw", "volume", "wa_whatsappMedia")
    directory = Directory([
        WaContainer("1", "wa-waweb-1", "webapp", True, volume),
        WaContainer("2", "wa-wacore-1", "coreapp", False, MediaMount("ro", "bind", "/srv/m")),
        WaContainer("3", "wa-master1-1", "master", True),
    ])
    collector = ContainersCollector(directory, ContainersSettings())  # type: ignore[arg-type]
    # In name order, as discovery sorts them.
    assert exposition(collector.refresh(), "whatsapp_container_media") == [
        'whatsapp_container_media_mount{container="wa-master1-1",mode="rw",role="master"} 0.0',
        'whatsapp_container_media_mount{container="wa-master1-1",mode="ro",role="master"} 0.0',
        'whatsapp_container_media_mount{container="wa-master1-1",mode="none",role="master"} 1.0',
        'whatsapp_container_media_mount{container="wa-wacore-1",mode="rw",role="coreapp"} 0.0',
        'whatsapp_container_media_mount{container="wa-wacore-1",mode="ro",role="coreapp"} 1.0',
        'whatsapp_container_media_mount{container="wa-wacore-1",mode="none",role="coreapp"} 0.0',
        'whatsapp_container_media_mount{container="wa-waweb-1",mode="rw",role="webapp"} 1.0',
        'whatsapp_container_media_mount{container="wa-waweb-1",mode="ro",role="webapp"} 0.0',
        'whatsapp_container_media_mount{container="wa-waweb-1",mode="none",role="webapp"} 0.0',
        'whatsapp_container_media_mount_info{container="wa-wacore-1",role="coreapp",'
        'source="/srv/m",type="bind"} 1.0',
        'whatsapp_container_media_mount_info{container="wa-waweb-1",role="webapp",'
        'source="wa_whatsappMedia",type="volume"} 1.0',
    ]


def test_an_unreachable_engine_drops_the_mounts_but_keeps_containers_down() -> None:
    directory = Directory([WaContainer("1", "wa-waweb-1", "webapp", True)])
    collector = ContainersCollector(directory, ContainersSettings())  # type: ignore[arg-type]
    collector.refresh()
    snapshot = collector.failed(OSError("engine gone"), None, 0.0)
    assert exposition(snapshot.families, "whatsapp_container") == [
        'whatsapp_container_up{container="wa-waweb-1",role="webapp"} 0.0']


def test_the_media_path_setting_must_be_absolute(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("collectors:\n  messages: {enabled: false}\n"
                      "  containers: {media_path: usr/local/wamedia}\n")
    with pytest.raises(ConfigError, match=r"collectors\.containers\.media_path="
                                          r"'usr/local/wamedia': is not an absolute path"):
        load_settings(config_file=config, environ={})
    assert ContainersSettings().media_path == MEDIA
