"""GC callbacks: strict parsing of what the WA client POSTs, and the inbox a running GC waits on."""

from __future__ import annotations

import json
import threading
import time

import pytest

from exporter.actions.callbacks import (
    MAX_BODY_BYTES,
    CallbackInbox,
    GcCallback,
    GcError,
    InvalidCallback,
)


def body(*gcs: dict[str, object]) -> bytes:
    return json.dumps({"services": [{"message": {"gc": gc}} for gc in gcs]}).encode()


def test_parses_single_node_multiconnect_and_failed_callbacks() -> None:
    assert CallbackInbox.parse(body({"messages_deleted": 5, "status": "complete"})) == [
        GcCallback(status="complete", messages_deleted=5)]
    assert CallbackInbox.parse(body(
        {"messages_deleted": 2, "status": "complete", "node": "wacore1:9dfe77618dba"},
        {"messages_deleted": 3, "status": "complete", "node": "wacore2:1234567890ab"},
    )) == [GcCallback("complete", 2, "wacore1:9dfe77618dba"),
           GcCallback("complete", 3, "wacore2:1234567890ab")]
    failed = CallbackInbox.parse(body({"status": "failed", "errors": [
        {"code": 1014, "title": "Internal error", "details": "disk full"}]}))
    assert failed == [GcCallback("failed", errors=(GcError(1014, "Internal error", "disk full"),))]
    assert failed[0].to_dict() == {"node": None, "status": "failed", "messages_deleted": None,
                                   "errors": [{"code": 1014, "title": "Internal error",
                                               "details": "disk full"}]}


def test_only_a_complete_callback_without_errors_is_clean() -> None:
    """A callback that says complete but carries errors is not a success."""
    [partial] = CallbackInbox.parse(body({"status": "complete", "messages_deleted": 3, "errors": [
        {"code": 1014, "title": "Internal error", "details": "GC did not finish"}]}))
    assert (partial.status, partial.messages_deleted) == ("complete", 3)
    assert partial.errors == (GcError(1014, "Internal error", "GC did not finish"),)
    assert not partial.clean
    assert GcCallback("complete", 3).clean
    assert not GcCallback("failed", errors=(GcError(1014, "Internal error"),)).clean


@pytest.mark.parametrize(("raw", "words"), [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", '"services" must be a non-empty list'),
    (b'{"services": []}', '"services" must be a non-empty list'),
    (b'{"services": [{"media": {"gc": {"status": "complete"}}}]}', "not a message GC callback"),
    (body({"status": "done", "messages_deleted": 1}), "status must be one of complete, failed"),
    (body({"status": "complete"}), "needs messages_deleted"),
    (body({"status": "complete", "messages_deleted": -1}), "whole number"),
    (body({"status": "complete", "messages_deleted": True}), "whole number"),
    (body({"status": "complete", "messages_deleted": "5"}), "whole number"),
    (body({"status": "complete", "messages_deleted": 1, "node": 7}), "node must be"),
    (body({"status": "failed"}), "non-empty on failure"),
    (body({"status": "failed", "errors": [{"title": "x"}]}), "errors[0].code must be a number"),
    (body({"status": "failed", "errors": ["boom"]}), "errors[0] must be an object"),
    (body(*[{"status": "complete", "messages_deleted": 0}] * 65), "more than 64"),
    (b" " * (MAX_BODY_BYTES + 1), "larger than"),
])
def test_malformed_callbacks_are_rejected_with_a_reason(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidCallback) as caught:
        CallbackInbox.parse(raw)
    assert words in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_wait_returns_when_every_node_has_called_back() -> None:
    inbox = CallbackInbox()
    nodes = ["wacore1:a", "wacore2:b"]
    since = time.monotonic()
    got: list[list[GcCallback]] = []
    waiter = threading.Thread(target=lambda: got.append(inbox.wait(since, nodes, timeout=10)))
    waiter.start()
    inbox.deliver([GcCallback("complete", 1, "wacore2:b")])
    inbox.deliver([GcCallback("complete", 9, "someone-else:c")])
    assert waiter.is_alive()  # still one node missing
    inbox.deliver([GcCallback("complete", 2, "wacore1:a"), GcCallback("complete", 7, "wacore1:a")])
    waiter.join(5)
    assert not waiter.is_alive()
    assert [(c.node, c.messages_deleted) for c in got[0]] == [("wacore1:a", 2), ("wacore2:b", 1)]


def test_wait_ignores_callbacks_from_before_and_returns_what_came_at_the_timeout() -> None:
    inbox = CallbackInbox()
    inbox.deliver([GcCallback("complete", 4)])
    since = time.monotonic()
    assert inbox.wait(since, [None], timeout=0.05) == []
    inbox.deliver([GcCallback("complete", 5, "wacore1:a")])
    assert [c.messages_deleted for c in inbox.wait(since, [None], timeout=1)] == [5]
    assert [c.node for c in inbox.wait(since, ["wacore1:a", "wacore2:b"], timeout=0.05)] == [
        "wacore1:a"]
    assert inbox.wait(since, [], timeout=10) == []
