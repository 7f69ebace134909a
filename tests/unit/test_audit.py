"""The audit log: durable lines, rotation by size, nothing lost while the disk is full."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from exporter.actions.audit import AuditLog, StateFile


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_each_record_is_one_json_line_on_disk_when_append_returns(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.append({"event": "decision", "action": "gc", "outcome": "started"})
    records = lines(tmp_path / "audit.jsonl")
    assert records[0]["event"] == "decision" and "ts" in records[0]
    assert log.recent(10) == records


def test_rotates_by_size_and_keeps_the_newest_records(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=4096, backups=3)
    for i in range(400):
        log.append({"event": "decision", "n": i, "pad": "x" * 40})
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2", "audit.jsonl.3"]
    newest = lines(tmp_path / "audit.jsonl")
    assert newest[-1]["n"] == 399
    numbers = [r["n"] for name in ("audit.jsonl.3", "audit.jsonl.2", "audit.jsonl.1",
                                   "audit.jsonl") for r in lines(tmp_path / name)]
    assert numbers == sorted(numbers) and numbers[-1] == 399  # in order, no line torn


def test_a_rotation_by_another_process_sends_later_records_to_the_live_file(
        tmp_path: Path) -> None:
    """The service keeps its file open; ``wa-exporter run`` (here a second log on the same
    path) may rotate it. The service's next record must land in the new file, not in .1."""
    path = tmp_path / "audit.jsonl"
    service = AuditLog(path, max_bytes=300, backups=2)
    service.append({"event": "decision", "n": 1, "pad": "x" * 300})  # the file is now full
    AuditLog(path, max_bytes=300, backups=2).append({"event": "decision", "n": 2})  # rotates
    service.append({"event": "decision", "n": 3})
    assert [r["n"] for r in lines(tmp_path / "audit.jsonl.1")] == [1]
    assert [r["n"] for r in lines(path)] == [2, 3]


def test_a_log_removed_under_the_service_is_created_again(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    service = AuditLog(path)
    service.append({"event": "decision", "n": 1})
    path.unlink()  # an operator's clean-up, or a rotation tool that moves the file away
    service.append({"event": "decision", "n": 2})
    assert [r["n"] for r in lines(path)] == [2]


def test_recent_survives_a_restart_and_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append({"event": "decision", "n": 1})
    with path.open("a") as fh:
        fh.write('{"event": "decis')  # a crash mid-write
    assert [r["n"] for r in AuditLog(path).recent(10)] == [1]


@pytest.fixture
def small_fs(tmp_path: Path):
    mount = tmp_path / "full"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_keeps_records_in_memory_and_writes_them_later(small_fs: Path) -> None:
    log = AuditLog(small_fs / "audit.jsonl", max_bytes=10**9)
    filler = small_fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the filesystem to the last byte
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    log.append({"event": "decision", "n": 1})
    log.append({"event": "decision", "n": 2})
    assert log.pending == 2 and log.write_errors >= 2
    assert [r["n"] for r in log.recent(5)] == [1, 2]  # /actions still shows them
    filler.unlink()
    log.append({"event": "decision", "n": 3})
    assert log.pending == 0
    assert [r["n"] for r in lines(small_fs / "audit.jsonl")] == [1, 2, 3]


def test_state_file_changes_from_two_processes_do_not_overwrite_each_other(
        tmp_path: Path) -> None:
    first, second = StateFile(tmp_path / "state.json"), StateFile(tmp_path / "state.json")
    first.update(lambda d: d["last_start"].__setitem__("gc", 1.0))
    second.update(lambda d: d["last_start"].__setitem__("cleanup:a", 2.0))  # stale copy
    assert StateFile(tmp_path / "state.json").read()["last_start"] == {"gc": 1.0,
                                                                      "cleanup:a": 2.0}


def test_clip_marks_what_it_cut() -> None:
    from exporter.actions.audit import clip
    assert clip("short") == "short"
    assert clip("x" * 1000) == "x" * 200 + "…[cut 800 characters]"


def test_records_are_bounded_so_large_labels_cannot_rotate_earlier_records_away(
        tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=10 * 1024 * 1024)
    log.append({"event": "decision", "action": "gc", "outcome": "started", "run_id": "first"})
    for _ in range(12):
        log.append({"event": "decision", "action": "none", "outcome": "rejected",
                    "alertname": "A" * 1_000_000, "reason": "unknown action " + "b" * 1_000_000,
                    "labels": {"k" * 1000: "v"}, "targets": ["t"] * 5000})
    assert not (tmp_path / "audit.jsonl.1").exists()
    records = lines(tmp_path / "audit.jsonl")
    assert records[0]["run_id"] == "first" and len(records) == 13
    assert all(len(json.dumps(r)) < 16 * 1024 for r in records)
    assert records[1]["alertname"].startswith("A" * 200 + "…[cut")
    assert log.recent(1)[0]["reason"].endswith("…[cut 999815 characters]")


def test_the_log_is_kept_open_between_records_and_closed_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    before = len(os.listdir("/proc/self/fd"))
    for n in range(50):
        log.append({"event": "decision", "n": n})
    assert len(os.listdir("/proc/self/fd")) == before + 1  # one descriptor, not one a record
    log.close()
    assert len(os.listdir("/proc/self/fd")) == before
    log.append({"event": "decision", "n": 50})  # opened again if written after close
    log.close()
    assert [r["n"] for r in lines(path)] == list(range(51))
