"""The audit log's filesystem full: decisions are still answered, the metrics say records wait
in memory, and once there is space again every record is on disk, once, in order.

``actions.state_dir`` is a small tmpfs the test mounts (root only) and fills to the last byte,
after the log already holds a record, as on a real server whose disk fills up."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.faults.harness import (
    AUTH,
    ScrapeWatch,
    assert_every_run_finished,
    audit_records,
    config,
    decisions,
    fingerprint,
    fire,
    post_alert,
    wa_env,
    wait_finished,
)
from tests.support import ExporterProcess, run_exporter, unavailable, value, wait_for
from tests.wa_standin.server import StandIn

ALERTS_WHILE_FULL = 20
PAGE = 4096  # tmpfs allocates whole pages: a part-used last page still takes short writes


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "state"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k,mode=0700", "tmpfs",
                             str(mount)], capture_output=True, text=True)
    if result.returncode != 0:
        unavailable("a tmpfs mount (tests run as root)", result.stderr.strip())
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has not one byte left."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def audit_metrics(exporter: ExporterProcess) -> tuple[float | None, float | None]:
    samples = exporter.metrics()
    return (value(samples, "whatsapp_audit_write_errors_total"),
            value(samples, "whatsapp_audit_pending_records"))


def recent(exporter: ExporterProcess) -> list[dict[str, Any]]:
    """What ``GET /actions`` shows: the records the exporter holds in memory."""
    response = requests.get(exporter.url + "/actions?limit=200", headers=AUTH, timeout=5)
    records: list[dict[str, Any]] = response.json()["records"]
    return records


@pytest.fixture
def wa_api() -> Iterator[StandIn]:
    with StandIn() as standin:
        yield standin


def decide_through_a_full_disk(state_dir: Path, standin: StandIn, tmp_path: Path) -> int:
    """One run while there is space (its cooldown on disk, the log's last page part used, as
    on a real server), then alerts while the disk is full, then one after space is freed.
    Checks what the exporter says meanwhile; returns the last alert's sequence number."""
    cfg = config(tmp_path, state_dir=state_dir, allowed=("media_gc",))
    with run_exporter(env=wa_env(standin), config=cfg, tmp_path=tmp_path) as exporter:
        standin.set_callback(exporter.url + "/webhook/wa-callback", AUTH)  # media GC's end
        assert fire(exporter, "media_gc", 0)["outcome"] == "started"
        wait_finished(state_dir)
        assert (state_dir / "audit.jsonl").stat().st_size % PAGE, "the last page is part used"
        filler = fill(state_dir)

        with ScrapeWatch(exporter):
            # Longer than a page: whatever room that last page has, this record overflows it.
            status, huge = post_alert(exporter, "x" * PAGE, 1)
            assert (status, huge["outcome"]) == (422, "rejected")
            for seq in range(2, ALERTS_WHILE_FULL + 1):
                started = time.monotonic()
                assert fire(exporter, "media_gc", seq)["outcome"] == "skipped_cooldown"
                assert time.monotonic() - started < 1, "a decision waited on the full disk"
            errors, pending = audit_metrics(exporter)
            assert errors and errors > 0 and pending and pending > 0, (errors, pending)
            # /actions still shows every decision, from memory.
            assert len(decisions(recent(exporter))) == ALERTS_WHILE_FULL + 1

            filler.unlink()
            last = ALERTS_WHILE_FULL + 1
            assert fire(exporter, "media_gc", last)["outcome"] == "skipped_cooldown"
            assert audit_metrics(exporter) == (errors, 0)
    assert standin.stats()["media_gc_calls"] == 1
    return last


def test_a_full_audit_disk_keeps_answering_says_so_and_writes_every_record_later(
        small_fs: Path, wa_api: StandIn, tmp_path: Path) -> None:
    last = decide_through_a_full_disk(small_fs, wa_api, tmp_path)
    text = (small_fs / "audit.jsonl").read_text()
    for seq in range(last + 1):  # on disk, and in order
        assert f'"fingerprint":"{fingerprint(seq)}"' in text, seq
    positions = [text.rindex(f'"fingerprint":"{fingerprint(seq)}"') for seq in range(last + 1)]
    assert positions == sorted(positions)


def test_a_full_audit_disk_leaves_every_record_whole_and_once(
        small_fs: Path, wa_api: StandIn, tmp_path: Path) -> None:
    last = decide_through_a_full_disk(small_fs, wa_api, tmp_path)
    records = audit_records(small_fs)  # every line a whole record
    assert [d["fingerprint"] for d in decisions(records)] == [fingerprint(n)
                                                              for n in range(last + 1)]
    assert_every_run_finished(records)
    assert [r["ts"] for r in records] == sorted(r["ts"] for r in records)


def test_a_full_state_disk_keeps_the_cooldown(small_fs: Path, wa_api: StandIn,
                                              tmp_path: Path) -> None:
    cfg = config(tmp_path, state_dir=small_fs, allowed=("media_gc",))
    with run_exporter(env=wa_env(wa_api), config=cfg, tmp_path=tmp_path) as exporter:
        wa_api.set_callback(exporter.url + "/webhook/wa-callback", AUTH)  # media GC's end
        fill(small_fs)
        with ScrapeWatch(exporter):
            assert fire(exporter, "media_gc", 1)["outcome"] == "started"
            wait_for(lambda: any(r["event"] == "finished" for r in recent(exporter)),
                     what="the media GC run to finish (in memory)")
            again = fire(exporter, "media_gc", 2)
        assert again["outcome"] == "skipped_cooldown", again
        assert wa_api.stats()["media_gc_calls"] == 1
