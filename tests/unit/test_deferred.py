"""Alerts outside the off-peak window are deferred, not dropped: recorded, kept across a
restart, run once when the window opens (one run for every request of an action), dropped
when their alert resolves or no notification renewed them for a day; an emergency label
bypasses the window. The clock is injected: the window opens when the test says so."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import Action, ActionResult, Request, RunContext
from exporter.actions.deferred import WindowWatch
from exporter.actions.runner import Runner
from exporter.actions.webhook import Webhooks
from exporter.collectors.action_state import ActionStateMetrics
from exporter.collectors.actions import ActionMetrics
from exporter.config import ActionsSettings, WebhookSettings
from exporter.sources.locks import FileLocks
from tests.unit.fakes import Clock

NOON = datetime(2026, 9, 21, 12, 0, tzinfo=UTC).timestamp()  # a Monday
OPENS = datetime(2026, 9, 22, 1, 0, tzinfo=UTC).timestamp()  # the default window opens


class Counting(Action):
    """A message GC that succeeds at once and remembers each run."""

    name = "gc"

    def __init__(self) -> None:
        self.runs: list[RunContext] = []

    def run(self, ctx: RunContext) -> ActionResult:
        self.runs.append(ctx)
        return ActionResult("success")


class World:
    """One exporter's runner, webhooks and window watch on ``state_dir`` (a restart is a new
    World on the same directory), with the default settings but for ``settings``."""

    def __init__(self, state_dir: Path, clock: Clock, **settings: object) -> None:
        self.registry = CollectorRegistry()
        self.action = Counting()
        chosen = ActionsSettings.model_validate({"allowed": ["gc"], "state_dir": str(state_dir),
                                                 "schedules": [], **settings})
        metrics = ActionMetrics(self.registry, ["gc"])
        self.runner = Runner({"gc": self.action}, chosen, AuditLog(state_dir / "audit.jsonl"),
                             StateFile(state_dir / "state.json"),
                             FileLocks(state_dir / "locks"), metrics, clock=clock)
        self.registry.register(ActionStateMetrics(["gc"], self.runner, self.runner.window,
                                                  clock))
        self.hooks = Webhooks(WebhookSettings(), self.runner)
        self.watch = WindowWatch(self.runner.deferred, self.runner.submit, clock)
        self.state_dir = state_dir

    def alert(self, status: str, alertname: str, fingerprint: str,
              **labels: str) -> dict[str, Any]:
        body = json.dumps({"version": "4", "status": status, "alerts": [{
            "status": status, "fingerprint": fingerprint,
            "labels": {"alertname": alertname, "action": "gc", **labels}}]}).encode()
        code, answer = self.hooks.alertmanager(body)
        assert code == 200, answer
        decision: dict[str, Any] = answer["decisions"][0]
        return decision

    def release(self) -> list[Request]:
        released = self.watch.release_due()
        assert self.runner.wait_idle(5)
        return released

    def sample(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def audit(self, event: str) -> list[dict[str, Any]]:
        lines = (self.state_dir / "audit.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == event]


def test_an_alert_outside_the_window_is_deferred_and_runs_once_when_it_opens(
        tmp_path: Path) -> None:
    clock = Clock(NOON)
    world = World(tmp_path, clock)
    decision = world.alert("firing", "WhatsAppMessagesTableLarge", "a1")
    assert decision["outcome"] == "deferred"
    assert decision["reason"] == ("outside the off-peak window (fixed 01:00-05:00 UTC): "
                                  "deferred, runs when it opens at 2026-09-22 01:00 UTC")
    assert world.sample("whatsapp_action_requests_total", action="gc", outcome="deferred") == 1
    assert world.sample("whatsapp_action_deferred_requests", action="gc") == 1
    assert world.sample("whatsapp_action_window_open") == 0
    assert world.sample("whatsapp_action_window_info", mode="fixed", start="01:00",
                        end="05:00", timezone="UTC") == 1
    waiting = world.hooks.waiting()  # GET /actions
    assert [(e["action"], e["alertname"]) for e in waiting["deferred"]] == [
        ("gc", "WhatsAppMessagesTableLarge")]
    assert waiting["window"]["next_open"] == "2026-09-22 01:00 UTC"
    assert [r["outcome"] for r in world.audit("decision")] == ["deferred"]

    clock.now = OPENS - 1
    assert world.release() == [] and not world.action.runs
    clock.now = OPENS
    assert world.sample("whatsapp_action_window_open") == 1
    world.release()
    assert len(world.action.runs) == 1 and world.action.runs[0].trigger == "alert"
    started = world.audit("decision")[-1]
    assert started["outcome"] == "started"
    assert started["alertname"] == "WhatsAppMessagesTableLarge"
    assert started["deferred_requests"] == "1"
    assert world.sample("whatsapp_action_deferred_requests", action="gc") == 0
    assert world.release() == []  # nothing is left to run a second time


def test_every_alert_deferred_for_an_action_is_served_by_one_run_after_a_restart(
        tmp_path: Path) -> None:
    clock = Clock(NOON)
    first = World(tmp_path, clock)
    assert first.alert("firing", "WhatsAppMessagesTableLarge", "a1")["outcome"] == "deferred"
    clock.now += 4 * 3600  # Alertmanager's repeat, and another alert
    assert first.alert("firing", "WhatsAppMessagesTableLarge", "a1")["outcome"] == "deferred"
    assert first.alert("firing", "WhatsAppMessageGCOverdue", "b2")["outcome"] == "deferred"
    assert first.sample("whatsapp_action_deferred_requests", action="gc") == 2

    restarted = World(tmp_path, clock)  # the state file keeps them
    assert restarted.sample("whatsapp_action_deferred_requests", action="gc") == 2
    clock.now = OPENS + 30
    released = restarted.release()
    assert [(r.action, r.origin["deferred_requests"]) for r in released] == [("gc", "2")]
    assert released[0].origin["alertname"] == ("WhatsAppMessageGCOverdue, "
                                               "WhatsAppMessagesTableLarge")
    assert len(restarted.action.runs) == 1 and not first.action.runs


def test_a_resolved_notification_cancels_the_deferred_request(tmp_path: Path) -> None:
    clock = Clock(NOON)
    world = World(tmp_path, clock)
    world.alert("firing", "WhatsAppMessagesTableLarge", "a1")
    world.alert("firing", "WhatsAppMessageGCOverdue", "b2")
    clock.now += 3600
    resolved = world.alert("resolved", "WhatsAppMessagesTableLarge", "a1")
    assert resolved["outcome"] == "skipped_resolved"
    assert resolved["reason"].endswith("its deferred request is cancelled")
    assert world.audit("deferred_dropped")[0]["reason"] == "its alert resolved"
    world.alert("resolved", "WhatsAppMessageGCOverdue", "b2")
    clock.now = OPENS
    assert world.release() == [] and not world.action.runs


def test_a_request_no_notification_renewed_for_a_day_is_dropped(tmp_path: Path) -> None:
    clock = Clock(NOON - 14 * 3600)  # Sunday 22:00, after that night's window
    world = World(tmp_path, clock, window={"start": "01:00", "end": "05:00",
                                           "days": ["tue"]})
    world.alert("firing", "WhatsAppMessagesTableLarge", "a1")
    clock.now += 86400  # Monday 22:00, the window still closed
    assert world.release() == [] and world.sample("whatsapp_action_deferred_requests",
                                                  action="gc") == 1
    clock.now += 60
    assert world.release() == []
    assert world.sample("whatsapp_action_deferred_requests", action="gc") == 0
    assert world.audit("deferred_dropped")[0]["reason"] == (
        "no notification renewed it for 86400s")
    clock.now = OPENS  # Tuesday 01:00: nothing is left to run
    assert world.release() == [] and not world.action.runs


def test_an_emergency_label_runs_at_once_and_serves_what_was_deferred(tmp_path: Path) -> None:
    clock = Clock(NOON)
    world = World(tmp_path, clock)
    world.alert("firing", "WhatsAppMessagesTableLarge", "a1")
    decision = world.alert("firing", "WhatsAppMessagesTableVeryLarge", "c3", window="ignore")
    assert decision["outcome"] == "started"
    assert world.runner.wait_idle(5) and len(world.action.runs) == 1
    assert world.audit("decision")[-1]["ignore_window"] is True
    assert world.audit("deferred_served")[0]["alertnames"] == "WhatsAppMessagesTableLarge"
    clock.now = OPENS
    assert world.release() == [] and len(world.action.runs) == 1


def test_a_window_label_other_than_ignore_is_rejected(tmp_path: Path) -> None:
    world = World(tmp_path, Clock(NOON))
    code, answer = world.hooks.alertmanager(json.dumps({"version": "4", "status": "firing",
        "alerts": [{"status": "firing", "labels": {"alertname": "X", "action": "gc",
                                                    "window": "now"}}]}).encode())
    assert code == 422
    assert answer["decisions"][0]["reason"] == ("label window='now': the only value is "
                                                "'ignore' (run outside the off-peak window)")


def test_schedules_outside_the_window_are_skipped_and_people_are_never_held(
        tmp_path: Path) -> None:
    world = World(tmp_path, Clock(NOON))
    assert world.runner.submit(Request("gc", "schedule")).outcome == "skipped_window"
    assert world.runner.submit(Request("gc", "manual")).outcome == "started"
    assert world.runner.wait_idle(5) and world.release() == []


def test_window_always_starts_alerts_at_any_hour(tmp_path: Path) -> None:
    world = World(tmp_path, Clock(NOON), window="always")
    assert world.alert("firing", "WhatsAppMessagesTableLarge", "a1")["outcome"] == "started"
    assert world.sample("whatsapp_action_window_info", mode="always", start="00:00",
                        end="24:00", timezone="UTC") == 1


def test_each_alert_of_one_notification_is_kept_so_one_resolving_leaves_the_others(
        tmp_path: Path) -> None:
    clock = Clock(NOON)
    world = World(tmp_path, clock)
    alerts = [{"status": "firing", "fingerprint": f"f{n}",
               "labels": {"alertname": "WhatsAppMessagesTableLarge", "action": "gc",
                          "database": f"wa_{n}"}} for n in range(3)]
    code, answer = world.hooks.alertmanager(json.dumps(
        {"version": "4", "status": "firing", "alerts": alerts}).encode())
    assert code == 200 and [d["outcome"] for d in answer["decisions"]] == ["deferred"]
    assert world.sample("whatsapp_action_deferred_requests", action="gc") == 3
    world.alert("resolved", "WhatsAppMessagesTableLarge", "f0")
    assert world.sample("whatsapp_action_deferred_requests", action="gc") == 2
    clock.now = OPENS
    assert [r.origin["deferred_requests"] for r in world.release()] == ["2"]
    assert len(world.action.runs) == 1
