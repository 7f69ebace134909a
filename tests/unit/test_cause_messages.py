"""Messages that name the cause: an allowed action the settings cannot run, a prefix that
matches no database, a media path that does not exist. The real exporter process on SQLite
databases (no services)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, parse_metrics, run_exporter, value, wait_for

NO_API = "action 'gc' is allowed but the WA API is not configured; fix: set WA_WEB_URL"


def sqlite_env(directory: Path, prefix: str) -> dict[str, str]:
    return {"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(directory),
            "WA_DB_NAME_PREFIX": prefix}


def gc_config(tmp_path: Path) -> str:
    return f"""\
collectors:
  containers: {{enabled: false}}
  logs: {{enabled: false}}
  volume: {{enabled: false}}
  volume_scan: {{enabled: false}}
actions:
  allowed: [gc]
  state_dir: {tmp_path / 'state'}
  schedules: []
"""


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
    return subprocess.run([sys.executable, "-m", "exporter", *args], env={**base, **env},
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_gc_allowed_without_wa_api_says_what_is_missing_in_run_check_config_and_at_start(
        tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(gc_config(tmp_path))
    env = sqlite_env(tmp_path, "wa_")

    run = cli(["run", "gc", "--config.file", str(config)], env)
    assert run.returncode == 2
    decision = json.loads(run.stdout)["decision"]
    assert decision["outcome"] == "rejected"
    assert decision["reason"].startswith(NO_API), decision

    checked = cli(["check-config", "--config.file", str(config)], env)
    assert checked.returncode == 0
    assert "allowed:\n  - gc" in checked.stdout
    assert f"wa-exporter: warning: {NO_API}" in checked.stderr

    with run_exporter(["--webhook.no-auth"], env, gc_config(tmp_path), tmp_path) as exporter:
        pass
    assert NO_API in exporter.log
    assert "msg=\"action unavailable\"" in exporter.log


def test_prefix_matching_no_database_warns_once_naming_prefix_and_databases(
        tmp_path: Path) -> None:
    for name in ("biz_messagestore", "biz_contacts"):
        with sqlite3.connect(tmp_path / f"{name}.db") as conn:
            conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY)")
    config = ("collectors:\n  messages:\n    interval: 1s\n  containers: {enabled: false}\n"
              "  logs: {enabled: false}\n  volume: {enabled: false}\n"
              "  volume_scan: {enabled: false}\n")
    with run_exporter([], sqlite_env(tmp_path, "wa_"), config, tmp_path) as exporter:
        def refreshed_at() -> float | None:
            return value(exporter.metrics(), "whatsapp_exporter_collector_last_success_"
                         "timestamp_seconds", collector="messages")
        first = wait_for(refreshed_at, what="the first refresh")
        wait_for(lambda: (refreshed_at() or 0) > first, timeout=10, what="a second refresh")
        assert value(parse_metrics(exporter.get("/metrics").text),
                     "whatsapp_messages_databases") == 0
    warnings = [line for line in exporter.lines if "no WA database found" in line]
    assert len(warnings) == 1, exporter.log
    assert "WA_DB_NAME_PREFIX='wa_'" in warnings[0]
    assert "biz_contacts, biz_messagestore" in warnings[0]
    assert "fix: set WA_DB_NAME_PREFIX" in warnings[0]


def test_missing_media_path_is_one_warning_with_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "wamedia"
    config = (f"collectors:\n  messages: {{enabled: false}}\n  containers: {{enabled: false}}\n"
              f"  logs: {{enabled: false}}\n  volume:\n    path: {missing}\n")
    with run_exporter([], {}, config, tmp_path) as exporter:
        for collector in ("volume", "volume_scan"):
            wait_for(lambda c=collector: value(exporter.metrics(),
                                               "whatsapp_exporter_collector_success",
                                               collector=c) == 0, what=f"{collector} failing")
    warnings = [line for line in exporter.lines if "media volume path missing" in line]
    assert len(warnings) == 1, exporter.log
    assert f"path={missing}" in warnings[0]
    assert "set collectors.volume.path to where it is mounted" in warnings[0]
    assert "collectors.volume.enabled and collectors.volume_scan.enabled to false" in warnings[0]
