"""The real exporter relaying the WA client's own view from the stand-in, which serves Meta's
documented /v1/stats/app, /v1/stats/db and /v1/settings/application answers: the figures as
the client reports them, /v1/stats/db read rarely (never per scrape, once more after a
message GC), a lint-clean exposition, one series per node on multiconnect."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from tests.support import (
    ONLY_MESSAGES,
    DatabaseServer,
    new_prefix,
    run_exporter,
    series,
    unavailable,
    value,
    wait_for,
)
from tests.wa_standin.server import StandIn, node_id

TOKEN = "relay-test-token"
# Every collector off but the client's own view (ONLY_MESSAGES turns off the others).
ONLY_THE_CLIENT = "collectors:\n  messages: {enabled: false}\n" + ONLY_MESSAGES


def wa_env(standin: StandIn) -> dict[str, str]:
    return {"WA_WEB_URL": standin.url, "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}


def stats_db_calls(standin: StandIn) -> int:
    return int(standin.stats()["requests"].get("stats_db", 0))


def test_the_clients_figures_arrive_and_scrapes_never_read_the_db_stats(
        tmp_path: Path) -> None:
    with StandIn() as standin, run_exporter(env=wa_env(standin), config=ONLY_THE_CLIENT,
                                            tmp_path=tmp_path) as exporter:
        started = time.monotonic()
        exporter.wait_metric("whatsapp_client_callback_queue_size", 450.0, timeout=90)
        exporter.wait_metric("whatsapp_client_db_pending_callbacks", 7.0,
                             timeout=max(1.0, 90 - (time.monotonic() - started)))
        exporter.wait_metric("whatsapp_client_db_messages", 1.0, type="system",
                             timeout=max(1.0, 90 - (time.monotonic() - started)))
        assert time.monotonic() - started < 90
        # The settings are read by a collector of their own, which may finish last.
        samples = exporter.wait_metric("whatsapp_client_gc_enabled", 1.0, kind="messages",
                                       timeout=30)
        for collector in ("wa_stats_app", "wa_stats_db", "wa_settings"):
            assert value(samples, "whatsapp_exporter_collector_success",
                         collector=collector) == 1.0
        assert stats_db_calls(standin) == 1  # the read at start

        scraped_from = time.monotonic()
        for i in range(30):  # 30 scrapes in 15 s
            assert exporter.get("/metrics").status_code == 200
            time.sleep(max(0.0, scraped_from + (i + 1) * 0.5 - time.monotonic()))
        assert stats_db_calls(standin) <= 1
        assert standin.stats()["requests"]["stats_app"] <= 2  # every 30 s, not per scrape
        body = exporter.get("/metrics").text
        # As Prometheus scrapes: OpenMetrics, which refuses a whole answer for one bad family.
        openmetrics = requests.get(exporter.url + "/metrics", timeout=5, headers={
            "Accept": "application/openmetrics-text; version=1.0.0"}).text
    assert "whatsapp_client_callback_queue_size" in {
        f.name for f in openmetrics_families(openmetrics)}
    lint = promtool_check_metrics(body)
    assert [line for line in lint if "whatsapp_client_" in line] == [], lint


def promtool_check_metrics(body: str) -> list[str]:
    tool = shutil.which("promtool")
    if tool is None:
        unavailable("promtool", "not installed (Debian package prometheus)")
    assert tool is not None
    result = subprocess.run([tool, "check", "metrics"], input=body, capture_output=True,
                            text=True, timeout=30)
    return (result.stdout + result.stderr).splitlines()


def test_multiconnect_figures_carry_their_node(tmp_path: Path) -> None:
    cores = [node_id("wacore1"), node_id("wacore2")]
    with StandIn(multiconnect=["wacore1", "wacore2"]) as standin:
        standin.set_client_stat("app", "callback_queue_size", 12, node=cores[1])
        with run_exporter(env=wa_env(standin), config=ONLY_THE_CLIENT,
                          tmp_path=tmp_path) as exporter:
            exporter.wait_metric("whatsapp_client_db_pending_callbacks", 7.0,
                                 node=node_id("wamaster1"), timeout=30)
            samples = exporter.wait_metric("whatsapp_client_callback_queue_size", 12.0,
                                           node=cores[1])
    queue = series(samples, "whatsapp_client_callback_queue_size")
    assert queue == {(("node", cores[0]),): 450.0, (("node", cores[1]),): 12.0}
    # Only the primary master answers the db stats; the other master's {} is skipped.
    assert series(samples, "whatsapp_client_db_pending_callbacks") == {
        (("node", node_id("wamaster1")),): 7.0}
    system = {labels: v for labels, v in series(samples, "whatsapp_client_db_messages").items()
              if ("type", "system") in labels}
    assert system == {(("node", node_id("wamaster1")), ("type", "system")): 1.0}


def test_a_failing_endpoint_is_its_own_collector_and_keeps_its_last_figures(
        tmp_path: Path) -> None:
    config = ONLY_THE_CLIENT + "  wa_client:\n    app: {interval: 1s, timeout: 1s}\n"
    with StandIn() as standin, run_exporter(env=wa_env(standin), config=config,
                                            tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_client_callback_queue_size", 450.0)
        standin.fail_next("stats_app", count=1000, status=500)
        samples = exporter.wait_metric("whatsapp_exporter_collector_success", 0.0,
                                       collector="wa_stats_app")
        assert value(samples, "whatsapp_client_callback_queue_size") == 450.0  # not stale yet
        assert value(samples, "whatsapp_exporter_collector_success",
                     collector="wa_stats_db") == 1.0


def test_each_message_gc_reads_the_db_stats_again(postgres: DatabaseServer,
                                                  tmp_path: Path) -> None:
    prefix = new_prefix()
    postgres.create_database(prefix + "main", messages=100)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    config = ONLY_THE_CLIENT.replace("messages: {enabled: false}", "messages: {interval: 1s}") \
        + f"""
actions:
  allowed: [gc]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {tmp_path / "state"}
  schedules: []
  gc: {{callback_timeout: 10s, settle_interval: 500ms, round_timeout: 30s}}
webhook:
  bearer_token_file: {token}
"""
    with StandIn(postgres.url(prefix + "main"), gc_delay=0.2) as standin:
        env = {**postgres.env(prefix), **wa_env(standin)}
        with run_exporter(env=env, config=config, tmp_path=tmp_path) as exporter:
            standin.set_callback(exporter.url + "/webhook/wa-callback",
                                 {"Authorization": f"Bearer {TOKEN}"})
            exporter.wait_metric("whatsapp_client_db_pending_callbacks", 7.0)
            assert stats_db_calls(standin) == 1
            standin.set_client_stat("db", "db_pending_callbacks", 0)
            run = requests.post(exporter.url + "/webhook/alertmanager", timeout=5,
                                headers={"Authorization": f"Bearer {TOKEN}"},
                                data=json.dumps(gc_alert()))
            assert run.status_code == 200, run.text
            exporter.wait_metric("whatsapp_gc_runs_total", 1.0, kind="message",
                                 result="success", trigger="alert", timeout=30)
            exporter.wait_metric("whatsapp_client_db_pending_callbacks", 0.0)
            wait_for(lambda: stats_db_calls(standin) == 2, what="one more /v1/stats/db read")
            assert standin.stats()["message_gc_calls"] == 1


def gc_alert() -> dict[str, object]:
    alert = {"status": "firing", "labels": {"alertname": "WhatsAppMessagesTableLarge",
                                            "action": "gc"},
             "annotations": {}, "startsAt": "2026-11-26T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom",
             "fingerprint": "f00d"}
    return {"version": "4", "status": "firing", "receiver": "wa-exporter", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://am", "alerts": [alert]}


@pytest.mark.parametrize("switch", ["enabled: false", "db: {enabled: false}"])
def test_the_relay_can_be_turned_off(tmp_path: Path, switch: str) -> None:
    config = ONLY_THE_CLIENT + f"  wa_client:\n    {switch}\n"
    with StandIn() as standin, run_exporter(env=wa_env(standin), config=config,
                                            tmp_path=tmp_path) as exporter:
        wait_for(lambda: exporter.get("/-/ready").status_code == 200, what="ready")
        samples = exporter.metrics()
        collectors = {dict(labels)["collector"] for labels in
                      series(samples, "whatsapp_exporter_collector_success")}
        assert "wa_stats_db" not in collectors
        assert stats_db_calls(standin) == 0
        if switch == "enabled: false":
            assert collectors == set() and standin.stats()["requests"] == {}
