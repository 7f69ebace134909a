"""The logs collector alone, on bind-mounted directories (host mode): what it exports for the
archive of a healthy webapp and of a coreapp whose old files pile up."""

from __future__ import annotations

import os
from pathlib import Path

from exporter.collectors.logs import LogsCollector
from exporter.config import ContainersSettings, LogsSettings
from exporter.sources.docker import ContainerDirectory, WaContainer
from tests.support import parse_metrics, series
from tests.unit.expositions import assert_matches_fixture, exposition, refreshed


class KnownContainers(ContainerDirectory):
    """Discovery that answers from a fixed list: host mode needs no engine otherwise."""

    def __init__(self, *containers: WaContainer) -> None:
        super().__init__(engine=None, settings=ContainersSettings())  # type: ignore[arg-type]
        self.containers = list(containers)

    def discover(self) -> list[WaContainer]:
        return self.containers


def log_dir(root: Path, live: list[str], archived: dict[str, bytes]) -> Path:
    (root / "archive").mkdir(parents=True)
    for name in live:
        (root / name).write_bytes(b"live\n")
    for index, (name, content) in enumerate(archived.items()):
        path = root / "archive" / name
        path.write_bytes(content)
        os.utime(path, (1_700_000_000 + index, 1_700_000_000 + index))
    return root


def test_archive_families_and_uncompressed_files_in_the_exposition(tmp_path: Path) -> None:
    web_archive = {f"{log}.{i}.gz": b"gz" for log in ("web.log", "error.log")
                   for i in range(2, 31)}
    web_archive |= {f"access.log-202601{i:02d}.gz": b"gz" for i in range(1, 31)}
    web_archive |= {"web.log.1": b"x" * 1000, "error.log.1": b"y" * 500}  # not compressed
    web = log_dir(tmp_path / "web", ["web.log", "access.log", "error.log"], web_archive)
    core = log_dir(tmp_path / "core", ["coreapp.log", "wa-service-coreapp.log"],
                   {f"coreapp.log.{i}.gz": b"gz" for i in range(1, 32)} | {"stray.tar": b"t"})
    settings = LogsSettings(mode="host", host_paths={"wa_waweb_1": web, "wa_wacore_1": core})
    collector = LogsCollector(KnownContainers(WaContainer("1", "wa_waweb_1", "webapp", True),
                                              WaContainer("2", "wa_wacore_1", "coreapp", True)),
                              settings)

    text = exposition(collector, refreshed(collector))
    assert_matches_fixture("logs_host.prom", text)
    samples = parse_metrics(text)

    by_family = {(dict(labels)["container"], dict(labels)["family"]): value for labels, value
                 in series(samples, "whatsapp_log_archive_family_files").items()}
    assert by_family == {
        ("wa_waweb_1", "web.log"): 30, ("wa_waweb_1", "access.log"): 30,
        ("wa_waweb_1", "error.log"): 30,
        ("wa_wacore_1", "coreapp.log"): 31, ("wa_wacore_1", "wa-service-coreapp.log"): 0,
        ("wa_wacore_1", "other"): 1,
    }
    totals = {dict(labels)["container"]: value
              for labels, value in series(samples, "whatsapp_log_archive_files").items()}
    assert totals == {"wa_waweb_1": 90, "wa_wacore_1": 32}
    web_labels = (("container", "wa_waweb_1"), ("role", "webapp"))
    core_labels = (("container", "wa_wacore_1"), ("role", "coreapp"))
    assert series(samples, "whatsapp_log_archive_uncompressed_files") == {
        web_labels: 2, core_labels: 1}
    assert series(samples, "whatsapp_log_archive_uncompressed_size_bytes") == {
        web_labels: 1500, core_labels: 1}
