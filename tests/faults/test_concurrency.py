"""500 alerts for the same action at once, from 20 threads, against one exporter and against
two replicas sharing one MariaDB database (the lock is ``GET_LOCK``): one GC runs, every other
request is recorded as skipped, and the audit log has a decision for each of the 500.

The stand-in deletes the rows but sends no callback (``gc_no_callback``): the test forwards
the callback itself when it chooses, so the run is in flight exactly as long as it must be."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.faults.harness import (
    AUTH,
    ScrapeWatch,
    assert_every_run_finished,
    audit_records,
    config,
    decisions,
    deliver_gc_callback,
    fingerprint,
    notification,
    outcomes,
    requests_total,
    wa_env,
    wait_finished,
)
from tests.support import DatabaseServer, ExporterProcess, new_prefix, run_exporter, wait_for
from tests.wa_standin.server import StandIn

pytestmark = pytest.mark.mysql

ALERTS, THREADS = 500, 20
# The run waits for the callback the test forwards; nothing may end it earlier, not even the
# row count, which falls at once and then stays put.
HELD_GC = {"callback_timeout": "60s", "settle_interval": "100s", "round_timeout": "120s"}


class Alertmanagers:
    """20 senders with keep-alive sessions, like Alertmanager's; alert ``seq`` goes to
    ``targets[seq % len(targets)]``, so replicas get theirs interleaved."""

    def __init__(self, targets: list[ExporterProcess]) -> None:
        self.targets = targets
        self._local = threading.local()

    def send(self, seqs: range, before: Callable[[int], None] = lambda seq: None
             ) -> dict[int, dict[str, Any]]:
        """Each alert's decision, by sequence number."""
        def one(seq: int) -> tuple[int, dict[str, Any]]:
            before(seq)
            session = getattr(self._local, "session", None) or requests.Session()
            self._local.session = session
            target = self.targets[seq % len(self.targets)]
            response = session.post(target.url + "/webhook/alertmanager", headers=AUTH,
                                    json=notification("gc", seq), timeout=30)
            assert response.status_code == 200, response.text
            [decision] = response.json()["decisions"]
            return seq, decision

        with ThreadPoolExecutor(THREADS) as pool:
            return dict(pool.map(one, seqs))


@dataclass
class World:
    db: DatabaseServer
    prefix: str
    standin: StandIn
    tmp_path: Path

    def exporter(self, name: str) -> Any:
        cfg = config(self.tmp_path, state_dir=self.tmp_path / name, allowed=("gc",),
                     actions={"gc": HELD_GC})
        return run_exporter(env={**self.db.env(self.prefix), **wa_env(self.standin)},
                            config=cfg, tmp_path=self.tmp_path)

    def complete_the_gc(self, runner: ExporterProcess) -> int:
        """Forward the WA client's callback of the one GC; return the rows it deleted."""
        assert self.standin.wait_gc_idle(timeout=30)
        deleted = int(self.standin.stats()["rows_deleted"])
        assert deleted > 0
        deliver_gc_callback(runner, deleted)
        return deleted


@pytest.fixture
def world(mysql: DatabaseServer, tmp_path: Path) -> Iterator[World]:
    prefix = new_prefix()
    mysql.create_database(prefix + "main", messages=300)
    with StandIn(mysql.url(prefix + "main")) as standin:
        standin.gc_no_callback()
        yield World(mysql, prefix, standin, tmp_path)


def test_500_alerts_from_20_threads_start_one_gc_and_record_every_other_as_skipped(
        world: World) -> None:
    state = world.tmp_path / "one"
    half = ALERTS // 2
    with world.exporter("one") as exporter:
        run_over = threading.Event()

        def second_half_after_the_run(seq: int) -> None:
            if seq >= half:
                assert run_over.wait(60)

        senders = Alertmanagers([exporter])
        with ScrapeWatch(exporter), ThreadPoolExecutor(1) as background:
            sending = background.submit(senders.send, range(ALERTS), second_half_after_the_run)
            try:
                # The first half is decided while the run waits for its callback.
                assert world.standin.wait_until(lambda s: s["message_gc_calls"] == 1,
                                                timeout=30)
                wait_for(lambda: len(decisions(audit_records(state))) >= half
                         or sending.done(), timeout=60, what="the first half decided")
                assert not sending.done(), sending.exception()
                deleted = world.complete_the_gc(exporter)
                [done] = wait_finished(state)
            finally:
                run_over.set()  # the second half now, or the senders would wait on a failure
            answers = sending.result(timeout=60)
        samples = exporter.metrics()

    assert world.standin.stats()["message_gc_calls"] == 1
    assert done["result"] == "success" and done["messages_deleted"] == deleted, done
    records = audit_records(state)
    by_seq = {r["fingerprint"]: r["outcome"] for r in decisions(records)}
    assert len(by_seq) == len(decisions(records)) == ALERTS
    assert by_seq == {fingerprint(seq): answer["outcome"] for seq, answer in answers.items()}
    counts = Counter(outcomes(records))
    assert counts == {"started": 1, "skipped_running": half - 1, "skipped_cooldown": half}
    assert all(by_seq[fingerprint(seq)] == "skipped_cooldown" for seq in range(half, ALERTS))
    assert requests_total(samples, "gc") == counts
    assert_every_run_finished(records)


def test_two_replicas_on_one_mariadb_run_one_gc_for_500_interleaved_alerts(
        world: World) -> None:
    with world.exporter("a") as first, world.exporter("b") as second:
        replicas = {"a": first, "b": second}
        with ScrapeWatch(first), ScrapeWatch(second):
            answers = Alertmanagers([first, second]).send(range(ALERTS))
        assert world.standin.stats()["message_gc_calls"] == 1
        [runner] = [name for name in replicas
                    if "started" in outcomes(audit_records(world.tmp_path / name))]
        deleted = world.complete_the_gc(replicas[runner])
        [done] = wait_finished(world.tmp_path / runner)
        totals = {name: requests_total(exporter.metrics(), "gc")
                  for name, exporter in replicas.items()}

    assert world.standin.stats()["message_gc_calls"] == 1
    assert done["result"] == "success" and done["messages_deleted"] == deleted, done
    everything: Counter[str] = Counter()
    for index, name in enumerate(replicas):
        records = audit_records(world.tmp_path / name)
        mine = {fingerprint(seq) for seq in range(index, ALERTS, 2)}
        assert {r["fingerprint"] for r in decisions(records)} == mine
        assert len(decisions(records)) == ALERTS // 2
        counts = Counter(outcomes(records))
        assert totals[name] == counts
        assert_every_run_finished(records)
        everything += counts
    assert everything == {"started": 1, "skipped_running": ALERTS - 1}
    assert Counter(a["outcome"] for a in answers.values()) == everything
    other = "b" if runner == "a" else "a"
    reasons = {r["reason"] for r in decisions(audit_records(world.tmp_path / other))}
    assert any("running on another replica" in reason for reason in reasons), reasons
