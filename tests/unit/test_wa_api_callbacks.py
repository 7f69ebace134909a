"""GC callbacks as Meta documents them (SPEC §2): parsing what the documentation shows,
tolerating what it omits, and the inbox that matches each callback to the GC waiting for it."""

from __future__ import annotations

import json
import threading

import pytest

from exporter.actions.callbacks import (
    MAX_BODY_BYTES,
    CallbackInbox,
    GcCallback,
    GcError,
    InvalidCallback,
)
from exporter.vocabulary import CallbackOutcome, GcKind

MESSAGE, MEDIA = GcKind.MESSAGE, GcKind.MEDIA

# Meta's documented examples, word for word (SPEC §2).
MESSAGE_COMPLETE = b'{"services":[{"message":{"gc":{"messages_deleted":5,"status":"complete"}}}]}'
MESSAGE_FAILED = (b'{"services":[{"message":{"gc":{"status":"failed","errors":'
                  b'[{"code":1014,"details":"Could not delete media files"}]}}}]}')
MEDIA_COMPLETE = b'{"services":[{"message":{"gc":{"items_deleted":5,"status":"complete"}}}]}'
MEDIA_FAILED = (b'{"services":[{"media":{"gc":{"items_deleted":0,"errors":[{"code":1014,'
                b'"details":"Could not delete media files"}],"status":"failed"}}}]}')


def body(*gcs: dict[str, object], service: str = "message") -> bytes:
    return json.dumps({"services": [{service: {"gc": gc}} for gc in gcs]}).encode()


def test_the_documented_message_gc_callbacks_parse() -> None:
    assert CallbackInbox.parse(MESSAGE_COMPLETE) == [GcCallback(MESSAGE, "complete", 5)]
    [failed] = CallbackInbox.parse(MESSAGE_FAILED)
    assert failed == GcCallback(MESSAGE, "failed", errors=(
        GcError(1014, "Could not delete media files"),))
    assert not failed.clean and failed.understood
    assert failed.to_dict() == {"kind": "message", "node": None, "status": "failed",
                                "messages_deleted": None, "errors": [
                                    {"code": 1014, "details": "Could not delete media files"}]}


def test_multiconnect_callbacks_carry_their_node() -> None:
    assert CallbackInbox.parse(body(
        {"messages_deleted": 2, "status": "complete", "node": "wacore1:9dfe77618dba"},
        {"status": "failed", "node": "wacore2:1234567890ab", "errors": [{"code": 1014}]},
    )) == [GcCallback(MESSAGE, "complete", 2, "wacore1:9dfe77618dba"),
           GcCallback(MESSAGE, "failed", None, "wacore2:1234567890ab", (GcError(1014),))]


def test_items_deleted_marks_a_media_gc_callback_wherever_it_sits() -> None:
    """Meta's reference puts the media completion under "message": it must never be taken
    for a message GC's."""
    assert CallbackInbox.parse(MEDIA_COMPLETE) == [GcCallback(MEDIA, "complete", 5)]
    [failed] = CallbackInbox.parse(MEDIA_FAILED)
    assert (failed.kind, failed.status, failed.deleted, failed.clean) == (
        MEDIA, "failed", 0, False)
    assert failed.to_dict()["items_deleted"] == 0 and "messages_deleted" not in failed.to_dict()


def test_a_title_is_optional_and_kept_when_present() -> None:
    [callback] = CallbackInbox.parse(body({"status": "failed", "errors": [
        {"code": 1014, "title": "Internal error", "details": "disk full"}]}))
    assert callback.errors == (GcError(1014, "disk full", "Internal error"),)


def test_only_a_complete_callback_without_errors_is_clean() -> None:
    """A callback that says complete but carries errors is not a success."""
    [partial] = CallbackInbox.parse(body({"status": "complete", "messages_deleted": 3,
                                          "errors": [{"code": 1014, "details": "not all"}]}))
    assert (partial.status, partial.deleted, partial.clean) == ("complete", 3, False)
    assert GcCallback(MESSAGE, "complete", 3).clean


@pytest.mark.parametrize(("gc", "deleted", "note"), [
    ({"status": "complete"}, None, ""),  # no count: tolerated, unknown
    ({"status": "complete", "messages_deleted": 1e23}, None, "is not a count"),
    ({"status": "complete", "messages_deleted": 10**30}, None, "is not a count"),
    ({"status": "complete", "messages_deleted": -1}, None, "is not a count"),
    ({"status": "complete", "messages_deleted": True}, None, "is not a count"),
    ({"status": "complete", "messages_deleted": "5"}, None, "is not a count"),
    ({"status": "complete", "messages_deleted": 1, "node": 7}, 1, "not a node name"),
])
def test_what_the_documentation_omits_or_garbles_is_tolerated_and_noted(
        gc: dict[str, object], deleted: int | None, note: str) -> None:
    [callback] = CallbackInbox.parse(body(gc))
    assert callback.deleted == deleted and callback.status == "complete"
    assert note in " ".join(callback.notes) if note else not callback.notes


def test_a_failure_with_unreadable_errors_is_still_a_failure() -> None:
    for errors in ([], ["boom"], [{"title": 5}], "not a list"):
        [callback] = CallbackInbox.parse(body({"status": "failed", "errors": errors}))
        assert callback.status == "failed" and not callback.clean


def test_an_unknown_status_is_accepted_but_not_understood() -> None:
    [callback] = CallbackInbox.parse(body({"status": "done", "messages_deleted": 1}))
    assert not callback.understood and not callback.clean
    assert "neither complete nor failed" in callback.notes[0]


@pytest.mark.parametrize(("raw", "words"), [
    (b"not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    (b"[]", '"services" must be a non-empty list'),
    (b'{"services": []}', '"services" must be a non-empty list'),
    (b'{"statuses": [{"id": "x"}]}', '"services" must be a non-empty list'),
    (b'{"services": [{"contacts": {}}]}', "no entry"),
    (b'{"services": [{"message": {"gc": "done"}}]}', "no entry"),
    (body(*[{"status": "complete", "messages_deleted": 0}] * 65), "more than 64"),
    (b" " * (MAX_BODY_BYTES + 1), "larger than"),
])
def test_only_a_body_that_is_no_gc_callback_is_refused(raw: bytes, words: str) -> None:
    with pytest.raises(InvalidCallback) as caught:
        CallbackInbox.parse(raw)
    assert words in str(caught.value)
    assert isinstance(caught.value, ValueError)


class Outcomes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, kind: str, outcome: str) -> None:
        self.seen.append((kind, outcome))


def test_a_callback_with_no_gc_waiting_is_recorded_not_refused() -> None:
    heard = Outcomes()
    inbox = CallbackInbox(heard)
    assert inbox.deliver(CallbackInbox.parse(MESSAGE_COMPLETE)) == ["no_gc_running"]
    assert heard.seen == [("message", CallbackOutcome.NO_GC_RUNNING)]


def test_the_expectation_waits_for_every_node_and_judges_the_others() -> None:
    heard = Outcomes()
    inbox = CallbackInbox(heard)
    with inbox.expect(MESSAGE) as expectation:
        expectation.set_nodes(["wacore1:a", "wacore2:b"])
        got: list[list[GcCallback]] = []
        waiter = threading.Thread(target=lambda: got.append(expectation.wait(10)))
        waiter.start()
        inbox.deliver([GcCallback(MESSAGE, "complete", 1, "wacore2:b")])
        inbox.deliver([GcCallback(MESSAGE, "complete", 9, "someone-else:c")])
        assert waiter.is_alive() and not expectation.complete  # still one node missing
        assert inbox.deliver([GcCallback(MESSAGE, "failed", None, "wacore1:a"),
                              GcCallback(MESSAGE, "complete", 7, "wacore1:a")]) == [
            "matched", "duplicate"]
        waiter.join(5)
        assert not waiter.is_alive() and expectation.complete
    assert [(c.node, c.status) for c in got[0]] == [("wacore1:a", "failed"),
                                                     ("wacore2:b", "complete")]
    assert [o for _, o in heard.seen] == ["matched", "unknown_node", "matched", "duplicate"]


def test_a_media_callback_never_reaches_a_waiting_message_gc() -> None:
    heard = Outcomes()
    inbox = CallbackInbox(heard)
    with inbox.expect(MESSAGE) as expectation:
        expectation.set_nodes([None])
        assert inbox.deliver(CallbackInbox.parse(MEDIA_COMPLETE)) == ["no_gc_running"]
        assert expectation.wait(0.01) == []
    assert heard.seen == [("media", "no_gc_running")]


def test_callbacks_before_the_answer_are_judged_once_the_nodes_are_known() -> None:
    heard = Outcomes()
    inbox = CallbackInbox(heard)
    with inbox.expect(MESSAGE) as expectation:
        assert inbox.deliver([GcCallback(MESSAGE, "complete", 3, "wacore1:a"),
                              GcCallback(MESSAGE, "complete", 3, "stranger:x")]) == [
            "pending", "pending"]
        assert heard.seen == []
        expectation.set_nodes(["wacore1:a"])
        assert [c.deleted for c in expectation.wait(0)] == [3]
    assert [o for _, o in heard.seen] == ["matched", "unknown_node"]


def test_callbacks_held_for_a_request_that_failed_count_as_no_gc_running() -> None:
    heard = Outcomes()
    inbox = CallbackInbox(heard)
    with inbox.expect(MEDIA):
        inbox.deliver([GcCallback(MEDIA, "complete", 1)])
    assert heard.seen == [("media", "no_gc_running")]


def test_a_single_node_takes_any_callback_and_a_not_understood_one_none() -> None:
    heard = Outcomes()
    inbox = CallbackInbox(heard)
    with inbox.expect(MESSAGE) as expectation:
        expectation.set_nodes([None])
        assert inbox.deliver([GcCallback(MESSAGE, "done", 1)]) == ["not_understood"]
        assert inbox.deliver([GcCallback(MESSAGE, "complete", 4, "wacore1:a")]) == ["matched"]
        assert [c.deleted for c in expectation.wait(0)] == [4]
