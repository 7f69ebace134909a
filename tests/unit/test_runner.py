"""The runner: allow-list, one run at a time, cooldown across restarts, window, dry run,
and the audit trail — with a real action class whose run the test controls."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import Action, ActionResult, Request, RunContext
from exporter.actions.runner import Runner
from exporter.actions.schedule import next_fire
from exporter.collectors.actions import ActionMetrics
from exporter.config import ActionsSettings, ScheduleEntry
from exporter.sources.locks import FileLocks


class Gate(Action):
    """An action that runs until the test opens the gate."""

    name = "gc"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.runs: list[RunContext] = []

    def run(self, ctx: RunContext) -> ActionResult:
        self.runs.append(ctx)
        self.entered.set()
        if ctx.dry_run:
            return ActionResult("dry_run", {"plan": "would call gc"})
        assert self.gate.wait(10)
        return ActionResult("success", {"messages_deleted": 3})


class Clock:
    def __init__(self, now: float = 1_790_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_runner(state_dir: Path, action: Action, clock: Clock | None = None,
                **settings: object) -> tuple[Runner, CollectorRegistry]:
    """A runner of ``action`` as gc; the window is always open unless ``window`` is given
    (the clock stands at 14:13 UTC, outside the default off-peak window)."""
    registry = CollectorRegistry()
    chosen = ActionsSettings.model_validate({"allowed": ["gc"], "state_dir": str(state_dir),
                                             "window": "always", **settings})
    metrics = ActionMetrics(registry, ["gc"])
    runner = Runner({"gc": action}, chosen, AuditLog(state_dir / "audit.jsonl"),
                    StateFile(state_dir / "state.json"), FileLocks(state_dir / "locks"),
                    metrics, clock=clock or Clock())
    return runner, registry


def audit(state_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (state_dir / "audit.jsonl").read_text().splitlines()]


def requests_total(registry: CollectorRegistry, outcome: str) -> float:
    return registry.get_sample_value("whatsapp_action_requests_total",
                                     {"action": "gc", "outcome": outcome}) or 0.0


def test_one_run_at_a_time_then_cooldown_then_free(tmp_path: Path) -> None:
    clock, action = Clock(), Gate()
    runner, registry = make_runner(tmp_path, action, clock, cooldown={"gc": "1h"})
    first = runner.submit(Request("gc", "alert"))
    assert first.outcome == "started" and action.entered.wait(5)
    assert runner.submit(Request("gc", "alert")).outcome == "skipped_running"
    action.gate.set()
    assert runner.wait_idle(5)
    assert runner.submit(Request("gc", "schedule")).outcome == "skipped_cooldown"
    clock.now += 3601
    assert runner.submit(Request("gc", "manual")).outcome == "started"
    assert runner.wait_idle(5)
    assert requests_total(registry, "started") == 2
    assert requests_total(registry, "skipped_running") == 1
    assert requests_total(registry, "skipped_cooldown") == 1
    assert registry.get_sample_value("whatsapp_gc_runs_total", {
        "kind": "message", "trigger": "alert", "result": "success"}) == 1
    assert registry.get_sample_value("whatsapp_gc_messages_deleted_total",
                                     {"database": "", "node": ""}) == 6
    # Pre-created at 0 before they ever happen:
    assert requests_total(registry, "skipped_window") == 0
    events = [(r["event"], r.get("outcome") or r.get("result")) for r in audit(tmp_path)]
    assert events == [("decision", "started"), ("decision", "skipped_running"),
                      ("finished", "success"), ("decision", "skipped_cooldown"),
                      ("decision", "started"), ("finished", "success")]


class Reporter(Action):
    """An action that reports two progress records, as gc does per round."""

    name = "gc"

    def run(self, ctx: RunContext) -> ActionResult:
        ctx.progress("round_started", round=1)
        ctx.progress("round", round=1, result="success")
        return ActionResult("success")


def test_run_now_hands_progress_to_the_caller_and_to_the_audit_log(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, Reporter())
    heard: list[tuple[str, dict]] = []
    decision, result = runner.run_now(Request("gc", "manual"),
                                      on_progress=lambda event, fields: heard.append(
                                          (event, fields)))
    assert result is not None and result.result == "success"
    assert heard == [("round_started", {"round": 1}),
                     ("round", {"round": 1, "result": "success"})]
    audited = [r for r in audit(tmp_path) if r["event"] in ("round_started", "round")]
    assert [(r["event"], r["run_id"]) for r in audited] == [
        ("round_started", decision.run_id), ("round", decision.run_id)]


def test_cooldown_survives_a_restart(tmp_path: Path) -> None:
    clock, action = Clock(), Gate()
    action.gate.set()
    runner, _ = make_runner(tmp_path, action, clock)
    assert runner.submit(Request("gc", "alert")).outcome == "started"
    assert runner.wait_idle(5)
    again, _ = make_runner(tmp_path, Gate(), clock)  # a new process on the same state
    decision = again.submit(Request("gc", "alert"))
    assert decision.outcome == "skipped_cooldown" and "cooldown 3600s" in decision.reason


def test_only_an_explicit_request_skips_the_cooldown_and_it_is_recorded(tmp_path: Path) -> None:
    action = Gate()
    action.gate.set()
    runner, _ = make_runner(tmp_path, action)
    assert runner.run_now(Request("gc", "manual"))[0].outcome == "started"
    assert runner.run_now(Request("gc", "manual"))[0].outcome == "skipped_cooldown"
    decision, result = runner.run_now(Request("gc", "manual", ignore_cooldown=True))
    assert decision.outcome == "started" and result is not None
    assert runner.run_now(Request("gc", "alert"))[0].outcome == "skipped_cooldown"
    decisions = [r for r in audit(tmp_path) if r["event"] == "decision"]
    assert [r.get("ignore_cooldown") for r in decisions] == [None, None, True, None]


def test_not_allowed_and_unknown_are_rejected_and_start_nothing(tmp_path: Path) -> None:
    action = Gate()
    runner, registry = make_runner(tmp_path, action)
    assert runner.submit(Request("cleanup", "alert")).outcome == "rejected"
    assert runner.submit(Request("gc", "alert", target="db1")).outcome == "rejected"
    assert not action.runs and requests_total(registry, "rejected") == 1


def test_maintenance_window_applies_to_alerts_not_people(tmp_path: Path) -> None:
    # 1_790_000_000 is 2026-09-21 14:13 UTC, a Monday.
    action = Gate()
    action.gate.set()
    runner, _ = make_runner(tmp_path, action, Clock(),
                            window={"start": "01:00", "end": "05:00"})
    assert runner.submit(Request("gc", "alert")).outcome == "deferred"  # tests/unit/test_deferred
    assert runner.submit(Request("gc", "schedule")).outcome == "skipped_window"
    assert runner.submit(Request("gc", "manual")).outcome == "started"
    assert runner.wait_idle(5)


def test_dry_run_changes_nothing_and_sets_no_cooldown(tmp_path: Path) -> None:
    action = Gate()
    runner, registry = make_runner(tmp_path, action)
    decision = runner.submit(Request("gc", "alert", dry_run=True))
    assert decision.outcome == "dry_run"
    assert runner.wait_idle(5)
    assert action.runs[0].dry_run
    assert runner.submit(Request("gc", "alert", dry_run=True)).outcome == "dry_run"
    assert runner.wait_idle(5)
    assert registry.get_sample_value("whatsapp_gc_runs_total", {
        "kind": "message", "trigger": "alert", "result": "dry_run"}) == 2
    assert StateFile(tmp_path / "state.json").read()["last_start"] == {}


def test_an_action_that_raises_still_ends_in_a_record(tmp_path: Path) -> None:
    class Broken(Gate):
        def run(self, ctx: RunContext) -> ActionResult:
            raise RuntimeError("bug")

    runner, _ = make_runner(tmp_path, Broken())
    runner.submit(Request("gc", "alert"))
    assert runner.wait_idle(5)
    finished = [r for r in audit(tmp_path) if r["event"] == "finished"]
    assert finished[0]["result"] == "error" and "RuntimeError: bug" in finished[0]["error"]
    assert runner.running() == []


@pytest.mark.parametrize(("timezone", "after", "expected_hour_utc"), [
    ("UTC", 1_790_000_000.0, 3), ("Europe/Berlin", 1_790_000_000.0, 1),
    ("America/New_York", 1_790_000_000.0, 7)])
def test_schedule_fires_at_local_time(timezone: str, after: float,
                                      expected_hour_utc: int) -> None:
    from datetime import UTC, datetime

    when = next_fire(ScheduleEntry(action="cleanup", cron="0 3 * * *"), after, timezone)
    fired = datetime.fromtimestamp(when, UTC)
    assert fired.hour == expected_hour_utc and fired.minute == 0
    assert 0 < when - after <= 86400


def test_scheduler_submits_through_the_runner_when_due(tmp_path: Path) -> None:
    import time as real_time

    from exporter.actions.schedule import Scheduler

    # A clock that runs at real speed but starts 0.2 s before a minute boundary.
    start, origin = 1_790_000_039.8, real_time.monotonic()

    def clock() -> float:
        return start + (real_time.monotonic() - origin)

    action = Gate()
    action.gate.set()
    runner, registry = make_runner(tmp_path, action, clock)
    scheduler = Scheduler([ScheduleEntry(action="gc", cron="* * * * *"),
                           ScheduleEntry(action="cleanup", cron="* * * * *")], "UTC", runner,
                          clock=clock)
    assert [e.action for e in scheduler.entries] == ["gc"]  # cleanup is not configured here
    scheduler.start()
    try:
        assert action.entered.wait(5)
    finally:
        scheduler.stop()
    assert runner.wait_idle(5)
    decision = next(r for r in audit(tmp_path) if r["event"] == "decision")
    assert decision["trigger"] == "schedule" and decision["cron"] == "* * * * *"
    assert registry.get_sample_value("whatsapp_gc_runs_total", {
        "kind": "message", "trigger": "schedule", "result": "success"}) == 1


class CountingState(StateFile):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads = 0

    def read(self) -> dict:
        self.reads += 1
        return super().read()


def test_requests_for_a_run_in_flight_here_do_not_read_the_state_file(tmp_path: Path) -> None:
    """An alert storm: every notification after the first finds the run in flight in this
    process, which no state file can change, so none pays for a stat of it."""
    action = Gate()
    state = CountingState(tmp_path / "state.json")
    runner = Runner({"gc": action}, ActionsSettings.model_validate(
        {"allowed": ["gc"], "state_dir": str(tmp_path), "window": "always"}),
        AuditLog(tmp_path / "audit.jsonl"),
        state, FileLocks(tmp_path / "locks"), ActionMetrics(CollectorRegistry(), ["gc"]),
        clock=Clock())
    assert runner.submit(Request("gc", "alert")).outcome == "started"
    assert action.entered.wait(5)
    reads = state.reads
    for _ in range(20):
        assert runner.submit(Request("gc", "alert")).outcome == "skipped_running"
    assert state.reads == reads
    action.gate.set()
    assert runner.wait_idle(5)
    assert runner.submit(Request("gc", "alert")).outcome == "skipped_cooldown"
    assert state.reads > reads  # not running here: the cooldown is read from the file


class Deleting(Action):
    """A message GC that reports the rows left per database, or fails."""

    name = "gc"

    def __init__(self) -> None:
        self.result = ActionResult("success", {"messages_deleted": 5, "databases_after": {
            "wa_main": 1_200, "wa_second": 40}})

    def run(self, ctx: RunContext) -> ActionResult:
        return self.result


def test_rows_after_the_last_successful_gc_survive_a_restart(tmp_path: Path) -> None:
    """whatsapp_gc_rows_after_last_success feeds WhatsAppGCFallingBehind: a restart must not
    blank it until the next successful GC."""
    clock, action = Clock(), Deleting()
    runner, registry = make_runner(tmp_path, action, clock, cooldown={"gc": "1s"})
    assert runner.run_now(Request("gc", "manual"))[0].outcome == "started"
    action.result = ActionResult("failed", {"databases_after": {"wa_main": 9_999}})
    clock.now += 10
    assert runner.run_now(Request("gc", "manual"))[0].outcome == "started"  # not kept

    restarted = CollectorRegistry()  # a new process on the same state directory
    ActionMetrics(restarted, ["gc"]).restore(StateFile(tmp_path / "state.json").read())
    for database, rows in (("wa_main", 1_200), ("wa_second", 40)):
        assert restarted.get_sample_value("whatsapp_gc_rows_after_last_success",
                                          {"database": database}) == rows
        assert registry.get_sample_value("whatsapp_gc_rows_after_last_success",
                                         {"database": database}) == rows


BROKEN_STATES = {
    "wrong-sections": '{"cooldowns": "yesterday", "last_run": 7}',
    "wrong-entries": json.dumps({
        "last_start": {"gc": "yesterday", "cleanup:a": 5.0}, "last_success": {"gc": [1]},
        "roles": {"a": 3, "b": "coreapp"}, "gc_rows_after": {"db": "many"},
        "running": {"r1": 7, "r2": {"action": "gc", "pid": "x"}, "r3": {"started": 1.0}}}),
    "not-json": '{"last_start": {"gc": 1',
    "a-list": "[1, 2, 3]",
}


@pytest.mark.parametrize("text", BROKEN_STATES.values(), ids=BROKEN_STATES.keys())
def test_a_broken_state_file_is_read_without_what_is_wrong_and_kept_aside(
        tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture) -> None:
    """Every section a map of entries of the right type; what was dropped is logged, and
    the file as found is kept as state.json.broken; a runner starts, recovers, decides and
    runs on it, and its next change writes a sound file."""
    (tmp_path / "state.json").write_text(text)
    action = Gate()
    runner, _ = make_runner(tmp_path, action)
    data = runner.state.read()
    for section in ("last_start", "last_run", "last_success", "roles", "gc_rows_after",
                    "running"):
        assert isinstance(data[section], dict)
    assert (tmp_path / "state.json.broken").read_text() == text
    assert "state file entries dropped" in caplog.text
    assert runner.recover_interrupted() == []
    ActionMetrics(CollectorRegistry(), ["gc", "cleanup"]).restore(data)
    assert runner.submit(Request("gc", "alert")).outcome == "started"
    action.gate.set()
    assert runner.wait_idle(5)
    assert set(json.loads((tmp_path / "state.json").read_text())["last_start"]) == {
        "gc", *(["cleanup:a"] if "cleanup:a" in text else [])}


def test_a_sound_state_file_is_not_kept_aside(tmp_path: Path) -> None:
    StateFile(tmp_path / "state.json").update(lambda d: d["last_start"].update(gc=1.0))
    assert StateFile(tmp_path / "state.json").read()["last_start"] == {"gc": 1.0}
    assert not (tmp_path / "state.json.broken").exists()
