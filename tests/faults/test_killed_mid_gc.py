"""The exporter SIGKILLed in the middle of a message GC, then started again, on PostgreSQL (the
MariaDB case is in ``tests/integration/test_webhook.py``): the run is recorded as
``interrupted``, its cooldown holds, and the WA API sees one GC, not two."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.faults.harness import (
    AUTH,
    MESSAGES,
    ScrapeWatch,
    assert_every_run_finished,
    audit_records,
    config,
    finished,
    fire,
    gc_runs,
    outcomes,
    wa_env,
)
from tests.support import DatabaseServer, Samples, new_prefix, run_exporter
from tests.wa_standin.server import StandIn

pytestmark = pytest.mark.postgres


def kill_mid_gc_and_start_again(postgres: DatabaseServer, tmp_path: Path) -> Samples:
    """Alert, GC in flight, SIGKILL, start again, alert again; the second exporter's metrics."""
    prefix = new_prefix()
    database = prefix + "main"
    postgres.create_database(database, messages=200)
    state = tmp_path / "state"
    cfg = config(tmp_path, state_dir=state, allowed=("gc",), messages=MESSAGES,
                 actions={"gc": {"callback_timeout": "60s", "round_timeout": "120s"}})
    # The WA side is still "processing" when the exporter dies.
    with StandIn(postgres.url(database), gc_delay=60) as standin:
        env = {**postgres.env(prefix), **wa_env(standin)}
        with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exporter:
            standin.set_callback(exporter.url + "/webhook/wa-callback", AUTH)
            assert fire(exporter, "gc", 1)["outcome"] == "started"
            assert standin.wait_until(lambda s: s["message_gc_calls"] == 1, timeout=15)
            exporter.stop(signal.SIGKILL)
        assert finished(audit_records(state)) == []

        with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exporter:
            [interrupted] = finished(audit_records(state))  # written before it listens
            assert interrupted["result"] == "interrupted", interrupted
            with ScrapeWatch(exporter):
                exporter.wait_metric("whatsapp_db_up", 1.0, database=database)
                # The killed session's advisory lock is gone; the cooldown still holds.
                assert fire(exporter, "gc", 2)["outcome"] == "skipped_cooldown"
            samples = exporter.metrics()
        assert standin.stats()["message_gc_calls"] == 1
    records = audit_records(state)
    assert outcomes(records) == ["started", "skipped_cooldown"]
    assert_every_run_finished(records)
    return samples


def test_killed_mid_gc_on_postgres_is_interrupted_and_not_repeated(
        postgres: DatabaseServer, tmp_path: Path) -> None:
    kill_mid_gc_and_start_again(postgres, tmp_path)


def test_killed_mid_gc_counts_the_interrupted_run_in_the_metrics(
        postgres: DatabaseServer, tmp_path: Path) -> None:
    samples = kill_mid_gc_and_start_again(postgres, tmp_path)
    assert gc_runs(samples) == {"interrupted": 1}
