"""The whole loop on real parts: MariaDB, the WA API stand-in, stand-in WA containers on the
real Docker engine, the real exporter, and Debian's real Prometheus and Alertmanager with
our rules (thresholds lowered for test time) and our Alertmanager example.

messages grows past the bound -> the alert fires in Prometheus -> Alertmanager calls the
webhook -> GC runs -> rows drop -> the alert resolves. An archive grows past 30 files ->
cleanup runs on that container only -> the archive is trimmed -> resolved. Rows come in that
GC does not delete -> the pace rules see inflow above deletions -> WhatsAppGCFallingBehind
fires. Afterwards every dashboard query must return data from that Prometheus.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest
import sqlalchemy as sa
import yaml

from tests.dashboard_queries import dashboard_queries, load_dashboard
from tests.docker_support import (
    fill_archive,
    remove_test_containers,
    start_wa_container,
)
from tests.promstack import alertmanager, alerts, prometheus, query, wait_until
from tests.support import ROOT, DatabaseServer, new_prefix, run_exporter
from tests.wa_standin.schema import insert_messages
from tests.wa_standin.server import StandIn

pytestmark = [pytest.mark.docker, pytest.mark.mysql]

TOKEN = "e2e-webhook-token"
BOUND = 500  # rows: the lowered "messages table large" threshold
LOWERED = {
    "messages_large_rows": str(BOUND), "messages_large_for": "2s",
    "log_archive_too_many_for": "2s", "exporter_job_regex": "wa-exporter",
    "messages_very_large_rows": "1000000000",  # keep the other rules out of the way
    "messages_growth_horizon": "1s",
    # GC pace over a minute instead of a day, on tables of any size.
    "gc_pace_lookback": "60s", "gc_pace_min_rows": "0", "gc_behind_for": "1s",
}




def _rules(tmp_path: Path) -> Path:
    out = tmp_path / "rules.yml"
    sets = [arg for name, value in LOWERED.items() for arg in ("--set", f"{name}={value}")]
    subprocess.run([sys.executable, str(ROOT / "alerts" / "render.py"), "-o", str(out), *sets],
                   check=True, capture_output=True)
    return out


def _alertmanager_config(exporter_url: str, token_file: Path) -> str:
    """Our example, pointed at this exporter, with test-time intervals and no e-mail."""
    config: dict[str, Any] = yaml.safe_load(
        (ROOT / "alerts" / "alertmanager.example.yml").read_text())
    for receiver in config["receivers"]:
        if receiver["name"] == "wa-exporter":
            hook = receiver["webhook_configs"][0]
            hook["url"] = exporter_url + "/webhook/alertmanager"
            hook["http_config"]["authorization"]["credentials_file"] = str(token_file)
        else:
            receiver.pop("email_configs", None)  # nothing may leave this machine
    for route in [config["route"], *config["route"].get("routes", [])]:
        route.update({"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1m"})
    return yaml.safe_dump(config)


def _prometheus_config(exporter_address: str, rules: Path, am_url: str) -> str:
    return yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "alerting": {"alertmanagers": [{"static_configs": [
            {"targets": [am_url.removeprefix("http://")]}]}]},
        "scrape_configs": [{"job_name": "wa-exporter",
                            "static_configs": [{"targets": [exporter_address]}]}],
    })


def _audit(state: Path) -> list[dict[str, Any]]:
    path = state / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_alert_to_fix_to_resolved(mysql: DatabaseServer, docker_client: docker.DockerClient,
                                  standin_image: str, tmp_path: Path) -> None:
    prefix = new_prefix()
    database = prefix + "main"
    engine = mysql.create_database(database, messages=300)
    project = f"wae2e{os.getpid()}"
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.jpg").write_bytes(b"x" * 5000)
    state = tmp_path / "state"
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    config = f"""
collectors:
  messages: {{interval: 1s, timeout: 5s, query_timeout: 5s}}
  containers: {{interval: 1s, compose_project: {project}}}
  logs: {{interval: 1s}}
  volume: {{interval: 1s, path: {media}}}
  volume_scan: {{interval: 2s}}
actions:
  allowed: [gc, media_gc, cleanup]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {state}
  cooldown: {{gc: 10s, media_gc: 10s, cleanup: 10s}}
  schedules: []
  gc: {{callback_timeout: 10s, settle_interval: 1s, round_timeout: 30s}}
webhook:
  bearer_token_file: {token_file}
"""
    try:
        webapp = start_wa_container(docker_client, role="webapp", service="waweb",
                                    project=project)
        coreapp = start_wa_container(docker_client, role="coreapp", service="wacore",
                                     project=project)
        with loop_stack(mysql, prefix, config, token_file, tmp_path) as prom:
            _gc_loop(engine, database, prom, state)
            _cleanup_loop(coreapp, webapp, prom, state)
            _pace_loop(engine, database, prom)
            _every_dashboard_query_has_data(prom)
    finally:
        remove_test_containers(docker_client, project)


@contextmanager
def loop_stack(server: DatabaseServer, prefix: str, config: str, token_file: Path,
               tmp_path: Path) -> Iterator[Any]:
    """The WA API stand-in on the ``<prefix>main`` database, the exporter with ``config``,
    Alertmanager calling its webhook, Prometheus scraping it: yields Prometheus."""
    with StandIn(server.url(prefix + "main"), gc_delay=0.5) as wa_api:
        env = {**server.env(prefix), "WA_WEB_URL": wa_api.url, "WA_WEB_USERNAME": "admin",
               "WA_WEB_PASSWORD": "secret"}
        with run_exporter(env=env, config=config, tmp_path=tmp_path) as exporter:
            wa_api.set_callback(exporter.url + "/webhook/wa-callback",
                                {"Authorization": f"Bearer {TOKEN}"})
            with alertmanager(tmp_path / "am", _alertmanager_config(
                    exporter.url, token_file)) as am, \
                    prometheus(tmp_path / "prom", _prometheus_config(
                        exporter.address, _rules(tmp_path), am.url)) as prom:
                yield prom


def _gc_loop(engine: sa.Engine, database: str, prom: Any, state: Path) -> None:
    wait_until("the messages table is scraped",
               lambda: query(prom, f'whatsapp_messages_table_rows{{database="{database}"}}'),
               timeout=30)
    insert_messages(engine, 600, read_fraction=0.9, seed=7)  # 900 rows, past the bound
    wait_until("WhatsAppMessagesTableLarge fires",
               lambda: alerts(prom, "WhatsAppMessagesTableLarge"), timeout=60)
    finished = wait_until("GC finishes after the webhook", lambda: [
        r for r in _audit(state) if r["event"] == "finished" and r["action"] == "gc"],
        timeout=60)
    assert finished[0]["result"] == "success", finished
    assert finished[0]["rows_after"] < BOUND
    started = [r for r in _audit(state) if r.get("outcome") == "started" and r["action"] == "gc"]
    assert started[0]["trigger"] == "alert"
    assert started[0]["alertname"] in ("WhatsAppMessagesTableLarge",
                                       "WhatsAppMessagesTableGrowing")
    wait_until("WhatsAppMessagesTableLarge resolves", lambda: not alerts(
        prom, "WhatsAppMessagesTableLarge") and not alerts(
        prom, "WhatsAppMessagesTableLarge", "pending"), timeout=60)


def _cleanup_loop(coreapp: Any, webapp: Any, prom: Any, state: Path) -> None:
    fill_archive(coreapp, 35, prefix="coreapp.log")
    firing = wait_until("WhatsAppLogArchiveTooManyFiles fires", lambda: alerts(
        prom, "WhatsAppLogArchiveTooManyFiles"), timeout=60)
    assert firing[0]["labels"]["container"] == coreapp.name
    finished = wait_until("cleanup finishes after the webhook", lambda: [
        r for r in _audit(state) if r["event"] == "finished" and r["action"] == "cleanup"],
        timeout=60)
    assert finished[0]["result"] == "success"
    assert finished[0]["targets"] == [coreapp.name]  # only the container the alert named
    assert webapp.name not in finished[0]["containers"]
    wait_until("the archive is back at 30 files", lambda: query(
        prom, f'whatsapp_log_archive_files{{container="{coreapp.name}"}} == 30'), timeout=30)
    wait_until("WhatsAppLogArchiveTooManyFiles resolves", lambda: not alerts(
        prom, "WhatsAppLogArchiveTooManyFiles"), timeout=60)


def _pace_loop(engine: sa.Engine, database: str, prom: Any) -> None:
    """100 more rows come in that GC does not delete: over the pace window (a minute, holding
    the whole test), 700 rows came in and GC deleted 690, and WhatsAppGCFallingBehind fires."""
    insert_messages(engine, 100, read_fraction=0.0, seed=11)  # stays under the bound
    firing = wait_until("WhatsAppGCFallingBehind fires", lambda: alerts(
        prom, "WhatsAppGCFallingBehind"), timeout=120)
    assert firing[0]["labels"]["database"] == database
    selector = f'{{database="{database}"}}'
    inflow = query(prom, "database:whatsapp_messages_inflow:per_day" + selector)
    deleted = query(prom, "database:whatsapp_gc_messages_deleted:per_day" + selector)
    assert float(inflow[0]["value"][1]) > float(deleted[0]["value"][1]) >= 0
    days = query(prom, "database:whatsapp_messages_days_until_large" + selector)
    assert days and float(days[0]["value"][1]) > 0


def _every_dashboard_query_has_data(prom: Any) -> None:
    # increase() needs two samples of a counter that appeared with the cleanup just now, so
    # a query may take a few scrapes to return data.
    queries = dashboard_queries(load_dashboard())
    wait_until("every dashboard query returns data", lambda: all(
        query(prom, expr) for expr in queries), timeout=20)
