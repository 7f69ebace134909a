"""The WA API (the webapp) down, slow, refusing the token, and answering 500, while alerts ask
for message GC. The stand-in deletes from a real PostgreSQL ``messages`` table and calls back
into the exporter as the WA client's webhook would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    wait_finished,
)
from tests.support import DatabaseServer, ExporterProcess, new_prefix, run_exporter
from tests.wa_standin.server import StandIn

pytestmark = pytest.mark.postgres


@dataclass
class World:
    standin: StandIn
    exporter: ExporterProcess
    state: Path

    def gc(self, seq: int) -> dict[str, Any]:
        """Fire a GC alert; it must start; return the run's finished record."""
        done = len(finished(audit_records(self.state)))
        assert fire(self.exporter, "gc", seq)["outcome"] == "started"
        return wait_finished(self.state, done + 1)[-1]


@pytest.fixture
def world(postgres: DatabaseServer, tmp_path: Path) -> Iterator[World]:
    prefix = new_prefix()
    postgres.create_database(prefix + "main", messages=300)
    state = tmp_path / "state"
    # No cooldown to speak of: each alert after a finished run starts the next run.
    cfg = config(tmp_path, state_dir=state, allowed=("gc",), messages=MESSAGES,
                 actions={"cooldown": {"gc": "1ms"}})
    with StandIn(postgres.url(prefix + "main"), gc_delay=0.05) as standin:
        env = {**postgres.env(prefix), **wa_env(standin)}
        with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exporter:
            standin.set_callback(exporter.url + "/webhook/wa-callback", AUTH)
            exporter.wait_metric("whatsapp_db_up", 1.0, database=prefix + "main")
            yield World(standin, exporter, state)
    records = audit_records(state)
    assert_every_run_finished(records)
    assert set(outcomes(records)) == {"started"}


def test_wa_api_down_is_an_error_and_the_next_gc_reaches_it_again(world: World) -> None:
    standin = world.standin
    with ScrapeWatch(world.exporter):
        standin.stop()  # the port is closed: connections are refused
        failed = world.gc(1)
        standin.start()  # same port, same counters
        recovered = world.gc(2)
    assert failed["result"] == "error" and failed["error"]["kind"] == "connect", failed
    assert failed["rounds"] == 0
    assert recovered["result"] == "success", recovered
    stats = standin.stats()
    assert (stats["message_gc_calls"], stats["logins"]) == (1, 1)
    assert gc_runs(world.exporter.metrics()) == {"error": 1, "success": 1}


def test_wa_api_slower_than_the_read_timeout_is_an_error_and_the_gc_is_not_sent_twice(
        world: World) -> None:
    standin = world.standin
    with ScrapeWatch(world.exporter):
        standin.slow("message_gc", 2.5)  # read_timeout is 1s
        failed = world.gc(1)
        # The webapp took the late request anyway; let it finish before the next run.
        assert standin.wait_until(lambda s: s["callbacks_sent"] == 1, timeout=10)
        standin.slow("message_gc", 0)
        recovered = world.gc(2)
    assert failed["result"] == "error" and failed["error"]["kind"] == "timeout", failed
    assert recovered["result"] == "success", recovered
    # A timed-out GC request may have been taken: it is never repeated.
    assert standin.stats()["requests"]["message_gc"] == 2
    assert gc_runs(world.exporter.metrics()) == {"error": 1, "success": 1}


def test_wa_api_refusing_the_token_gets_one_fresh_login_and_the_gc_runs(world: World) -> None:
    standin = world.standin
    with ScrapeWatch(world.exporter):
        first = world.gc(1)
        standin.expire_tokens()
        second = world.gc(2)
    assert first["result"] == second["result"] == "success", (first, second)
    stats = standin.stats()
    assert (stats["logins"], stats["unauthorized"], stats["message_gc_calls"]) == (2, 1, 2)
    assert stats["requests"]["message_gc"] == 3  # the refused call, repeated once, and run 1
    assert gc_runs(world.exporter.metrics()) == {"success": 2}


def test_wa_api_answering_500_is_an_error_with_the_wa_code_in_the_audit(world: World) -> None:
    standin = world.standin
    with ScrapeWatch(world.exporter):
        standin.fail_next("message_gc", count=3, status=500, code=1014,
                          details="Service unavailable")  # every one of the 3 attempts
        failed = world.gc(1)
        recovered = world.gc(2)
    error = failed["error"]
    assert failed["result"] == "error"
    assert (error["kind"], error["status"], error["code"], error["details"]) == (
        "http", 500, 1014, "Service unavailable")
    assert recovered["result"] == "success", recovered
    stats = standin.stats()
    assert stats["requests"]["message_gc"] == 4 and stats["message_gc_calls"] == 1
    assert gc_runs(world.exporter.metrics()) == {"error": 1, "success": 1}
