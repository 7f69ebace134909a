"""The ``gc`` and ``media_gc`` actions against the WA stand-in, which deletes rows from a real
``messages`` table on MariaDB and PostgreSQL and POSTs its callbacks, in the payloads Meta
documents (SPEC §2), over HTTP to an inbox. Each verdict needs its evidence."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from exporter.actions.base import RunContext
from exporter.actions.callbacks import CallbackInbox, InvalidCallback
from exporter.actions.gc import GcAction, MediaGcAction
from exporter.config import (
    DatabaseSettings,
    GcSettings,
    MediaGcSettings,
    MessagesSettings,
    WaApiSettings,
)
from exporter.sources.database import MessagesSource, open_counting_source
from exporter.sources.wa_api import WaApiClient
from tests.support import ONLY_MESSAGES, ROOT, DatabaseServer, new_prefix
from tests.wa_standin.schema import message_rows, messages
from tests.wa_standin.server import StandIn

FAST = {"callback_timeout": 10, "settle_interval": 0.2, "round_timeout": 20, "round_pause": 0.01}


class InboxEndpoint:
    """A real HTTP hop standing in for the exporter's callback route: parse, then deliver."""

    def __init__(self, inbox: CallbackInbox) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    inbox.deliver(inbox.parse(raw))
                    status = 204
                except InvalidCallback:
                    status = 400
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/-/wa-callbacks"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class World:
    db: DatabaseServer
    database: str
    wa: StandIn
    inbox: CallbackInbox
    client: WaApiClient
    source: MessagesSource
    progress: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (kind, what became of it)

    def gc(self, **settings: Any) -> GcAction:
        return GcAction(self.client, self.source, self.inbox,
                        GcSettings.model_validate({**FAST, **settings}))

    def media_gc(self, callback_timeout: float = 10) -> MediaGcAction:
        return MediaGcAction(self.client, self.inbox,
                             MediaGcSettings(callback_timeout=callback_timeout))

    def context(self, **kwargs: Any) -> RunContext:
        def progress(event: str, **fields: Any) -> None:
            self.progress.append({"event": event, **fields})
        return RunContext(run_id="test", action="gc", trigger="manual", progress=progress,
                          **kwargs)

    @property
    def rounds(self) -> list[dict[str, Any]]:
        """The progress record of each finished round."""
        return [p for p in self.progress if p["event"] == "round"]

    def rows(self, status: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(messages)
        if status is not None:
            query = query.where(messages.c.status == status)
        with self.db.engine(self.database).connect() as conn:
            return int(conn.execute(query).scalar_one())


@pytest.fixture
def world_factory(request: pytest.FixtureRequest) -> Iterator[Any]:
    cleanup: list[Any] = []

    def make(db: DatabaseServer, rows: int, read_timeout: float = 2,
             beside: dict[str, int] | None = None, **standin: Any) -> World:
        outcomes: list[tuple[str, str]] = []
        """The stand-in GCs ``<prefix>wa``; ``beside`` names more WA databases under the same
        prefix (another install sharing the server) and their rows, which it leaves alone."""
        prefix = new_prefix()
        database = f"{prefix}wa"
        db.create_database(database, messages=rows)
        for name, count in (beside or {}).items():
            db.create_database(prefix + name, messages=count)
        inbox = CallbackInbox(lambda kind, outcome: outcomes.append((kind, outcome)))
        endpoint = InboxEndpoint(inbox)
        cleanup.append(endpoint.close)
        wa = StandIn(db.url(database), callback_url=endpoint.url, **standin).start()
        cleanup.append(wa.stop)
        client = WaApiClient(WaApiSettings.model_validate({
            "WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret",
            "retry_backoff": 0.01, "read_timeout": read_timeout}))
        cleanup.append(client.close)
        source = open_counting_source(DatabaseSettings.model_validate(db.env(prefix)),
                                      MessagesSettings(query_timeout=10))
        cleanup.append(source.close)
        return World(db, database, wa, inbox, client, source, outcomes=outcomes)

    yield make
    for close in reversed(cleanup):
        close()


def test_gc_completes_by_callback(db_server: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(db_server, 600)
    read_before = world.rows("read")
    result = world.gc().run(world.context())
    assert result.result == "success", result.details
    d = result.details
    assert d["rows_before"] == 600 and d["rows_after"] == 600 - read_before == world.rows()
    assert d["messages_deleted"] == read_before == world.wa.stats()["rows_deleted"]
    assert (d["rounds"], d["stopped"], d["large_table"]) == (1, "single_round", False)
    assert d["nodes"] == [{"node": None, "answer": "processing", "status": "complete",
                           "messages_deleted": read_before}]
    assert d["duration_seconds"] >= 0
    assert [p["completed_by"] for p in world.rounds] == ["callback"]
    assert world.wa.stats()["callbacks_sent"] == 1


def test_multiconnect_gc_waits_for_every_node(db_server: DatabaseServer,
                                              world_factory: Any) -> None:
    world = world_factory(db_server, 500, multiconnect=["wacore1", "wacore2", "wacore3"])
    read_before = world.rows("read")
    result = world.gc().run(world.context())
    assert result.result == "success", result.details
    nodes = result.details["nodes"]
    assert [n["node"] for n in nodes] == world.wa.node_ids
    assert {n["status"] for n in nodes} == {"complete"}
    assert sum(n["messages_deleted"] for n in nodes) == read_before
    assert result.details["messages_deleted"] == read_before
    assert world.rounds[0]["completed_by"] == "callback"


def test_without_callbacks_the_settled_row_count_completes_the_gc(
        db_server: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(db_server, 400, gc_batch_size=50)
    world.wa.gc_no_callback()
    read_before = world.rows("read")
    result = world.gc(callback_timeout=0.3).run(world.context())
    assert result.result == "success", result.details
    assert result.details["messages_deleted"] == read_before == world.wa.stats()["rows_deleted"]
    assert result.details["rows_after"] == 400 - read_before
    assert result.details["nodes"][0]["status"] == "no_callback"
    assert world.rounds[0]["completed_by"] == "row_count"
    assert world.wa.stats()["callbacks_sent"] == 0


def test_without_callbacks_the_row_count_is_watched_from_the_start(
        db_server: DatabaseServer, world_factory: Any) -> None:
    """The deployment does not forward callbacks: the round ends once the rows stop falling,
    not after waiting callback_timeout for a callback that never comes."""
    world = world_factory(db_server, 400, gc_batch_size=50)
    world.wa.gc_no_callback()
    read_before = world.rows("read")
    result = world.gc(callback_timeout=30, settle_interval=0.5, round_timeout=60).run(
        world.context())
    assert result.result == "success", result.details
    assert world.rounds[0]["completed_by"] == "row_count"
    assert result.details["duration_seconds"] < 30  # callback_timeout was not waited out
    assert result.details["messages_deleted"] == read_before == world.wa.stats()["rows_deleted"]


def test_a_gc_the_client_starts_slowly_is_not_cut_short(postgres: DatabaseServer,
                                                        world_factory: Any) -> None:
    """Rows stay put for 1.5 s after the request, then fall in 50-row steps 0.2 s apart:
    the round waits for the first fall (callback_timeout) and then for the last."""
    world = world_factory(postgres, 600, gc_delay=1.5, gc_batch_size=50, gc_batch_pause=0.2)
    world.wa.gc_no_callback()
    read_before = world.rows("read")
    result = world.gc(callback_timeout=10, settle_interval=0.6).run(world.context())
    assert result.result == "success", result.details
    assert world.rounds[0]["completed_by"] == "row_count"
    assert world.wa.stats()["gc_running"] == 0  # the client had finished
    assert result.details["messages_deleted"] == read_before == world.wa.stats()["rows_deleted"]
    assert world.rows("read") == 0 and result.details["rows_after"] == 600 - read_before


def test_no_callback_and_rows_that_never_fall_is_unconfirmed_after_callback_timeout(
        postgres: DatabaseServer, world_factory: Any) -> None:
    """Nothing shows that GC ran: not a success, so last_success does not move."""
    world = world_factory(postgres, 100, gc_delay=30)
    world.wa.gc_no_callback()
    result = world.gc(callback_timeout=1, settle_interval=0.3).run(world.context())
    assert result.result == "unconfirmed", result.details
    assert world.rounds[0]["completed_by"] == "no_change"
    assert result.details["messages_deleted"] == 0 and result.details["rows_after"] == 100
    assert result.details["duration_seconds"] >= 1  # the slow start was given its grace


def test_traffic_during_a_gc_without_callbacks_does_not_hold_the_round_open(
        postgres: DatabaseServer, world_factory: Any) -> None:
    """New messages keep arriving, so the count never stays equal; it stops falling, and
    that ends the round."""
    world = world_factory(postgres, 100)
    world.wa.gc_no_callback()
    stop = threading.Event()

    def traffic() -> None:
        engine = postgres.engine(world.database)
        # A steady 20 messages a second: unthrottled, a quiet machine's inserts outran the
        # GC's deletes and the count never fell, which is another case (no_change).
        for seed in itertools.count(1000):
            if stop.wait(0.05):
                break
            with engine.begin() as conn:
                conn.execute(messages.insert(), message_rows(1, seed=seed))
        engine.dispose()

    writer = threading.Thread(target=traffic)
    writer.start()
    try:
        result = world.gc(callback_timeout=5, round_timeout=20, settle_interval=0.5).run(
            world.context())
    finally:
        stop.set()
        writer.join()
    assert result.result == "success", result.details
    assert world.rounds[0]["completed_by"] == "row_count"
    assert 0 < result.details["messages_deleted"] <= world.wa.stats()["rows_deleted"]


def test_rows_still_falling_at_round_timeout_is_a_timeout(postgres: DatabaseServer,
                                                          world_factory: Any) -> None:
    world = world_factory(postgres, 400, gc_batch_size=10, gc_batch_pause=0.3)
    world.wa.gc_no_callback()
    result = world.gc(callback_timeout=0.5, round_timeout=1.5, settle_interval=0.6).run(
        world.context())
    assert result.result == "timeout", result.details
    assert result.details["rounds"] == 1 and world.rounds[0]["result"] == "timeout"
    assert world.rounds[0]["completed_by"] is None


@pytest.mark.parametrize(("settings", "rounds", "stopped", "deleted"), [
    # 400 read rows at most per round; 3000 rows of which about half are read.
    ({"large_table_rows": 1000, "max_rounds": 3}, 3, "max_rounds", 1200),
    ({"large_table_rows": 1000, "target_rows": 2300}, 2, "under_target", 800),
], ids=["max_rounds", "under_target"])
def test_large_table_gets_rounds(mysql: DatabaseServer, world_factory: Any,
                                 settings: dict[str, Any], rounds: int, stopped: str,
                                 deleted: int) -> None:
    world = world_factory(mysql, 3000, gc_max_rows_per_round=400)
    result = world.gc(**settings).run(world.context())
    assert result.result == "success", result.details
    assert (result.details["rounds"], result.details["stopped"]) == (rounds, stopped)
    assert result.details["messages_deleted"] == deleted == world.wa.stats()["rows_deleted"]
    assert result.details["rows_after"] == 3000 - deleted == world.rows()
    assert [p["round"] for p in world.rounds] == list(range(1, rounds + 1))
    assert [p["messages_deleted"] for p in world.rounds] == [400] * rounds
    assert world.wa.stats()["message_gc_calls"] == rounds


def test_rounds_stop_when_a_round_deletes_nothing(postgres: DatabaseServer,
                                                 world_factory: Any) -> None:
    world = world_factory(postgres, 3000)
    unread = 3000 - world.rows("read")
    result = world.gc(large_table_rows=1000).run(world.context())
    assert result.result == "success", result.details
    assert (result.details["rounds"], result.details["stopped"]) == (2, "nothing_deleted")
    assert result.details["rows_after"] == unread == world.rows()
    assert [p["messages_deleted"] for p in world.rounds] == [3000 - unread, 0]


def test_run_gc_with_default_settings_and_no_callback_ends_within_a_minute_of_the_last_fall(
        postgres: DatabaseServer, tmp_path: Path) -> None:
    """``wa-exporter run gc`` has no endpoint for callbacks, as in most deployments. The client
    starts 12 s late (longer than a reading apart), deletes for about 3 s, sends nothing. With
    the default settings (callback_timeout 5m, settle_interval 30s) the run must end within a
    minute after the rows stop falling, having printed where it is on stderr."""
    prefix = new_prefix()
    database = prefix + "wa"
    engine = postgres.create_database(database, messages=1000)
    with engine.connect() as conn:
        read = conn.execute(sa.select(sa.func.count()).select_from(messages)
                            .where(messages.c.status == "read")).scalar_one()
    engine.dispose()
    config = tmp_path / "wa-exporter.yml"
    config.write_text("collectors:\n" + ONLY_MESSAGES + "actions:\n  allowed: [gc]\n"
                      f"  state_dir: {tmp_path / 'state'}\n  schedules: []\n")
    with StandIn(postgres.url(database), gc_delay=12, gc_batch_size=100,
                 gc_batch_pause=0.5) as wa:
        wa.gc_no_callback()
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("WA_")},
               **postgres.env(prefix), "WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin",
               "WA_WEB_PASSWORD": "secret"}
        run = subprocess.Popen([sys.executable, "-m", "exporter", "run", "gc",
                                "--config.file", str(config)], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert wa.wait_until(lambda s: s["message_gc_calls"] == 1 and not s["gc_running"],
                                 timeout=60), "the stand-in's GC did not finish"
            try:
                out, err = run.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail("run gc was still running a minute after the rows stopped falling")
        finally:
            if run.poll() is None:
                run.kill()
                run.communicate()
        deleted = wa.stats()["rows_deleted"]
    assert run.returncode == 0, err
    result = json.loads(out)["result"]
    assert result["result"] == "success" and result["rounds"] == 1
    assert result["messages_deleted"] == read == deleted
    progress = [line for line in err.splitlines() if line.startswith("wa-exporter: gc round")]
    assert progress == [
        "wa-exporter: gc round 1: started at 1000 rows; waiting for the callbacks of 1 node(s) "
        "or for the row count to stop falling",
        f"wa-exporter: gc round 1 success: rows 1000 -> {1000 - read}, {read} deleted, "
        "the row count fell and settled"]


# As Meta documents a GC callback's error: code and details, no title.
ROUND_ERROR = {"code": 1014, "details": "GC did not finish"}


@pytest.mark.parametrize("status", ["failed", "complete"])
def test_large_table_repeats_rounds_until_the_callbacks_come_back_clean(
        db_server: DatabaseServer, world_factory: Any, status: str) -> None:
    """The guide: above 10 M rows more than one call may be needed "so that the callback comes
    back without errors".
    Two rounds call back with errors (failed, or complete with errors), the third is clean."""
    world = world_factory(db_server, 3000, gc_max_rows_per_round=400,
                          multiconnect=["wacore1", "wacore2"])
    world.wa.gc_fail_rounds(2, status=status, details=ROUND_ERROR["details"])
    result = world.gc(large_table_rows=1000, target_rows=2700).run(world.context())
    assert [r["result"] for r in world.rounds] == ["failed", "failed", "success"]
    assert result.result == "success", result.details
    d = result.details
    assert (d["rounds"], d["stopped"], d.get("rounds_with_errors")) == (3, "under_target", 2)
    assert "errors" not in d
    assert [r["completed_by"] for r in world.rounds] == ["callback"] * 3
    assert world.rounds[0]["errors"] == [dict(ROUND_ERROR, node=node) for node in world.wa.node_ids]
    assert d["messages_deleted"] == world.wa.stats()["rows_deleted"] == 3000 - world.rows()
    assert world.wa.stats()["message_gc_calls"] == 3


def test_large_table_whose_callbacks_keep_reporting_errors_fails_at_max_rounds(
        mysql: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(mysql, 1500)
    world.wa.gc_fail_rounds(10, details=ROUND_ERROR["details"])
    result = world.gc(large_table_rows=1000, max_rounds=3).run(world.context())
    assert result.result == "failed", result.details
    d = result.details
    assert (d["rounds"], d.get("stopped"), d.get("rounds_with_errors")) == (3, "max_rounds", 3)
    assert d["errors"] == [dict(ROUND_ERROR, node=None)]
    assert [r["result"] for r in world.rounds] == ["failed"] * 3
    assert world.wa.stats()["message_gc_calls"] == 3 and world.rows() == 1500


def test_complete_callback_with_errors_below_the_bound_is_a_failure(
        postgres: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(postgres, 300)
    world.wa.gc_fail_rounds(1, status="complete", details=ROUND_ERROR["details"])
    result = world.gc().run(world.context())
    assert result.result == "failed", result.details
    assert result.details["errors"] == [dict(ROUND_ERROR, node=None)]
    assert (result.details["rounds"], result.details["large_table"]) == (1, False)
    assert result.details["nodes"][0]["status"] == "complete"
    assert result.details["messages_deleted"] == world.wa.stats()["rows_deleted"] > 0
    assert world.wa.stats()["message_gc_calls"] == 1


def test_the_large_table_bound_is_per_database_not_the_sum(
        postgres: DatabaseServer, world_factory: Any) -> None:
    """Two databases of 600 rows under one prefix: 1200 in all, but neither is large."""
    world = world_factory(postgres, 600, beside={"other": 600})
    result = world.gc(large_table_rows=1000).run(world.context())
    assert result.result == "success", result.details
    d = result.details
    assert (d["rounds"], d["stopped"], d["large_table"]) == (1, "single_round", False)
    assert d["rows_before"] == 1200 and set(d["databases_before"]) == {
        world.database, world.database.removesuffix("wa") + "other"}


def test_rounds_go_on_while_a_large_database_is_above_target(
        mysql: DatabaseServer, world_factory: Any) -> None:
    """A large database beside a small one: rounds stop once the large one is under the
    target, although both together are still above it."""
    world = world_factory(mysql, 2000, gc_max_rows_per_round=400, beside={"other": 900})
    assert world.rows("read") >= 800
    result = world.gc(large_table_rows=1000, target_rows=1300).run(world.context())
    assert result.result == "success", result.details
    d = result.details
    assert (d["rounds"], d["stopped"]) == (2, "under_target")
    assert d["large_databases"] == [world.database]
    assert d["databases_after"][world.database] == 1200 == world.rows()
    assert d["rows_after"] == 2100


@pytest.mark.parametrize("multiconnect", [None, ["wacore1", "wacore2"]], ids=["single", "multi"])
def test_failed_callback_is_a_failed_run_with_the_wa_errors(
        mysql: DatabaseServer, world_factory: Any, multiconnect: list[str] | None) -> None:
    world = world_factory(mysql, 200, multiconnect=multiconnect)
    world.wa.gc_fail(details="Could not acquire GC lock")
    result = world.gc().run(world.context())
    assert result.result == "failed", result.details
    nodes = world.wa.node_ids or [None]
    assert result.details["errors"] == [
        {"code": 1014, "details": "Could not acquire GC lock", "node": node} for node in nodes]
    assert {n["status"] for n in result.details["nodes"]} == {"failed"}
    assert result.details["messages_deleted"] == 0 and world.rows() == 200
    assert world.outcomes == [("message", "matched")] * len(nodes)
    # Every documented failure callback was accepted (2xx), not refused for lack of a title.
    assert world.wa.wait_until(lambda stats: stats["callbacks_sent"] == len(nodes), timeout=5)
    assert [c["status"] for c in world.wa.callbacks()] == [204] * len(nodes)


def test_multiconnect_with_one_node_failed_is_not_a_success(
        db_server: DatabaseServer, world_factory: Any) -> None:
    """wacore2 reports failure, the others complete and the rows fall: the round failed."""
    world = world_factory(db_server, 600, multiconnect=["wacore1", "wacore2", "wacore3"])
    world.wa.gc_fail_nodes(["wacore2"], details="Could not delete messages")
    result = world.gc().run(world.context())
    assert result.result == "failed", result.details
    failed = world.wa.node_ids[1]
    assert result.details["errors"] == [{"code": 1014, "details": "Could not delete messages",
                                         "node": failed}]
    assert [(n["node"], n["status"]) for n in result.details["nodes"]] == [
        (world.wa.node_ids[0], "complete"), (failed, "failed"),
        (world.wa.node_ids[2], "complete")]
    assert world.rounds[0]["completed_by"] == "callback"


@pytest.mark.parametrize("reported", [10**9, 10**23, 1e23],
                         ids=["above-the-table", "beyond-any-count", "float"])
def test_an_implausible_deleted_count_stays_out_of_the_count(
        postgres: DatabaseServer, world_factory: Any, reported: float) -> None:
    world = world_factory(postgres, 300)
    world.wa.gc_report_deleted(reported)
    result = world.gc().run(world.context())
    assert result.result == "success", result.details  # the client says complete
    assert result.details["messages_deleted"] == 0
    if reported == 10**9:  # a count, but more than the 300 rows the table held
        assert world.rounds[0]["implausible_counts"] == [{"node": None, "reported": reported}]
    else:  # not a count at all: unknown
        assert result.details["nodes"][0]["messages_deleted"] is None


@pytest.mark.mysql
def test_the_round_watch_counts_exactly_within_the_collectors_query_timeout(
        mysql: DatabaseServer) -> None:
    """Why the watch counts exactly: InnoDB's TABLE_ROWS is a sampled estimate that need not
    move while the client deletes, and a figure that stops moving while rows still go would
    end a round early. So the watch's source counts exactly whatever exact_count_below says,
    and its queries run under the collector's query_timeout: a count stuck behind a lock
    ends within it instead of holding the round."""
    prefix = new_prefix()
    database = prefix + "wa"
    engine = mysql.create_database(database, messages=500)
    source = open_counting_source(DatabaseSettings.model_validate(mysql.env(prefix)),
                                  MessagesSettings(exact_count_below=0, query_timeout=1))
    try:
        first = source.read().tables[database]
        with engine.begin() as conn:
            conn.execute(messages.delete().where(messages.c.id <= 100))
        second = source.read().tables[database]
        assert (first.rows, first.exact, second.rows, second.exact) == (500, True, 400, True)
        with engine.connect() as locker:
            locker.execute(sa.text("LOCK TABLES messages WRITE"))
            started = time.monotonic()
            stuck = source.read()
            waited = time.monotonic() - started
            locker.execute(sa.text("UNLOCK TABLES"))
        assert database in stuck.errors and stuck.errors[database].kind == "timeout"
        assert waited < 10
    finally:
        source.close()
        engine.dispose()


def test_api_error_is_an_error_with_the_wa_code(postgres: DatabaseServer,
                                                world_factory: Any) -> None:
    world = world_factory(postgres, 50)
    world.wa.fail_next("message_gc", count=3, status=500, code=1014, details="Service down")
    result = world.gc().run(world.context())
    assert result.result == "error"
    error = result.details["error"]
    assert (error["kind"], error["status"], error["code"], error["details"]) == (
        "http", 500, 1014, "Service down")
    assert result.details["rows_before"] == 50 and result.details["rounds"] == 0
    assert world.wa.stats()["message_gc_calls"] == 0


def test_hung_api_is_an_error_of_kind_timeout(postgres: DatabaseServer,
                                              world_factory: Any) -> None:
    world = world_factory(postgres, 10, read_timeout=0.3)
    world.wa.hang("message_gc")
    result = world.gc().run(world.context())
    assert result.result == "error" and result.details["error"]["kind"] == "timeout"


def test_unreachable_database_is_an_error_before_any_api_call(
        postgres: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(postgres, 10)
    world.source = open_counting_source(
        DatabaseSettings.model_validate({**postgres.env(new_prefix()), "WA_DB_PORT": "1"}),
        MessagesSettings(query_timeout=2))
    result = world.gc().run(world.context())
    assert result.result == "error"
    assert result.details["error"]["kind"] == "database_connect"
    assert world.wa.stats()["requests"] == {}


def test_dry_run_calls_nothing(postgres: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(postgres, 10)
    for action in (world.gc(), world.media_gc()):
        result = action.run(world.context(dry_run=True))
        assert result.result == "dry_run"
        assert result.details["would_call"].startswith("PUT /v1/services/")
    stats = world.wa.stats()
    assert (stats["requests"], stats["logins"]) == ({}, 0)
    assert world.rows() == 10


def test_cancel_ends_the_wait_for_callbacks(postgres: DatabaseServer,
                                            world_factory: Any) -> None:
    world = world_factory(postgres, 10)
    world.wa.gc_delay(30)
    context = world.context()
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(world.gc().run(context)))
    runner.start()
    assert world.wa.wait_until(lambda s: s["message_gc_calls"] == 1, timeout=10)
    context.cancel.set()
    runner.join(5)
    assert not runner.is_alive()
    assert results[0].result == "interrupted"


def old_media(directory: Path, count: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    old = 40 * 86400
    for i in range(count):
        path = directory / f"old-{i}.jpg"
        path.write_bytes(b"x")
        os.utime(path, (path.stat().st_atime - old, path.stat().st_mtime - old))
    (directory / "new.jpg").write_bytes(b"y")


def test_media_gc_is_a_success_only_on_its_completion_callback(
        postgres: DatabaseServer, world_factory: Any, tmp_path: Path) -> None:
    """Meta's reference puts the media completion under "message" with items_deleted: it is
    the media GC's, not a message GC's."""
    old_media(tmp_path / "media", 3)
    world = world_factory(postgres, 0, media_dir=tmp_path / "media", media_gc_delay=0.5)
    result = world.media_gc().run(world.context())
    assert result.result == "success", result.details
    assert (result.details["items_deleted"], result.details["completed_by"]) == (3, "callback")
    assert "messages_deleted" not in result.details
    assert result.details["nodes"] == [{"node": None, "answer": "processing"}]
    # The stand-in logs a callback once its POST is answered, which may be after the GC heard it.
    assert world.wa.wait_until(lambda stats: stats["callbacks_sent"] == 1, timeout=5)
    assert world.wa.callbacks()[0]["payload"] == {"services": [{"message": {"gc": {
        "items_deleted": 3, "status": "complete"}}}]}
    assert world.outcomes == [("media", "matched")]


def test_media_gc_is_not_a_success_before_its_callback(
        postgres: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(postgres, 0, media_gc_delay=30)
    context = world.context()
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.append(world.media_gc(60).run(context)))
    runner.start()
    assert world.wa.wait_until(lambda s: s["media_gc_calls"] == 1, timeout=10)
    runner.join(1.5)
    assert runner.is_alive() and not results  # "processing" is not done
    context.cancel.set()
    runner.join(5)
    assert results[0].result == "interrupted"


def test_media_gc_failure_callback_fails_it(postgres: DatabaseServer,
                                            world_factory: Any) -> None:
    world = world_factory(postgres, 0)
    world.wa.media_gc_fail(details="Could not delete media files")
    result = world.media_gc().run(world.context())
    assert result.result == "failed", result.details
    assert result.details["errors"] == [{"code": 1014,
                                         "details": "Could not delete media files"}]
    assert result.details["items_deleted"] == 0


def test_media_gc_without_a_callback_is_unconfirmed(postgres: DatabaseServer,
                                                     world_factory: Any) -> None:
    world = world_factory(postgres, 0)
    world.wa.media_gc_no_callback()
    result = world.media_gc(callback_timeout=1).run(world.context())
    assert result.result == "unconfirmed", result.details
    assert world.wa.wait_gc_idle(5)


def test_media_gc_conflict_is_an_error_with_the_wa_code(
        postgres: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(postgres, 0, media_gc_delay=30)
    world.wa.media_gc_no_callback()
    first = world.media_gc(callback_timeout=0.2).run(world.context())
    second = world.media_gc().run(world.context())
    assert first.result == "unconfirmed"
    assert second.result == "error"
    assert (second.details["error"]["status"], second.details["error"]["code"]) == (409, 1015)
    assert "duration_seconds" in second.details
