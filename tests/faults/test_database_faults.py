"""The WA database slowed, restarted, and out of reach while an action is asked for.

Cut and black-hole outages of the collector are in ``tests/integration/test_outages.py``;
these add what they do not cover. The exporter reaches the server only through the proxy."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.faults.harness import (
    AUTH,
    MESSAGES,
    ScrapeWatch,
    assert_every_run_finished,
    audit_records,
    config,
    fire,
    gc_runs,
    log_lines,
    outcomes,
    requests_total,
    wa_env,
    wait_finished,
)
from tests.support import DatabaseServer, ExporterProcess, new_prefix, run_exporter, value, wait_for
from tests.tcp_proxy import TcpProxy
from tests.wa_standin.schema import insert_messages
from tests.wa_standin.server import StandIn

# Held this long per chunk, each way, a query outlasts query_timeout (1s) and the client
# deadlines; at the lower delay a whole refresh, new connections included, fits its 4s.
TOO_SLOW, SLOW_BUT_FINE = 1.5, 0.1


def test_a_slow_database_is_down_past_the_query_timeout_and_back_up_below_it(
        db: DatabaseServer, db_proxy: TcpProxy, tmp_path: Path) -> None:
    prefix = new_prefix()
    database = prefix + "main"
    db.create_database(database, messages=42)
    env = db.env(prefix, host="127.0.0.1", port=db_proxy.port)
    with run_exporter(env=env, config=config(tmp_path, messages=MESSAGES),
                      tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_messages_table_rows", 42.0, database=database)

        with ScrapeWatch(exporter):
            db_proxy.slow(TOO_SLOW)
            samples = exporter.wait_metric("whatsapp_db_up", 0.0, database=database)
            assert value(samples, "whatsapp_exporter_collector_success",
                         collector="messages") == 0
            # Still within stale_after: the last figures are served, marked by db_up 0.
            assert value(samples, "whatsapp_messages_table_rows", database=database) == 42

            db_proxy.slow(SLOW_BUT_FINE)
            held = db_proxy.delayed
            samples = exporter.wait_metric("whatsapp_db_up", 1.0, timeout=30,
                                           database=database)
            assert value(samples, "whatsapp_exporter_collector_success",
                         collector="messages") == 1
        assert db_proxy.delayed > held, "the recovery must have gone through the slow relay"

    failures = log_lines(exporter, "collector refresh failed", "collector=messages")
    assert 1 <= len(failures) <= 2, failures  # one line per change, not one per refresh
    assert len(log_lines(exporter, "collector recovered", "collector=messages")) == 1
    assert "Traceback" not in exporter.log


def _last_success(exporter: ExporterProcess) -> float:
    found = value(exporter.metrics(),
                  "whatsapp_exporter_collector_last_success_timestamp_seconds",
                  collector="messages")
    return found or 0.0


def _refreshed(exporter: ExporterProcess) -> Callable[[], bool]:
    """True once the messages collector has finished a refresh after this call."""
    seen = _last_success(exporter)
    return lambda: _last_success(exporter) > seen


def test_a_database_restarted_between_refreshes_costs_no_failed_refresh(
        db: DatabaseServer, db_proxy: TcpProxy, tmp_path: Path) -> None:
    """Every pooled connection dies with the server; the next refresh must notice (pre-ping)
    and connect afresh instead of failing on a dead connection."""
    prefix = new_prefix()
    database = prefix + "main"
    engine = db.create_database(database, messages=42)
    env = db.env(prefix, host="127.0.0.1", port=db_proxy.port)
    with run_exporter(env=env, config=config(tmp_path, messages=MESSAGES),
                      tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_messages_table_rows", 42.0, database=database)
        with ScrapeWatch(exporter) as scrapes:
            for restart in range(3):
                # Right after a refresh, so the restart falls between two of them.
                wait_for(_refreshed(exporter), interval=0.01, what="a refresh to finish")
                connections = db_proxy.accepted
                db_proxy.restart()
                restarted = time.time()
                insert_messages(engine, 1, seed=100 + restart)  # new figures, not old ones
                exporter.wait_metric("whatsapp_messages_table_rows", 43.0 + restart,
                                     database=database)
                assert _last_success(exporter) > restarted
                assert db_proxy.accepted > connections, "no fresh connection was made"
        assert set(scrapes.seen("whatsapp_db_up", database=database)) == {1.0}
        assert set(scrapes.seen("whatsapp_exporter_collector_success",
                                collector="messages")) == {1.0}
    assert not log_lines(exporter, "collector refresh failed"), exporter.log


@pytest.mark.parametrize("fault", ["cut", "blackhole"])
def test_a_gc_asked_for_while_the_database_is_down_is_skipped_and_recorded_then_runs_once(
        db: DatabaseServer, db_proxy: TcpProxy, tmp_path: Path, fault: str) -> None:
    """No lock without the database: the run must not start (fail closed), must not take the
    cooldown, and must be recorded; once the database is back, one GC runs."""
    prefix = new_prefix()
    database = prefix + "main"
    db.create_database(database, messages=200)
    state = tmp_path / "state"
    cfg = config(tmp_path, state_dir=state, allowed=("gc",), messages=MESSAGES)
    with StandIn(db.url(database), gc_delay=0.1) as standin:
        env = {**db.env(prefix, host="127.0.0.1", port=db_proxy.port), **wa_env(standin)}
        with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exporter:
            standin.set_callback(exporter.url + "/webhook/wa-callback", AUTH)
            exporter.wait_metric("whatsapp_db_up", 1.0, database=database)

            with ScrapeWatch(exporter):
                getattr(db_proxy, fault)()
                exporter.wait_metric("whatsapp_db_up", 0.0, database=database)
                decision = fire(exporter, "gc", 1)
                assert decision["outcome"] == "skipped_lock_unavailable", decision
                assert "cluster lock unavailable" in decision["reason"]
                assert "message_gc" not in standin.stats()["requests"]  # no GC asked

                db_proxy.forward()
                exporter.wait_metric("whatsapp_db_up", 1.0, database=database)
            # Not in the cooldown: the skipped request did not start one.
            assert fire(exporter, "gc", 2)["outcome"] == "started"
            [done] = wait_finished(state)
            assert fire(exporter, "gc", 3)["outcome"] == "skipped_cooldown"
            samples = exporter.metrics()

        assert standin.stats()["message_gc_calls"] == 1
    assert done["result"] == "success", done
    records = audit_records(state)
    assert outcomes(records) == ["skipped_lock_unavailable", "started", "skipped_cooldown"]
    assert_every_run_finished(records)
    assert requests_total(samples, "gc") == {"skipped_lock_unavailable": 1, "started": 1,
                                             "skipped_cooldown": 1}
    assert gc_runs(samples) == {"success": 1}
    with db.engine(database).connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM messages")).scalar_one() == \
            200 - done["messages_deleted"]


def test_a_black_holed_database_costs_a_webhook_answer_the_lock_timeout_not_the_query_timeout(
        db: DatabaseServer, db_proxy: TcpProxy, tmp_path: Path) -> None:
    """With the default ``query_timeout`` of 20 s, a decision that waited for it would keep
    Alertmanager's notification 22 s; the lock has its own bound, ``actions.lock_timeout``
    (2 s here), and the answer comes well inside a 10-s client timeout."""
    prefix = new_prefix()
    database = prefix + "main"
    db.create_database(database, messages=10)
    cfg = config(tmp_path, allowed=("gc",), actions={"lock_timeout": "2s"},
                 messages={**MESSAGES, "query_timeout": "20s", "timeout": "30s"})
    with StandIn(db.url(database), gc_delay=0.1) as standin:
        env = {**db.env(prefix, host="127.0.0.1", port=db_proxy.port), **wa_env(standin)}
        with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exporter:
            exporter.wait_metric("whatsapp_db_up", 1.0, database=database)
            db_proxy.blackhole()
            decision = fire(exporter, "gc", 1, timeout=10)
            assert decision["outcome"] == "skipped_lock_unavailable", decision
            assert "cluster lock unavailable" in decision["reason"]
            assert exporter.get("/-/healthy").status_code == 200
        assert standin.stats()["message_gc_calls"] == 0
