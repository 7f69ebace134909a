"""Broken input: the state file broken on disk (edited by hand, cut short, another
version's), a YAML alias bomb, settings that contradict each other. The exporter starts,
becomes ready and answers every webhook on the first; the others are refused in one short
line, naming what is wrong. Real processes on SQLite, no services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.faults.harness import AUTH, MESSAGES, config, notification, wait_finished
from tests.support import ROOT, run_exporter, wait_for
from tests.unit.test_config import alias_bomb
from tests.wa_standin.server import StandIn

BROKEN = {
    "wrong-sections": '{"cooldowns": "yesterday", "last_run": 7}',
    "wrong-entries": json.dumps({
        "last_start": {"gc": "yesterday", "media_gc": None}, "last_success": {"gc": [1]},
        "roles": {"wa-web": 3}, "gc_rows_after": {"wa_messagestore": "many"},
        "running": {"r1": 7, "r2": {"action": "gc", "pid": "x", "host": "h"}}}),
    "not-json": '{"last_start": {"gc": 17',
}


@pytest.mark.parametrize("text", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_state_file_leaves_the_exporter_ready_and_the_webhook_answering(
        tmp_path: Path, sqlite_world: tuple[dict[str, str], StandIn], text: str) -> None:
    env, standin = sqlite_world
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(text)
    cfg = config(tmp_path, state_dir=state, allowed=("gc", "media_gc"), messages=MESSAGES)
    with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exporter:
        standin.set_callback(exporter.url + "/webhook/wa-callback", AUTH)
        wait_for(lambda: exporter.get("/-/ready").status_code == 200, what="ready")
        statuses = []
        for seq, action in enumerate(("gc", "media_gc", "gc", "cleanup")):
            response = requests.post(exporter.url + "/webhook/alertmanager", headers=AUTH,
                                     json=notification(action, seq), timeout=10)
            statuses.append(response.status_code)
        assert all(status < 500 for status in statuses), statuses
        assert statuses[:2] == [200, 200]
        wait_finished(state, 2)
        assert exporter.get("/actions").status_code == 200
        assert exporter.get("/metrics").status_code == 200
    assert "state file entries dropped" in exporter.log and "Traceback" not in exporter.log
    assert (state / "state.json.broken").read_text() == text
    rewritten = json.loads((state / "state.json").read_text())
    assert set(rewritten["last_start"]) == {"gc", "media_gc"}
    assert all(isinstance(rewritten[s], dict) for s in ("last_run", "running", "roles"))


@pytest.mark.parametrize(("collector", "words"), [
    ("messages: {interval: 10s, query_timeout: 20s}",
     ("collectors.messages: query_timeout (20s) is longer than interval (10s)",)),
    ("containers: {interval: 1m, stale_after: 30s}",
     ("collectors.containers: stale_after (30s) is not longer than interval (1m)",)),
], ids=["query-timeout-over-interval", "stale-after-below-interval"])
def test_contradictory_settings_are_refused_naming_both_keys(tmp_path: Path, collector: str,
                                                             words: tuple[str, ...]) -> None:
    path = tmp_path / "config.yml"
    path.write_text(f"collectors:\n  {collector}\n")
    result = subprocess.run([sys.executable, "-m", "exporter", "check-config", "--config.file",
                             str(path)], env=_environ(tmp_path), cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2, result.stdout
    assert all(w in result.stderr for w in words) and "; fix: " in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("text", [
    alias_bomb("collectors:\n  messages:\n    interval: {bomb}\n"),
    alias_bomb("actions:\n  instances: {bomb}\n"),
    "collectors: &loop\n  messages: *loop\n",
], ids=["bomb-in-a-duration", "bomb-in-a-list", "alias-of-itself"])
@pytest.mark.parametrize(("flag", "command"), [
    ("--config.file", "check-config"),
    ("--web.config.file", "serve"),  # read by serve only; exits before listening
])
def test_an_alias_bomb_fails_fast_and_small(tmp_path: Path, text: str, flag: str,
                                            command: str) -> None:
    """Under a 2 GiB address-space limit: exit 2 within seconds, one short line, no
    traceback (it used to build the expanded value, or quote it, and run out of memory)."""
    path = tmp_path / "settings.yml"
    path.write_text(text)
    argv = [sys.executable, "-m", "exporter", command, flag, str(path),
            "--web.listen-address", "127.0.0.1:0"]
    started = time.monotonic()
    result = subprocess.run(["/bin/sh", "-c", 'ulimit -v 2097152 && exec "$@"', "sh",
                             *argv], env=_environ(tmp_path), cwd=ROOT, capture_output=True,
                            text=True, timeout=30)
    took = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[:2000]
    assert took < 30 and len(output.encode()) < 4096 and "Traceback" not in output
    assert f"config error: {flag}: {path} expands to more than" in output


def _environ(tmp_path: Path) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
    return {**environ, "WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(tmp_path)}
