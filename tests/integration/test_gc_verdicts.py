"""GC verdicts on the real exporter, as Meta documents the WA client (SPEC §2): real MariaDB,
the WA stand-in speaking only the documented payloads, its callbacks forwarded to the
exporter's callback endpoint with the webhook's bearer token. A run is a success only with
evidence; a person's ``run --exporter.url`` goes through the running exporter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.support import (
    ONLY_MESSAGES,
    ROOT,
    DatabaseServer,
    ExporterProcess,
    new_prefix,
    run_exporter,
    wait_for,
)
from tests.wa_standin.server import StandIn

pytestmark = [pytest.mark.mysql]

TOKEN = "verdict-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def config(tmp_path: Path, allowed: str) -> str:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return f"""
collectors:
{ONLY_MESSAGES}actions:
  allowed: [{allowed}]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {tmp_path / "state"}
  schedules: []
  cooldown: {{gc: 1s, media_gc: 1s}}
  gc: {{callback_timeout: 20s, settle_interval: 1s, round_timeout: 60s}}
  media_gc: {{callback_timeout: 60s}}
webhook:
  bearer_token_file: {token}
"""


@contextmanager
def exporter_beside(mysql: DatabaseServer, tmp_path: Path, allowed: str = "gc, media_gc",
                    **standin: object) -> Iterator[tuple[ExporterProcess, StandIn, str]]:
    prefix = new_prefix()
    database = prefix + "main"
    mysql.create_database(database, messages=400)
    with StandIn(mysql.url(database), **standin) as wa:  # type: ignore[arg-type]
        env = {**mysql.env(prefix), "WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin",
               "WA_WEB_PASSWORD": "secret"}
        with run_exporter(env=env, config=config(tmp_path, allowed), tmp_path=tmp_path) as exp:
            wa.set_callback(exp.url + "/webhook/wa-callback", AUTH)
            yield exp, wa, prefix


def run_via_api(exp: ExporterProcess, action: str) -> dict:
    """Ask the exporter for a manual run, and wait for its finished record."""
    answer = requests.post(exp.url + "/actions/run", json={"action": action}, headers=AUTH,
                           timeout=5)
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["decision"]["run_id"]
    return wait_for(lambda: next((r for r in exp.get(f"/actions?run_id={run_id}").json()
                                  ["records"] if r["event"] == "finished"), None),
                    timeout=60, what=f"{action} to finish")


def runs(exp: ExporterProcess, kind: str, result: str, trigger: str = "manual") -> float:
    return exp.metrics().get(("whatsapp_gc_runs_total", (("kind", kind), ("result", result),
                                                         ("trigger", trigger))), 0.0)


def test_a_documented_failure_callback_is_accepted_and_the_run_is_not_a_success(
        mysql: DatabaseServer, tmp_path: Path) -> None:
    with exporter_beside(mysql, tmp_path) as (exp, wa, _):
        wa.gc_fail(details="Could not delete messages")
        finished = run_via_api(exp, "gc")
        # The stand-in logs a callback once its POST is answered.
        assert wa.wait_until(lambda stats: stats["callbacks_sent"] == 1, timeout=5)
        callbacks = wa.callbacks()
        samples = exp.wait_metric("whatsapp_gc_runs_total", 1.0, kind="message",
                                  result="failed", trigger="manual")
        assert runs(exp, "message", "success") == 0
        matched = samples[("whatsapp_gc_callbacks_total",
                           (("kind", "message"), ("outcome", "matched")))]
    assert finished["result"] == "failed"
    assert finished["errors"] == [{"code": 1014, "details": "Could not delete messages",
                                   "node": None}]
    # Meta's payload, without a title, was answered 2xx (the client would retry a refusal).
    assert [c["payload"]["services"][0]["message"]["gc"]["errors"] for c in callbacks] == [
        [{"code": 1014, "details": "Could not delete messages"}]]
    assert [c["status"] for c in callbacks] == [200] and matched == 1


def test_multiconnect_with_one_failed_node_is_not_a_success(mysql: DatabaseServer,
                                                            tmp_path: Path) -> None:
    with exporter_beside(mysql, tmp_path, multiconnect=["wacore1", "wacore2"]) as (exp, wa, _):
        wa.gc_fail_nodes(["wacore2"])
        finished = run_via_api(exp, "gc")
        exp.wait_metric("whatsapp_gc_runs_total", 1.0, kind="message", result="failed",
                        trigger="manual")
        assert runs(exp, "message", "success") == 0
    assert finished["result"] == "failed", finished
    assert sorted(n["status"] for n in finished["nodes"]) == ["complete", "failed"]
    assert wa.stats()["rows_deleted"] > 0  # the other node did delete: still not a success


def test_media_gc_is_a_success_only_after_its_callback_and_counts_no_messages(
        mysql: DatabaseServer, tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    for i in range(4):
        (media / f"{i}.jpg").write_bytes(b"x")
        old = time.time() - 40 * 86400
        os.utime(media / f"{i}.jpg", (old, old))
    with exporter_beside(mysql, tmp_path, media_dir=media, media_gc_delay=3) as (exp, wa, _):
        answer = requests.post(exp.url + "/actions/run", json={"action": "media-gc"},
                               headers=AUTH, timeout=5).json()
        run_id = answer["decision"]["run_id"]
        assert wa.wait_until(lambda s: s["media_gc_calls"] == 1, timeout=10)
        # "processing" answered: running, not done.
        records = exp.get(f"/actions?run_id={run_id}").json()["records"]
        assert "finished" not in [r["event"] for r in records]
        assert runs(exp, "media", "success") == 0
        finished = wait_for(lambda: next((r for r in exp.get(f"/actions?run_id={run_id}")
                                          .json()["records"] if r["event"] == "finished"),
                                         None), timeout=30, what="media GC to finish")
        samples = exp.wait_metric("whatsapp_gc_runs_total", 1.0, kind="media",
                                  result="success", trigger="manual")
        wa.media_gc_fail(details="Could not delete media files")
        failed = run_via_api(exp, "media_gc")
        after = exp.wait_metric("whatsapp_gc_runs_total", 1.0, kind="media", result="failed",
                                trigger="manual")
    assert finished["result"] == "success" and finished["items_deleted"] == 4
    assert samples[("whatsapp_gc_media_items_deleted_total", ())] == 4
    assert not [v for (name, _), v in samples.items()
                if name == "whatsapp_gc_messages_deleted_total" and v]
    assert failed["result"] == "failed"
    assert failed["errors"] == [{"code": 1014, "details": "Could not delete media files"}]
    assert after[("whatsapp_gc_media_items_deleted_total", ())] == 4


def test_a_callback_no_gc_waits_for_is_accepted_and_counted(mysql: DatabaseServer,
                                                            tmp_path: Path) -> None:
    with exporter_beside(mysql, tmp_path) as (exp, _, _):
        body = {"services": [{"message": {"gc": {"messages_deleted": 5, "status": "complete"}}}]}
        answer = requests.post(exp.url + "/webhook/wa-callback", json=body, headers=AUTH,
                               timeout=5)
        assert answer.status_code == 200
        assert answer.json()["outcomes"] == ["no_gc_running"]
        assert exp.metrics()[("whatsapp_gc_callbacks_total",
                              (("kind", "message"), ("outcome", "no_gc_running")))] == 1
        assert requests.post(exp.url + "/webhook/wa-callback", json={"statuses": []},
                             headers=AUTH, timeout=5).status_code == 400


def test_run_gc_through_the_running_exporter(mysql: DatabaseServer, tmp_path: Path) -> None:
    """``wa-exporter run gc --exporter.url``: the running exporter runs it, hears its
    callback, and counts it under trigger="manual"; the CLI follows and exits 0."""
    with exporter_beside(mysql, tmp_path, allowed="gc") as (exp, wa, _):
        before = runs(exp, "message", "success")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
        cli = subprocess.run(
            [sys.executable, "-m", "exporter", "run", "gc", "--exporter.url", exp.url,
             "--config.file", str(next(tmp_path.glob("config-*.yml")))],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
        assert cli.returncode == 0, (cli.stdout, cli.stderr)
        after = exp.wait_metric("whatsapp_gc_runs_total", 1.0, kind="message",
                                result="success", trigger="manual")[
            ("whatsapp_gc_runs_total", (("kind", "message"), ("result", "success"),
                                        ("trigger", "manual")))]
        rounds = [r for r in exp.get("/actions").json()["records"] if r["event"] == "round"]
    assert cli.returncode == 0, cli.stderr
    report = json.loads(cli.stdout)
    assert report["decision"]["outcome"] == "started"
    assert report["result"]["result"] == "success"
    assert (before, after) == (0, 1)
    assert rounds[-1]["completed_by"] == "callback"  # heard, not waited out
    assert "wa-exporter: gc round 1 success" in cli.stderr
    assert wa.stats()["message_gc_calls"] == 1
    assert TOKEN not in cli.stdout + cli.stderr


def test_run_through_an_exporter_with_wrong_credentials_or_none_there(
        mysql: DatabaseServer, tmp_path: Path) -> None:
    with exporter_beside(mysql, tmp_path, allowed="gc") as (exp, wa, _):
        wrong = tmp_path / "wrong.yml"
        wrong.write_text("webhook:\n  bearer_token: not-the-token\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
        refused = subprocess.run(
            [sys.executable, "-m", "exporter", "run", "gc", "--config.file", str(wrong)],
            cwd=ROOT, env={**env, "WA_EXPORTER_URL": exp.url}, capture_output=True,
            text=True, timeout=30)
        assert wa.stats()["message_gc_calls"] == 0
    gone = subprocess.run(
        [sys.executable, "-m", "exporter", "run", "gc", "--exporter.url", exp.url],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert refused.returncode == 2 and "refused the credentials" in refused.stderr
    assert "not-the-token" not in refused.stderr
    assert gone.returncode == 1 and "cannot reach the exporter" in gone.stderr
