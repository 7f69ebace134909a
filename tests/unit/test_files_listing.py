"""Parsing the one-exec log listing, summarising it, and recognising WA containers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.collectors.logs import LogSummary, summarise
from exporter.config import ConfigError, ContainersSettings, ImageRule, load_settings
from exporter.sources.docker import (
    LISTING_SCRIPT,
    DockerError,
    find_volume,
    parse_listing,
    recognise,
)
from exporter.sources.files import LogEntry

# A file name: any bytes but "/" and NUL, not "." or "..".
names = st.binary(min_size=1, max_size=40).map(
    lambda b: b.replace(b"/", b"_").replace(b"\0", b"_")).filter(lambda b: b not in (b".", b".."))


def record(size: int, mtime: int, where: str, name: bytes) -> bytes:
    """One line as ``stat -c '%s %Y %n'`` prints it for a path found by the listing script."""
    prefix = b"./" if where == "live" else b"archive/"
    return b"%d %d %s%s\n" % (size, mtime, prefix, name)


@given(st.lists(st.tuples(st.integers(0, 1 << 40), st.integers(0, 1 << 33),
                          st.sampled_from(["live", "archive"]), names), max_size=30))
def test_any_file_names_parse_back_exactly(files: list[tuple[int, int, str, bytes]]) -> None:
    output = b"".join(record(*f) for f in files)

    parsed = parse_listing(output)

    assert [(e.size, int(e.mtime), e.where, e.name) for e in parsed] == files


def test_a_name_that_imitates_a_record_stays_one_name() -> None:
    sly = b"web.log\n999 1 x"  # a newline and what looks like the next record, but no "/"
    output = record(5, 10, "live", sly) + record(7, 20, "archive", b"a.gz\n")

    assert parse_listing(output) == [LogEntry("live", sly, 5, 10.0),
                                     LogEntry("archive", b"a.gz\n", 7, 20.0)]


@pytest.mark.parametrize("garbage", [b"sh: /bin/find: not found\n", b"12 34 /abs/path\n",
                                     b"1 2 ./x"])
def test_output_that_is_not_a_listing_is_refused(garbage: bytes) -> None:
    with pytest.raises(ValueError, match="unexpected listing output"):
        parse_listing(record(1, 2, "live", b"ok") + garbage)


def test_the_listing_script_is_fixed_and_takes_the_directory_as_an_argument() -> None:
    assert "$1" in LISTING_SCRIPT and "whatsapp" not in LISTING_SCRIPT


def test_summary_labels_live_files_and_only_aggregates_the_archive() -> None:
    summary = summarise([
        LogEntry("live", b"web.log", 100, 5.0),
        LogEntry("live", b"caf\xe9.log", 3, 5.0),
        LogEntry("archive", b"web.log.1.gz", 10, 300.0),
        LogEntry("archive", b"web.log.2.gz", 20, 200.0),
    ])

    assert summary == LogSummary(live={"web.log": 100, "caf\\xe9.log": 3}, archive_files=2,
                                 archive_bytes=30, archive_oldest=200.0,
                                 archive_families={"web.log": 2, "caf\\xe9.log": 0},
                                 uncompressed_files=0, uncompressed_bytes=0)
    assert summarise([]).archive_oldest is None


# --- recognising WA containers ----------------------------------------------------------------


def compose(service: str, project: str = "wa") -> dict[str, str]:
    return {"com.docker.compose.service": service, "com.docker.compose.project": project}


@pytest.mark.parametrize(("service", "role"), [
    ("waweb", "webapp"), ("wacore", "coreapp"), ("wacore3", "coreapp"), ("master1", "master"),
    ("master", "master"), ("db", None), ("wawebhook", None), ("xwacore", None),
])
def test_roles_come_from_the_compose_service(service: str, role: str | None) -> None:
    assert recognise("x", compose(service), "busybox", ContainersSettings()) == role


def test_default_image_patterns_recognise_containers_outside_compose() -> None:
    settings = ContainersSettings()

    assert recognise("a", {}, "docker.whatsapp.biz/web:v2.53.1", settings) == "webapp"
    assert recognise("b", {}, "docker.whatsapp.biz/coreapp:v2.53.1", settings) == "coreapp"
    assert recognise("c", {}, "mysql:8", settings) is None


def test_explicit_names_win_and_the_project_filter_applies_to_the_rest() -> None:
    settings = ContainersSettings(compose_project="prod", names={"legacy-core": "master"},
                                  images=(ImageRule(pattern="*wa-standin*", role="coreapp"),))

    assert recognise("legacy-core", compose("waweb", "other"), "", settings) == "master"
    assert recognise("p", compose("waweb", "prod"), "", settings) == "webapp"
    assert recognise("o", compose("waweb", "staging"), "", settings) is None
    assert recognise("i", compose("front", "prod"), "wa-standin:test", settings) == "coreapp"
    assert recognise("n", {}, "wa-standin:test", settings) is None


# --- the media volume by Docker name ----------------------------------------------------------


class FakeEngine:
    def __init__(self, volumes: list[str]) -> None:
        self.volumes = volumes

    def call(self, request: Callable[[Any], Any]) -> Any:
        class Api:
            def volumes(_self) -> dict[str, Any]:
                return {"Volumes": [{"Name": n, "Mountpoint": f"/mnt/{n}"} for n in self.volumes]}
        return request(Api())


@pytest.mark.parametrize(("volumes", "project", "chosen"), [
    (["whatsappMedia"], None, "whatsappMedia"),
    (["biz_whatsappMedia", "other"], None, "biz_whatsappMedia"),
    (["a_whatsappMedia", "b_whatsappMedia"], "b", "b_whatsappMedia"),
    (["whatsappMedia", "a_whatsappMedia"], None, "whatsappMedia"),
])
def test_the_media_volume_is_found_by_name_or_compose_prefixed_name(
        volumes: list[str], project: str | None, chosen: str) -> None:
    assert find_volume(FakeEngine(volumes), "whatsappMedia", project) == (  # type: ignore[arg-type]
        chosen, f"/mnt/{chosen}")


@pytest.mark.parametrize(("volumes", "message"), [
    (["whatsappMediaOld", "other"], "no Docker volume named whatsappMedia"),
    (["a_whatsappMedia", "b_whatsappMedia"], "several Docker volumes match"),
])
def test_a_missing_or_ambiguous_media_volume_is_an_error(volumes: list[str],
                                                         message: str) -> None:
    with pytest.raises(DockerError, match=message):
        find_volume(FakeEngine(volumes), "whatsappMedia", None)  # type: ignore[arg-type]


# --- settings ---------------------------------------------------------------------------------


def load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "config.yml"
    path.write_text("collectors:\n  messages: {enabled: false}\n" + text)
    return load_settings(config_file=path, environ={}).collectors


def test_defaults_enable_every_file_and_container_collector(tmp_path: Path) -> None:
    collectors = load(tmp_path, "")

    assert collectors.containers.enabled and collectors.logs.enabled
    assert collectors.logs.mode == "exec" and collectors.logs.log_dir == "/var/log/whatsapp"
    assert str(collectors.volume.path) == "/usr/local/wamedia"
    assert collectors.volume.name == "whatsappMedia"
    assert (collectors.volume_scan.interval, collectors.volume_scan.timeout) == (300.0, 120.0)


@pytest.mark.parametrize(("text", "message"), [
    ("  logs: {mode: host}\n", "collectors.logs: mode is host but host_paths is empty"),
    ("  logs: {log_dir: var/log}\n", "collectors.logs.log_dir='var/log': is not an absolute path"),
    ("  containers: {names: {waweb: web}}\n", "collectors.containers.names.waweb='web'"),
    ("  containers: {images: [{pattern: '*wa*'}]}\n", "collectors.containers.images.0.role: "
                                                      "not set"),
    ("  volume: {source: nfs}\n", "collectors.volume.source='nfs'"),
    ("  volume_scan: {workers: 0}\n", "collectors.volume_scan.workers=0"),
    ("  volume_scan: {path: /x}\n", "collectors.volume_scan.path: unknown key"),
])
def test_bad_settings_name_the_key_and_a_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert str(err.value).startswith(message)
    assert "fix:" in str(err.value)
