"""Archived log files per log family, and the ones rotation left uncompressed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.collectors.logs import OTHER_FAMILY, archive_family, is_compressed, summarise
from exporter.sources.files import LogEntry

WEBAPP = ("web.log", "access.log", "error.log")
COREAPP = ("coreapp.log", "wa-service-coreapp.log")


@pytest.mark.parametrize(("archived", "live", "family"), [
    ("web.log.1.gz", WEBAPP, "web.log"),  # logrotate's numbered names
    ("error.log.12.gz", WEBAPP, "error.log"),
    ("web.log.1", WEBAPP, "web.log"),  # delaycompress: the newest one not yet compressed
    ("access.log-20260101.gz", WEBAPP, "access.log"),  # logrotate dateext
    ("access.log-2026010112.gz", WEBAPP, "access.log"),  # dateformat -%Y%m%d%H
    ("access.log-2026-01-01.bz2", WEBAPP, "access.log"),  # dateformat -%Y-%m-%d
    ("access.log-20260101", WEBAPP, "access.log"),
    ("coreapp.log.3.gz", COREAPP, "coreapp.log"),
    ("coreapp.log.3", COREAPP, "coreapp.log"),
    ("coreapp.log.20260101T000000Z.gz", COREAPP, "coreapp.log"),  # cleanup.sh's names
    ("coreapp.log.20260101T000000Z-2.gz", COREAPP, "coreapp.log"),
    ("wa-service-coreapp.log.7.xz", COREAPP, "wa-service-coreapp.log"),  # not "coreapp.log"
    ("coreapp.log.1.zst", COREAPP, "coreapp.log"),
    ("web.log.1.gz", COREAPP, OTHER_FAMILY),  # no such live log in this container
    ("notes.txt", WEBAPP, OTHER_FAMILY),
    (".web.log.20260101T000000Z.part", WEBAPP, OTHER_FAMILY),  # a compression in progress
    ("web.log.old.gz", WEBAPP, OTHER_FAMILY),
    ("web.log.1.gz", (), OTHER_FAMILY),
])
def test_family_is_the_live_log_the_file_was_rotated_from(archived: str, live: tuple[str, ...],
                                                          family: str) -> None:
    assert archive_family(archived, live) == family


def test_the_longest_matching_live_log_wins() -> None:
    # "app.log-2" is a live log of its own, not a rotation of "app.log".
    assert archive_family("app.log-2.1.gz", ("app.log", "app.log-2")) == "app.log-2"
    assert archive_family("app.log-3.1.gz", ("app.log", "app.log-2")) == "app.log"


@pytest.mark.parametrize(("name", "compressed"), [
    ("web.log.1.gz", True), ("access.log-20260101.gz", True), ("a.log.1.bz2", True),
    ("a.log.1.xz", True), ("a.log.1.zst", True), ("a.log.1.lz4", True), ("a.log.1.Z", True),
    ("web.log.1", False), ("access.log-20260101", False), ("coreapp.log.3", False),
    ("gz", False), ("web.log.gzip", False), (".x.part", False),
])
def test_compressed_means_a_compression_suffix(name: str, compressed: bool) -> None:
    assert is_compressed(name) is compressed


def archive(*names: str, size: int = 10) -> list[LogEntry]:
    return [LogEntry("archive", name.encode(), size, 100.0) for name in names]


def live(*names: str) -> list[LogEntry]:
    return [LogEntry("live", name.encode(), 0, 100.0) for name in names]


def test_a_healthy_webapp_holds_three_families_of_30() -> None:
    names = [f"{log}.{i}.gz" for log in WEBAPP for i in range(1, 31)]

    summary = summarise(live(*WEBAPP) + archive(*names))

    assert summary.archive_files == 90  # the per-container total stays
    assert summary.archive_families == {"web.log": 30, "access.log": 30, "error.log": 30}
    assert summary.uncompressed_files == 0 and summary.uncompressed_bytes == 0


def test_every_live_log_has_a_family_and_other_appears_only_when_used() -> None:
    summary = summarise(live(*COREAPP) + archive("coreapp.log.1.gz", "stray.tar", "x.log.1"))

    assert summary.archive_families == {"coreapp.log": 1, "wa-service-coreapp.log": 0,
                                        OTHER_FAMILY: 2}
    assert summarise(live(*COREAPP)).archive_families == dict.fromkeys(COREAPP, 0)


def test_uncompressed_files_and_their_bytes() -> None:
    entries = live(*WEBAPP) + archive("web.log.2.gz", "web.log.3.gz", size=7)
    entries += archive("web.log.1", "access.log-20260101", size=1000)

    summary = summarise(entries)

    assert summary.uncompressed_files == 2 and summary.uncompressed_bytes == 2000
    assert summary.archive_families["web.log"] == 3
    assert summary.archive_bytes == 2014


# Any file name: bytes but "/" and NUL (non-UTF-8 ones included).
names = st.binary(min_size=1, max_size=30).map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_"))


@given(st.lists(names, max_size=5), st.lists(names, max_size=40))
def test_families_are_bounded_by_the_live_logs_and_add_up_to_the_total(
        live_names: list[bytes], archived: list[bytes]) -> None:
    entries = [LogEntry("live", name, 0, 1.0) for name in live_names]
    entries += [LogEntry("archive", name, 1, 1.0) for name in archived]

    summary = summarise(entries)

    assert set(summary.archive_families) <= set(summary.live) | {OTHER_FAMILY}
    assert sum(summary.archive_families.values()) == summary.archive_files == len(archived)
    assert summary.uncompressed_files <= summary.archive_files
