"""Database outages through a proxy the test controls: /metrics keeps answering, and heals."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support import (
    ONLY_MESSAGES,
    DatabaseServer,
    ExporterProcess,
    new_prefix,
    run_exporter,
    value,
    wait_for,
)
from tests.tcp_proxy import TcpProxy

CONFIG = """
collectors:
""" + ONLY_MESSAGES + """  messages:
    interval: 500ms
    timeout: 2s
    query_timeout: 1s
"""


@pytest.fixture
def proxy(db_server: DatabaseServer) -> Iterator[TcpProxy]:
    proxy = TcpProxy((db_server.host, db_server.port))
    yield proxy
    proxy.close()


def _quick_scrape(exporter: ExporterProcess) -> float:
    started = time.monotonic()
    response = requests.get(exporter.url + "/metrics", timeout=2)
    assert response.status_code == 200
    return time.monotonic() - started


@pytest.mark.parametrize("fault", ["cut", "blackhole"])
def test_outage_reports_down_answers_at_once_and_heals(db_server: DatabaseServer, proxy: TcpProxy,
                                                       tmp_path: Path, fault: str) -> None:
    prefix = new_prefix()
    database = prefix + "main"
    db_server.create_database(database, messages=42)
    env = db_server.env(prefix, host="127.0.0.1", port=proxy.port)
    with run_exporter(env=env, config=CONFIG, tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_messages_table_rows", 42.0, database=database)

        getattr(proxy, fault)()
        samples = exporter.wait_metric("whatsapp_db_up", 0.0, database=database)
        assert value(samples, "whatsapp_exporter_collector_success", collector="messages") == 0
        # Old figures are still within stale_after, so they are served, not dropped yet.
        assert value(samples, "whatsapp_messages_table_rows", database=database) == 42
        # While the source hangs, /metrics answers from the snapshot at once.
        assert max(_quick_scrape(exporter) for _ in range(20)) < 0.5

        proxy.forward()
        samples = exporter.wait_metric("whatsapp_db_up", 1.0, database=database)
        exporter.wait_metric("whatsapp_exporter_collector_success", 1.0, collector="messages")

    failures = [line for line in exporter.lines
                if "collector refresh failed" in line and "collector=messages" in line]
    assert 1 <= len(failures) <= 3, exporter.log  # one line per change, not one per refresh
    assert sum("collector recovered" in line for line in exporter.lines) == 1
    assert "Traceback" not in exporter.log


def test_stale_values_are_dropped_not_served_as_fresh(db_server: DatabaseServer, proxy: TcpProxy,
                                                      tmp_path: Path) -> None:
    prefix = new_prefix()
    database = prefix + "main"
    db_server.create_database(database, messages=9)
    env = db_server.env(prefix, host="127.0.0.1", port=proxy.port)
    config = CONFIG + "    stale_after: 2s\n"
    with run_exporter(env=env, config=config, tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_messages_table_rows", 9.0, database=database)
        proxy.cut()
        samples = exporter.wait_metric("whatsapp_messages_table_rows", None, database=database)
        assert value(samples, "whatsapp_db_up", database=database) == 0
        proxy.forward()
        exporter.wait_metric("whatsapp_messages_table_rows", 9.0, database=database)


def test_sigterm_stops_within_5s_while_a_refresh_hangs(db_server: DatabaseServer, proxy: TcpProxy,
                                                       tmp_path: Path) -> None:
    prefix = new_prefix()
    db_server.create_database(prefix + "main", messages=1)
    env = db_server.env(prefix, host="127.0.0.1", port=proxy.port)
    slow = CONFIG.replace("timeout: 2s", "timeout: 30s").replace("query_timeout: 1s",
                                                                  "query_timeout: 25s")
    with run_exporter(env=env, config=slow, tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_db_up", 1.0, database=prefix + "main")
        proxy.blackhole()
        wait_for(lambda: proxy.swallowed > 0, what="a refresh stuck in the black hole")
        took = exporter.stop(signal.SIGTERM)
    assert exporter.proc.returncode == 0
    assert took < 5, f"took {took:.1f}s"


def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    env = {"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(tmp_path)}
    with run_exporter(env=env) as exporter:
        assert exporter.get("/-/healthy").status_code == 200
        took = exporter.stop(signal.SIGINT)
    assert exporter.proc.returncode == 0 and took < 5
    assert "msg=stopped" in exporter.log
