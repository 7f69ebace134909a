"""Off-peak on real parts: the real exporter on MariaDB beside the WA API stand-in, its
off-peak window opening at 02:00 in a time zone half an hour off UTC. A gc alert posted
before the window opens is deferred: no GC call reaches the WA API until the window opens,
and then GC runs within 90 seconds without a second notification.

The exporter's wall clock is injected: it runs under libfaketime (Debian package
``faketime``), started :data:`LEAD` before the opening, and ticks on from there in real
time. Its monotonic clock, which it uses for timeouts, is left alone."""

from __future__ import annotations

import glob
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests

from tests.support import (
    ONLY_MESSAGES,
    DatabaseServer,
    ExporterProcess,
    new_prefix,
    run_exporter,
    unavailable,
    wait_for,
)
from tests.wa_standin.schema import insert_messages
from tests.wa_standin.server import StandIn

pytestmark = [pytest.mark.mysql]

TOKEN = "deferred-gc-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ZONE = ZoneInfo("Asia/Kolkata")  # UTC+05:30: a window read as UTC would open at :30
OPENING = datetime(2027, 3, 1, 2, 0, tzinfo=ZONE)  # a day the real clock is not at
LEAD = timedelta(seconds=12)  # to start the exporter and post the alert before it opens


def faketime(start: datetime) -> dict[str, str]:
    """The environment that starts a process's wall clock at ``start``."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    if not found:
        unavailable("libfaketime", "not installed (Debian package faketime)")
    return {"LD_PRELOAD": found[0], "TZ": "UTC", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME": "@" + start.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")}


def gc_alert() -> dict[str, Any]:
    return {"version": "4", "status": "firing", "receiver": "wa-exporter", "alerts": [{
        "status": "firing", "fingerprint": "4f9a1c2b3d4e5f60",
        "labels": {"alertname": "WhatsAppMessagesTableLarge", "action": "gc",
                   "severity": "warning"}}]}


def audit(state: Path, event: str) -> list[dict[str, Any]]:
    lines = (state / "audit.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_an_alert_before_the_window_runs_gc_once_it_opens_without_a_second_notification(
        mysql: DatabaseServer, tmp_path: Path) -> None:
    prefix = new_prefix()
    database = prefix + "main"
    engine = mysql.create_database(database, messages=0)
    insert_messages(engine, 400, read_fraction=0.5, seed=3)  # GC may delete the read half
    state = tmp_path / "state"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    closing = OPENING + timedelta(minutes=10)
    config = f"""
collectors:
  messages: {{interval: 1s}}
{ONLY_MESSAGES}actions:
  allowed: [gc]
  state_dir: {state}
  timezone: {ZONE.key}
  window: {{start: "{OPENING:%H:%M}", end: "{closing:%H:%M}"}}
  schedules: []
  gc: {{callback_timeout: 10s, settle_interval: 1s, round_timeout: 30s}}
webhook:
  bearer_token_file: {token_file}
"""
    with StandIn(mysql.url(database), gc_delay=0.2) as wa:
        # The exporter's clock reads OPENING - LEAD when it starts; ``opens_at`` is the
        # moment of this process's clock when the exporter's reads OPENING (a few
        # milliseconds early at most: the exporter's clock starts after this line).
        opens_at = time.time() + LEAD.total_seconds()
        with run_exporter(env={**mysql.env(prefix), **faketime(OPENING - LEAD),
                               "WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin",
                               "WA_WEB_PASSWORD": "secret"},
                          config=config, tmp_path=tmp_path) as exporter:
            wa.set_callback(exporter.url + "/webhook/wa-callback", AUTH)
            assert time.time() < opens_at - 2, "the exporter took too long to start"
            _deferred_then_run_at_the_opening(exporter, wa, state, opens_at)


def _deferred_then_run_at_the_opening(exporter: ExporterProcess, wa: StandIn, state: Path,
                                      opens_at: float) -> None:
    answer = requests.post(exporter.url + "/webhook/alertmanager", json=gc_alert(),
                           headers=AUTH, timeout=5).json()
    decision = answer["decisions"][0]
    assert decision["outcome"] == "deferred", answer
    assert decision["reason"].endswith(f"runs when it opens at {OPENING:%Y-%m-%d %H:%M} IST")
    waiting = requests.get(exporter.url + "/actions", headers=AUTH, timeout=5).json()
    assert [e["alertname"] for e in waiting["deferred"]] == ["WhatsAppMessagesTableLarge"]
    assert waiting["window"]["open"] is False
    exporter.wait_metric("whatsapp_action_deferred_requests", 1.0, action="gc")

    # Nothing reaches the WA API before the window opens...
    early = wa.wait_until(lambda s: s["message_gc_calls"] > 0,
                          timeout=opens_at - time.time() - 0.5)
    assert not early and wa.stats()["message_gc_calls"] == 0
    # ... and GC is called within 90 seconds of the opening, asked by nobody again.
    called = wa.wait_until(lambda s: s["message_gc_calls"] > 0,
                           timeout=opens_at + 90 - time.time())
    called_at = time.time()
    assert called and opens_at - 0.5 <= called_at <= opens_at + 90, called_at - opens_at

    finished = wait_for(lambda: audit(state, "finished"), timeout=30, what="GC finishes")
    assert finished[0]["action"] == "gc" and finished[0]["result"] == "success", finished
    decisions = audit(state, "decision")
    assert [d["outcome"] for d in decisions] == ["deferred", "started"]
    # By the exporter's own clock: deferred before the opening, started at it.
    assert decisions[0]["ts"] < OPENING.timestamp() <= decisions[1]["ts"], decisions
    assert decisions[1]["trigger"] == "alert" and decisions[1]["deferred_requests"] == "1"
    assert wa.stats()["message_gc_calls"] == 1
    exporter.wait_metric("whatsapp_action_deferred_requests", 0.0, action="gc")
