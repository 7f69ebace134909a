"""The gc action's rounds, hermetically: a scripted WA client that deletes from in-memory
tables and delivers its callbacks to the inbox, and a source that counts those tables.
The real stand-in and databases prove the same in tests/integration/test_gc.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from exporter.actions.base import RunContext
from exporter.actions.callbacks import CallbackInbox, GcCallback, GcError
from exporter.actions.gc import GcAction, progress_line
from exporter.config import GcSettings
from exporter.sources.database import MessagesSource, RowSource, ServerReading, TableReading
from exporter.sources.wa_api import GcStarted, WaApiClient
from exporter.vocabulary import GcKind

FAST = {"callback_timeout": 0.3, "settle_interval": 0.03, "round_timeout": 5,
        "round_pause": 0.001}
ERROR = GcError(1014, "GC did not finish")  # as Meta's callbacks carry it: no title
MESSAGE = GcKind.MESSAGE


@dataclass
class Round:
    """What the client does for one PUT: rows deleted per database, and how it calls back."""

    deleted: dict[str, int] = field(default_factory=dict)
    callback: str | None = "complete"  # complete, failed, partial (complete + errors), None
    processing: bool = True
    # Multiconnect: each node's callback (complete, failed, or None for none); the deleted
    # rows are reported by the first node that completes.
    nodes: dict[str, str | None] | None = None
    reported: int | None = None  # what the callback says was deleted, if not the truth


@dataclass
class FakeWa:
    tables: dict[str, int]
    inbox: CallbackInbox
    script: list[Round]
    url: str = "https://wa.invalid"
    calls: int = 0

    def message_gc(self) -> GcStarted:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if not step.processing:
            return GcStarted({None: "failed"})
        for database, rows in step.deleted.items():
            self.tables[database] -= rows
        deleted = sum(step.deleted.values()) if step.reported is None else step.reported
        if step.nodes is not None:
            for node, status in step.nodes.items():
                if status == "complete":
                    self.inbox.deliver([GcCallback(MESSAGE, "complete", deleted, node)])
                    deleted = 0
                elif status == "failed":
                    self.inbox.deliver([GcCallback(MESSAGE, "failed", None, node, (ERROR,))])
            return GcStarted(dict.fromkeys(step.nodes, "processing"))
        if step.callback == "complete":
            self.inbox.deliver([GcCallback(MESSAGE, "complete", deleted)])
        elif step.callback == "partial":
            self.inbox.deliver([GcCallback(MESSAGE, "complete", deleted, errors=(ERROR,))])
        elif step.callback == "failed":
            self.inbox.deliver([GcCallback(MESSAGE, "failed", errors=(ERROR,))])
        return GcStarted({None: "processing"})


@dataclass
class FakeCount:
    tables: dict[str, int]

    def read(self) -> ServerReading:
        return ServerReading({name: TableReading(name, rows, size_bytes=0,
                                                 source=RowSource.COUNT)
                              for name, rows in self.tables.items()})


@dataclass
class World:
    tables: dict[str, int]
    script: list[Round]
    inbox: CallbackInbox = field(default_factory=CallbackInbox)
    progress: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.wa = FakeWa(self.tables, self.inbox, self.script)

    def run(self, **settings: Any) -> tuple[str, dict[str, Any]]:
        action = GcAction(cast(WaApiClient, self.wa),
                          cast(MessagesSource, FakeCount(self.tables)), self.inbox,
                          GcSettings.model_validate({**FAST, **settings}))
        def record(event: str, **fields: Any) -> None:
            self.progress.append((event, fields))

        result = action.run(RunContext("r1", "gc", "manual", progress=record))
        return result.result, result.details

    @property
    def rounds(self) -> list[dict[str, Any]]:
        return [fields for event, fields in self.progress if event == "round"]


@pytest.mark.parametrize("error", ["failed", "partial"])
def test_a_large_table_is_called_again_until_a_round_comes_back_clean(error: str) -> None:
    world = World({"wa": 3000}, [Round(callback=error), Round(callback=error),
                                 Round({"wa": 500})])
    result, details = world.run(large_table_rows=1000, target_rows=2700)
    assert (result, details["rounds"], details["stopped"]) == ("success", 3, "under_target")
    assert details["rounds_with_errors"] == 2 and "errors" not in details
    assert [r["result"] for r in world.rounds] == ["failed", "failed", "success"]


def test_a_large_table_whose_rounds_all_report_errors_fails_at_max_rounds() -> None:
    world = World({"wa": 3000}, [Round(callback="failed")])
    result, details = world.run(large_table_rows=1000, max_rounds=4)
    assert (result, details["rounds"], details["stopped"]) == ("failed", 4, "max_rounds")
    assert details["errors"] == [{"code": 1014, "details": "GC did not finish", "node": None}]
    assert world.wa.calls == 4


@pytest.mark.parametrize("error", ["failed", "partial"])
def test_below_the_bound_a_callback_with_errors_fails_the_run(error: str) -> None:
    world = World({"wa": 900}, [Round({"wa": 100} if error == "partial" else {}, error)])
    result, details = world.run(large_table_rows=1000)
    assert (result, details["rounds"], world.wa.calls) == ("failed", 1, 1)
    assert details["errors"][0]["code"] == 1014


def test_no_node_processing_is_not_retried_even_on_a_large_table() -> None:
    world = World({"wa": 3000}, [Round(processing=False)])
    result, details = world.run(large_table_rows=1000)
    assert (result, details["rounds"], world.wa.calls) == ("failed", 1, 1)


def test_large_is_judged_per_database() -> None:
    world = World({"a": 600, "b": 600}, [Round({"a": 100})])
    result, details = world.run(large_table_rows=1000)
    assert (result, details["rounds"], details["stopped"]) == ("success", 1, "single_round")
    assert (details["large_table"], details["large_databases"]) == (False, [])


def test_rounds_go_on_while_a_large_database_is_at_or_above_target() -> None:
    world = World({"big": 2000, "small": 900}, [Round({"big": 400})])
    result, details = world.run(large_table_rows=1000, target_rows=1300)
    assert (result, details["rounds"], details["stopped"]) == ("success", 2, "under_target")
    assert details["databases_after"] == {"big": 1200, "small": 900}


def test_without_a_callback_the_row_count_completes_the_round() -> None:
    world = World({"wa": 500}, [Round({"wa": 200}, callback=None)])
    result, details = world.run(callback_timeout=30, round_timeout=60)
    assert (result, world.rounds[0]["completed_by"], details["messages_deleted"]) == (
        "success", "row_count", 200)
    assert details["duration_seconds"] < 30


def test_no_callback_and_rows_that_never_fall_is_unconfirmed_not_success() -> None:
    """Nothing shows that GC ran at all: it must not pass for a success (nor move
    last_success, which would keep WhatsAppMessageGCOverdue quiet)."""
    world = World({"wa": 500}, [Round(callback=None)])
    result, details = world.run()
    assert (result, world.rounds[0]["completed_by"], details["messages_deleted"]) == (
        "unconfirmed", "no_change", 0)


def test_a_large_table_stops_at_an_unconfirmed_round() -> None:
    world = World({"wa": 3000}, [Round(callback=None)])
    result, details = world.run(large_table_rows=1000)
    assert (result, details["rounds"], world.wa.calls) == ("unconfirmed", 1, 1)


def test_multiconnect_with_one_failed_node_is_a_failed_round() -> None:
    world = World({"wa": 900}, [Round({"wa": 300}, nodes={"wacore1:a": "complete",
                                                         "wacore2:b": "failed"})])
    result, details = world.run()
    assert (result, world.rounds[0]["completed_by"]) == ("failed", "callback")
    assert details["errors"] == [{"code": 1014, "details": "GC did not finish",
                                  "node": "wacore2:b"}]
    assert [(n["node"], n["status"]) for n in details["nodes"]] == [
        ("wacore1:a", "complete"), ("wacore2:b", "failed")]


def test_multiconnect_with_one_failed_node_on_a_large_table_calls_again() -> None:
    world = World({"wa": 3000}, [
        Round({"wa": 300}, nodes={"wacore1:a": "complete", "wacore2:b": "failed"}),
        Round({"wa": 300}, nodes={"wacore1:a": "complete", "wacore2:b": "complete"})])
    result, details = world.run(large_table_rows=1000, target_rows=2500)
    assert (result, details["rounds"], details["stopped"]) == ("success", 2, "under_target")
    assert [r["result"] for r in world.rounds] == ["failed", "success"]


def test_callbacks_from_some_nodes_only_are_unconfirmed_even_when_rows_fell() -> None:
    world = World({"wa": 900}, [Round({"wa": 300}, nodes={"wacore1:a": "complete",
                                                         "wacore2:b": None})])
    result, details = world.run(callback_timeout=30, round_timeout=60)
    assert (result, world.rounds[0]["completed_by"]) == ("unconfirmed", "row_count")
    assert details["messages_deleted"] == 300  # the rows fell: that much is known


@pytest.mark.parametrize("reported", [10**12, 901])
def test_a_deleted_count_above_the_rows_the_table_held_is_kept_out(reported: int) -> None:
    world = World({"wa": 900}, [Round({"wa": 300}, reported=reported)])
    result, details = world.run()
    assert result == "success"  # the callback says complete: only its figure is wrong
    assert details["messages_deleted"] == 0
    assert world.rounds[0]["implausible_counts"] == [{"node": None, "reported": reported}]


def test_a_deleted_count_the_table_could_hold_is_counted() -> None:
    world = World({"wa": 900}, [Round({"wa": 300}, reported=900)])
    _, details = world.run()
    assert details["messages_deleted"] == 900 and "implausible_counts" not in world.rounds[0]


def test_progress_lines_say_rows_before_and_after_and_how_the_round_completed() -> None:
    world = World({"wa": 3000}, [Round(callback="failed"), Round({"wa": 500}, callback=None)])
    world.run(large_table_rows=1000, target_rows=2700)
    lines = [progress_line(event, fields) for event, fields in world.progress]
    assert lines == [
        "gc round 1: started at 3000 rows; waiting for the callbacks of 1 node(s) or for the "
        "row count to stop falling",
        "gc round 1 failed: rows 3000 -> 3000, 0 deleted, every node called back; errors: 1014: "
        "GC did not finish",
        "gc round 2: started at 3000 rows; waiting for the callbacks of 1 node(s) or for the "
        "row count to stop falling",
        "gc round 2 success: rows 3000 -> 2500, 500 deleted, the row count fell and settled"]
    assert progress_line("finished", {}) is None
