"""The ``gc`` and ``media_gc`` actions against the WA stand-in, which deletes rows from a real
``messages`` table on MariaDB and PostgreSQL and POSTs its callbacks over HTTP to an inbox."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from exporter.actions.base import RunContext
from exporter.actions.callbacks import CallbackInbox, InvalidCallback
from exporter.actions.gc import GcAction, MediaGcAction, open_counting_source
from exporter.config import DatabaseSettings, GcSettings, MessagesSettings, WaApiSettings
from exporter.sources.database import MessagesSource
from exporter.sources.wa_api import WaApiClient
from tests.support import DatabaseServer, new_prefix
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

    def gc(self, **settings: Any) -> GcAction:
        return GcAction(self.client, self.source, self.inbox,
                        GcSettings.model_validate({**FAST, **settings}))

    def context(self, **kwargs: Any) -> RunContext:
        def progress(event: str, **fields: Any) -> None:
            self.progress.append({"event": event, **fields})
        return RunContext(run_id="test", action="gc", trigger="manual", progress=progress,
                          **kwargs)

    def rows(self, status: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(messages)
        if status is not None:
            query = query.where(messages.c.status == status)
        with self.db.engine(self.database).connect() as conn:
            return int(conn.execute(query).scalar_one())


@pytest.fixture
def world_factory(request: pytest.FixtureRequest) -> Iterator[Any]:
    cleanup: list[Any] = []

    def make(db: DatabaseServer, rows: int, read_timeout: float = 2, **standin: Any) -> World:
        prefix = new_prefix()
        database = f"{prefix}wa"
        db.create_database(database, messages=rows)
        inbox = CallbackInbox()
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
        return World(db, database, wa, inbox, client, source)

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
    assert [p["completed_by"] for p in world.progress] == ["callback"]
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
    assert world.progress[0]["completed_by"] == "callback"


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
    assert world.progress[0]["completed_by"] == "row_count"
    assert world.wa.stats()["callbacks_sent"] == 0


def test_neither_callback_nor_settled_count_in_time_is_a_timeout(
        postgres: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(postgres, 100)
    world.wa.gc_no_callback()
    # New messages keep arriving, so the row count never settles.
    stop = threading.Event()

    def traffic() -> None:
        engine = postgres.engine(world.database)
        for seed in itertools.count(1000):
            if stop.is_set():
                break
            with engine.begin() as conn:
                conn.execute(messages.insert(), message_rows(1, seed=seed))
        engine.dispose()

    writer = threading.Thread(target=traffic)
    writer.start()
    try:
        result = world.gc(callback_timeout=0.2, round_timeout=0.8, settle_interval=0.1).run(
            world.context())
    finally:
        stop.set()
        writer.join()
    assert result.result == "timeout", result.details
    assert result.details["rounds"] == 1 and world.progress[0]["result"] == "timeout"


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
    assert [p["round"] for p in world.progress] == list(range(1, rounds + 1))
    assert [p["messages_deleted"] for p in world.progress] == [400] * rounds
    assert world.wa.stats()["message_gc_calls"] == rounds


def test_rounds_stop_when_a_round_deletes_nothing(postgres: DatabaseServer,
                                                 world_factory: Any) -> None:
    world = world_factory(postgres, 3000)
    unread = 3000 - world.rows("read")
    result = world.gc(large_table_rows=1000).run(world.context())
    assert result.result == "success", result.details
    assert (result.details["rounds"], result.details["stopped"]) == (2, "nothing_deleted")
    assert result.details["rows_after"] == unread == world.rows()
    assert [p["messages_deleted"] for p in world.progress] == [3000 - unread, 0]


@pytest.mark.parametrize("multiconnect", [None, ["wacore1", "wacore2"]], ids=["single", "multi"])
def test_failed_callback_is_a_failed_run_with_the_wa_errors(
        mysql: DatabaseServer, world_factory: Any, multiconnect: list[str] | None) -> None:
    world = world_factory(mysql, 200, multiconnect=multiconnect)
    world.wa.gc_fail(details="Could not acquire GC lock")
    result = world.gc().run(world.context())
    assert result.result == "failed", result.details
    nodes = world.wa.node_ids or [None]
    assert result.details["errors"] == [
        {"code": 1014, "title": "Internal error", "details": "Could not acquire GC lock",
         "node": node} for node in nodes]
    assert {n["status"] for n in result.details["nodes"]} == {"failed"}
    assert result.details["messages_deleted"] == 0 and world.rows() == 200


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
    for action in (world.gc(), MediaGcAction(world.client)):
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


def test_media_gc_success_and_conflict(postgres: DatabaseServer, world_factory: Any) -> None:
    world = world_factory(postgres, 0)
    world.wa.media_gc_delay(30)
    first = MediaGcAction(world.client).run(world.context())
    second = MediaGcAction(world.client).run(world.context())
    assert first.result == "success"
    assert first.details["nodes"] == [{"node": None, "answer": "processing"}]
    assert second.result == "error"
    assert (second.details["error"]["status"], second.details["error"]["code"]) == (409, 1015)
    assert "duration_seconds" in second.details
