"""The upgrade verdict, its rendering, the readiness metric and the facts' small readers:
pure, without services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.actions.audit import AuditLog, StateFile, read_tail
from exporter.collectors.messages import MessagesCollector
from exporter.collectors.readiness import ReadinessCollector
from exporter.config import MessagesSettings, UpgradeSettings
from exporter.readiness import DatabaseFacts, GcFacts
from exporter.sources.database import ServerReading, TableReading
from exporter.sources.docker import image_version
from exporter.upgrade.command import (
    EXIT_CANNOT_CHECK,
    EXIT_NOT_READY,
    EXIT_READY,
    EXIT_USAGE,
    exit_code,
    json_requested,
)
from exporter.upgrade.gather import last_actions
from exporter.upgrade.report import (
    ClientFacts,
    ContainerFacts,
    MediaFacts,
    Report,
    format_age,
)

NOW = 1_800_000_000.0


def report(**fields: object) -> Report:
    base = Report(bound=2_000_000, gc_max_age=26 * 3600, media_min_avail_ratio=0.10,
                  checked_at=NOW)
    base.gc = GcFacts(last_success=NOW - 3600, last_run=NOW - 3600, running=False)
    base.containers = [ContainerFacts("wa-waweb-1", "webapp", True, "web:v2.53.2", "v2.53.2")]
    for key, value in fields.items():
        setattr(base, key, value)
    return base


def test_every_table_under_the_guides_2_million_is_ready() -> None:
    r = report(databases=[DatabaseFacts("waent_messages", 1_999_999)])
    assert r.ready and r.blockers() == [] and r.warnings() == []
    assert r.verdict().startswith("ready: every messages table is under 2,000,000 rows")


@pytest.mark.parametrize("rows", [2_000_000, 10_500_000])
def test_a_table_at_or_above_the_bound_is_large(rows: int) -> None:
    r = report(databases=[DatabaseFacts("a", 5), DatabaseFacts("b", rows)])
    assert not r.ready
    assert r.blockers() == [f"b: messages holds {rows:,} rows, a large table (the guide: above "
                            "2,000,000); run message GC first, e.g. upgrade-check --prepare"]
    assert r.verdict().startswith("not ready: b: messages holds")


def test_running_or_failing_gc_and_uncountable_tables_block() -> None:
    r = report(databases=[DatabaseFacts("a", None, error="timed out")],
               gc=GcFacts(last_success=NOW - 7200, last_run=NOW - 60, last_result="timeout",
                          running=True))
    assert r.blockers() == ["a: rows could not be counted: timed out",
                            "a message GC is running: wait for it to finish",
                            "the last message GC ended timeout: see the audit log and the WA "
                            "client's logs"]


def test_no_database_or_an_unreachable_server_is_not_ready() -> None:
    assert not report(databases=[]).ready
    r = report(databases_error="connection refused")
    assert r.blockers() == ["the WA databases could not be read: connection refused"]


@pytest.mark.parametrize(("fields", "code", "verdict"), [
    ({"databases": [DatabaseFacts("a", 5)]}, EXIT_READY, "ready: "),
    ({"databases": [DatabaseFacts("a", 2_000_000)]}, EXIT_NOT_READY, "not ready: "),
    ({"databases_error": "connection refused"}, EXIT_CANNOT_CHECK, "cannot check: "),
    ({"databases": []}, EXIT_CANNOT_CHECK, "cannot check: no WA database found"),
    # Not knowing one table wins over knowing another is large: the check is incomplete.
    ({"databases": [DatabaseFacts("a", None, error="timed out"), DatabaseFacts("b", 3_000_000)]},
     EXIT_CANNOT_CHECK, "cannot check: a: rows could not be counted: timed out; b: messages"),
])
def test_exit_code_and_verdict_tell_not_ready_from_cannot_check(
        fields: dict[str, object], code: int, verdict: str) -> None:
    r = report(**fields)
    assert exit_code(r, None) == code and r.verdict().startswith(verdict)
    assert r.as_dict()["complete"] is (code != EXIT_CANNOT_CHECK)


def test_a_failed_step_or_a_usage_error_overrides_the_verdict() -> None:
    ready = report(databases=[DatabaseFacts("a", 5)])
    assert exit_code(ready, EXIT_CANNOT_CHECK) == EXIT_CANNOT_CHECK  # e.g. the silence failed
    assert exit_code(report(databases_error="refused"), EXIT_USAGE) == EXIT_USAGE


@pytest.mark.parametrize(("argv", "wanted"), [
    (["upgrade-check", "--format", "json"], True),
    (["upgrade-check", "--format=json", "--max-runs", "0"], True),
    (["upgrade-check", "--format", "text"], False),
    (["check-config", "--format", "json"], False),
    (["--format", "upgrade-check"], False),
])
def test_json_is_recognised_before_parsing(argv: list[str], wanted: bool) -> None:
    assert json_requested(argv) is wanted


def test_warnings_do_not_block() -> None:
    r = report(databases=[DatabaseFacts("a", 1)],
               gc=GcFacts(last_success=NOW - 3 * 86400, last_run=NOW - 3 * 86400, running=None,
                          running_error="lock database unreachable"),
               containers=[ContainerFacts("core", "coreapp", False, "x", "")],
               media=MediaFacts("whatsappMedia", "/m", size_bytes=100, avail_bytes=5))
    assert r.ready
    assert r.warnings() == [
        "whether a GC is running is unknown: lock database unreachable",
        "the last successful message GC is 3.0d old (the guide: once every 24 hours)",
        "container core (coreapp) is not running",
        "media volume whatsappMedia has only 5% free"]


def test_pending_callbacks_and_messages_warn_before_an_upgrade() -> None:
    r = report(databases=[DatabaseFacts("a", 1)],
               client=ClientFacts(pending_callbacks=7, pending_messages=1_234, callback_queue=0,
                                  message_gc_off=True, gc_scheduled=False))
    assert r.ready  # a warning: the guide's verdict is about the tables
    assert r.warnings() == [
        "7 callbacks are pending in the WA database: an upgrade restarts the coreapps; let "
        "them drain first",
        "1,234 messages are pending (not yet sent) in the WA database: an upgrade restarts "
        "the coreapps; let them drain first",
        "the WA client's own message GC is off and no schedule here runs message GC: nothing "
        "deletes old messages"]
    row = next(line for line in r.to_text().splitlines() if line.startswith("wa-client"))
    assert row.split()[:3] == ["wa-client", "-", "PENDING"]
    assert row.endswith("pending callbacks 7, pending messages 1,234, callback queue 0; "
                        "client message GC off")
    assert json.loads(json.dumps(r.as_dict(), default=str))["client"]["pending_callbacks"] == 7


def test_nothing_pending_and_gc_running_somewhere_says_nothing() -> None:
    quiet = ClientFacts(pending_callbacks=0, pending_messages=0, callback_queue=0,
                        message_gc_off=True, gc_scheduled=True)
    assert report(databases=[DatabaseFacts("a", 1)], client=quiet).warnings() == []
    unread = ClientFacts(error="GET /v1/stats/db: HTTP 500")
    assert report(databases=[DatabaseFacts("a", 1)], client=unread).warnings() == [
        "the WA client's own figures could not all be read: GET /v1/stats/db: HTTP 500"]


def test_failing_means_the_last_run_did_not_succeed() -> None:
    assert not GcFacts().failing
    assert GcFacts(last_run=NOW).failing  # never succeeded
    assert GcFacts(last_success=NOW - 10, last_run=NOW).failing
    assert not GcFacts(last_success=NOW, last_run=NOW).failing


def test_text_is_a_table_then_one_verdict_line_and_json_the_same_facts() -> None:
    r = report(databases=[DatabaseFacts("waent_messages", 2_500_000, exact=True)],
               media=MediaFacts("whatsappMedia", "/m", size_bytes=4 << 30, avail_bytes=1 << 30),
               last_actions={"cleanup": {"ts": NOW - 60, "result": "success",
                                         "trigger": "schedule"}})
    lines = r.to_text().splitlines()
    assert lines[0].split() == ["WHAT", "NAME", "STATE", "DETAIL"]
    assert lines[1].split()[:3] == ["database", "waent_messages", "LARGE"]
    assert "rows 2,500,000 of 2,000,000" in lines[1]
    assert any(line.split()[:3] == ["container", "wa-waweb-1", "running"]
               and "version v2.53.2" in line for line in lines)
    assert any("1.0 GiB free of 4.0 GiB (25%)" in line for line in lines)
    assert any(line.split()[:3] == ["last-action", "cleanup", "success"] for line in lines)
    assert lines[-1] == r.verdict() and lines[-1].startswith("not ready: ")
    data = json.loads(json.dumps(r.as_dict(), default=str))
    assert data["ready"] is False and data["verdict"] == r.verdict()
    assert data["databases"] == [{"name": "waent_messages", "rows": 2_500_000, "exact": True,
                                  "error": "", "ready": False}]
    assert data["containers"][0]["version"] == "v2.53.2"
    assert data["media"]["avail_ratio"] == 0.25


@pytest.mark.parametrize(("image", "labels", "version"), [
    ("docker.whatsapp.biz/web:v2.53.2", {}, "v2.53.2"),
    ("docker.whatsapp.biz/coreapp:v2.51.5", {"org.opencontainers.image.version": "x"},
     "v2.51.5"),
    ("registry.local:5000/wa/web:latest", {"org.opencontainers.image.version": "v2.53.2"},
     "v2.53.2"),
    ("registry.local:5000/wa/web", {}, ""),
    ("sha256:0123abcd", {"org.opencontainers.image.version": "v2.49.1"}, "v2.49.1"),
    ("docker.whatsapp.biz/web@sha256:0123abcd", {}, ""),
])
def test_version_from_the_image_tag_else_the_oci_label(image: str, labels: dict[str, str],
                                                        version: str) -> None:
    assert image_version(image, labels) == version


def test_last_action_of_each_kind_from_the_audit_log(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=4096)
    audit.append({"event": "finished", "action": "cleanup", "result": "success"})
    for _ in range(40):  # enough to rotate the cleanup record into audit.jsonl.1
        audit.append({"event": "decision", "action": "gc", "outcome": "skipped_cooldown",
                      "padding": "x" * 100})
    audit.append({"event": "finished", "action": "gc", "result": "failed"})
    audit.append({"event": "finished", "action": "gc", "result": "dry_run"})
    assert (tmp_path / "audit.jsonl.1").exists()
    found = last_actions(tmp_path)
    assert found["gc"]["result"] == "failed"  # a dry run is not a result
    assert found["cleanup"]["result"] == "success"
    assert "media_gc" not in found
    with (tmp_path / "audit.jsonl").open("a") as fh:
        fh.write('{"torn": ')
    assert read_tail(tmp_path / "audit.jsonl")[-1]["result"] == "dry_run"  # torn line skipped


class OneReading:
    """A messages source with fixed tables."""

    prefix = "waent_"

    def __init__(self, tables: dict[str, int]) -> None:
        self.tables = tables

    def read(self) -> ServerReading:
        return ServerReading({n: TableReading(n, r, True, 0) for n, r in self.tables.items()})

    def close(self) -> None:
        pass


def readiness(tmp_path: Path, tables: dict[str, int], running: list[str] | None = None
              ) -> tuple[dict[str, float], StateFile]:
    messages = MessagesCollector(OneReading(tables), MessagesSettings())  # type: ignore[arg-type]
    messages.refresh()
    state = StateFile(tmp_path / "state.json")
    registry = CollectorRegistry()
    registry.register(ReadinessCollector(messages, state, UpgradeSettings(large_table_rows=100),
                                         lambda: running or []))
    values = {s.labels.get("database", s.name): s.value
              for family in registry.collect() for s in family.samples}
    return values, state


def test_readiness_metric_per_database(tmp_path: Path) -> None:
    values, state = readiness(tmp_path, {"waent_a": 99, "waent_b": 100})
    assert values == {"waent_a": 1.0, "waent_b": 0.0, "whatsapp_upgrade_large_table_rows": 100}
    values, _ = readiness(tmp_path, {"waent_a": 99}, running=["gc"])
    assert values["waent_a"] == 0.0
    state.update(lambda d: d["last_run"].update(gc=NOW))  # a GC that did not succeed
    values, _ = readiness(tmp_path, {"waent_a": 99})
    assert values["waent_a"] == 0.0
    state.update(lambda d: d["last_success"].update(gc=NOW))
    values, _ = readiness(tmp_path, {"waent_a": 99})
    assert values["waent_a"] == 1.0
    state.update(lambda d: d["running"].update(r1={"action": "gc"}))  # the CLI's run
    values, _ = readiness(tmp_path, {"waent_a": 99})
    assert values["waent_a"] == 0.0


def test_format_age() -> None:
    assert [format_age(s) for s in (5, 90, 7200, 3 * 86400)] == ["5s", "1.5m", "2.0h", "3.0d"]


def test_file_locks_tell_whether_a_run_lock_is_held_without_keeping_it(tmp_path: Path) -> None:
    from exporter.sources.locks import FileLocks

    replica, checker = FileLocks(tmp_path / "locks"), FileLocks(tmp_path / "locks")
    assert checker.held_anywhere("gc") is False
    held = replica.try_acquire("gc")
    assert held is not None and checker.held_anywhere("gc") is True
    held.release()
    assert checker.held_anywhere("gc") is False
    assert replica.try_acquire("gc") is not None  # the check took nothing
