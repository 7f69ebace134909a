"""Which database and node message-GC deletions are counted under, and the rows left after
a successful GC: what the pace rules are built on."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from exporter.actions.base import ActionResult, Request
from exporter.collectors.actions import ActionMetrics, deleted_by_source


def node(name: str | None, deleted: int | None) -> dict[str, Any]:
    return {"node": name, "answer": "processing", "status": "complete",
            "messages_deleted": deleted}


@pytest.mark.parametrize(("details", "expected"), [
    # one database, single node, completed by callback: database from the row counts
    ({"messages_deleted": 7, "rounds": 1, "databases_before": {"wa_m": 10},
      "databases_after": {"wa_m": 3}, "nodes": [node(None, 7)]}, {("wa_m", ""): 7}),
    # multiconnect: one callback per coreapp node
    ({"messages_deleted": 9, "rounds": 1, "databases_before": {"wa_m": 20},
      "databases_after": {"wa_m": 11}, "nodes": [node("wacore1:ab", 5), node("wacore2:cd", 4)]},
     {("wa_m", "wacore1:ab"): 5, ("wa_m", "wacore2:cd"): 4}),
    # completed by row count (no callback figures): the one database takes it all
    ({"messages_deleted": 6, "rounds": 1, "databases_before": {"wa_m": 10},
      "databases_after": {"wa_m": 4}, "nodes": [node(None, None)]}, {("wa_m", ""): 6}),
    # several databases, no callback figures: shared by row deltas, the rest unattributed
    ({"messages_deleted": 12, "rounds": 2, "databases_before": {"a": 10, "b": 8},
      "databases_after": {"a": 5, "b": 4}}, {("a", ""): 5, ("b", ""): 4, ("", ""): 3}),
    # several databases with node figures: nodes, no database
    ({"messages_deleted": 3, "rounds": 1, "databases_before": {"a": 10, "b": 8},
      "databases_after": {"a": 9, "b": 6}, "nodes": [node("n1", 3)]}, {("", "n1"): 3}),
    ({"messages_deleted": 0, "rounds": 1}, {}),
])
def test_deletions_by_database_and_node(details: dict[str, Any],
                                        expected: dict[tuple[str, str], int]) -> None:
    assert deleted_by_source(details) == expected
    assert sum(expected.values()) == details["messages_deleted"]


def test_rows_after_the_last_successful_gc() -> None:
    registry = CollectorRegistry()
    metrics = ActionMetrics(registry, ["gc"])
    details = {"messages_deleted": 4, "rounds": 1, "databases_before": {"wa_m": 10},
               "databases_after": {"wa_m": 6}, "nodes": [node(None, 4)]}
    metrics.finished(Request("gc", "schedule"), [""], ActionResult("success", details), 0, 1)
    metrics.finished(Request("gc", "schedule"), [""], ActionResult("failed", dict(
        details, databases_after={"wa_m": 9})), 1, 2)
    assert registry.get_sample_value("whatsapp_gc_rows_after_last_success",
                                     {"database": "wa_m"}) == 6
    assert registry.get_sample_value("whatsapp_gc_messages_deleted_total",
                                     {"database": "wa_m", "node": ""}) == 8
