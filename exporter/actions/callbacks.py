"""The inbox for the GC completion callbacks the WA client POSTs to its webhook.

The operator forwards them to the exporter's callback endpoint; the HTTP layer hands each
body to :meth:`CallbackInbox.parse` and the result to :meth:`CallbackInbox.deliver`.

The callbacks are parsed as Meta documents them, and what the documentation omits is
tolerated (SPEC §2):

- message GC: ``{"services":[{"message":{"gc":{"messages_deleted":5,"status":"complete"}}}]}``,
  one per coreapp on multiconnect, each with a ``node``; a failure has ``"status":"failed"``
  and ``errors`` whose entries carry ``code`` and ``details`` and no ``title``;
- media GC: its completion sits under ``message`` with ``items_deleted``, its failure under
  ``media``. So ``items_deleted`` marks a media-GC callback wherever it sits.

Only a body that is no WA GC callback at all is refused (:class:`InvalidCallback`, a 4xx);
every other one is accepted, because the client retries a callback that was not, and what
became of it is a :class:`~exporter.vocabulary.CallbackOutcome` (logged and counted).

The client's callbacks carry no GC id. A running GC opens an :class:`Expectation` before it
sends its request; a callback of its kind delivered while it is open belongs to it, if it
comes from a node that answered "processing" (known once the request is answered: callbacks
that come earlier wait for that answer to be judged).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from exporter.vocabulary import CallbackOutcome, GcKind

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_CALLBACKS_PER_BODY = 64  # one per coreapp node
# A count beyond any table's size (2**53: what a float keeps exactly) is not a count.
MAX_COUNT = 2**53
STATUSES = ("complete", "failed")
COUNT_FIELDS = {GcKind.MESSAGE: "messages_deleted", GcKind.MEDIA: "items_deleted"}

# Hears what became of each callback: (kind, outcome).
OutcomeListener = Callable[[str, str], None]


class InvalidCallback(ValueError):
    """A body that is not a WA GC callback; the message says what is wrong."""


@dataclass(frozen=True)
class GcError:
    """One entry of a callback's ``errors``. Meta's callbacks carry ``code`` and ``details``;
    only errors in the HTTP answer to the request carry a ``title``."""

    code: int | None
    details: str | None = None
    title: str | None = None

    def to_dict(self) -> dict[str, Any]:
        fields = {"code": self.code, "title": self.title, "details": self.details}
        return {k: v for k, v in fields.items() if v is not None}


@dataclass(frozen=True)
class GcCallback:
    """One node's GC outcome. ``deleted`` is ``messages_deleted`` (message GC) or
    ``items_deleted`` (media GC), None when absent or not a count; ``node`` is None when the
    callback names none (a single-node install); ``notes`` say what was tolerated."""

    kind: str  # GcKind
    status: str  # complete or failed as documented; anything else is not understood
    deleted: int | None = None
    node: str | None = None
    errors: tuple[GcError, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def understood(self) -> bool:
        return self.status in STATUSES

    @property
    def clean(self) -> bool:
        """Complete and without errors. A callback that says ``complete`` but lists
        ``errors`` is not a success: the guide's advice is to call GC again."""
        return self.status == "complete" and not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, for the audit log and the action records."""
        data: dict[str, Any] = {"kind": self.kind, "node": self.node, "status": self.status,
                                COUNT_FIELDS[GcKind(self.kind)]: self.deleted}
        if self.errors:
            data["errors"] = [e.to_dict() for e in self.errors]
        if self.notes:
            data["notes"] = list(self.notes)
        return data


class Expectation:
    """The callbacks one GC request waits for; made by :meth:`CallbackInbox.expect`."""

    def __init__(self, inbox: CallbackInbox, kind: str) -> None:
        self.inbox = inbox
        self.kind = kind
        self.nodes: list[str | None] | None = None  # None until the request is answered
        self.matched: dict[str | None, GcCallback] = {}
        self.early: list[GcCallback] = []  # came before the answer: judged once it is known

    def set_nodes(self, nodes: list[str | None]) -> None:
        """The nodes that answered "processing" (``[None]``: one node, any callback is its);
        judge the callbacks that came before the answer."""
        with self.inbox._cond:
            self.nodes = list(dict.fromkeys(nodes))
            early, self.early = self.early, []
            outcomes = [(callback, self._match(callback)) for callback in early]
            self.inbox._cond.notify_all()
        for callback, outcome in outcomes:
            self.inbox._report(callback, outcome)

    def wait(self, timeout: float) -> list[GcCallback]:
        """Wait up to ``timeout`` seconds until every node has called back; return the
        callbacks matched so far, in the order of the nodes."""
        with self.inbox._cond:
            self.inbox._cond.wait_for(self._all_in, max(0.0, timeout))
            return [self.matched[n] for n in self.nodes or [] if n in self.matched]

    @property
    def complete(self) -> bool:
        """Every node that answered "processing" has called back."""
        with self.inbox._cond:
            return self._all_in()

    def _all_in(self) -> bool:
        return self.nodes is not None and len(self.matched) == len(self.nodes)

    def _offer(self, callback: GcCallback) -> CallbackOutcome | None:
        """Match one callback (under the inbox's lock); None while the nodes are unknown."""
        if self.nodes is None:
            self.early.append(callback)
            return None
        return self._match(callback)

    def _match(self, callback: GcCallback) -> CallbackOutcome:
        assert self.nodes is not None
        node = None if self.nodes == [None] else callback.node
        if node not in self.nodes:
            return CallbackOutcome.UNKNOWN_NODE
        if node in self.matched:
            return CallbackOutcome.DUPLICATE
        self.matched[node] = callback
        return CallbackOutcome.MATCHED


class CallbackInbox:
    """Thread-safe: the HTTP layer delivers, running GCs wait. ``on_outcome`` hears what
    became of every callback (the ``whatsapp_gc_callbacks_total`` counter)."""

    def __init__(self, on_outcome: OutcomeListener | None = None) -> None:
        self._cond = threading.Condition()
        self._open: list[Expectation] = []
        self.on_outcome = on_outcome

    @staticmethod
    def parse(body: bytes) -> list[GcCallback]:
        """The GC callbacks in one POSTed body; :class:`InvalidCallback` if it holds none."""
        if len(body) > MAX_BODY_BYTES:
            raise InvalidCallback(f"body is larger than {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # also too deep, too long an integer, not UTF-8
            raise InvalidCallback("body is not JSON") from None
        services = data.get("services") if isinstance(data, dict) else None
        if not isinstance(services, list) or not services:
            raise InvalidCallback('not a WA GC callback: "services" must be a non-empty list')
        if len(services) > MAX_CALLBACKS_PER_BODY:
            raise InvalidCallback(f'"services" holds more than {MAX_CALLBACKS_PER_BODY} entries')
        callbacks = [c for c in map(_parse_entry, services) if c is not None]
        if not callbacks:
            raise InvalidCallback('not a WA GC callback: no entry of "services" holds a '
                                  'message.gc or media.gc object')
        return callbacks

    @contextmanager
    def expect(self, kind: str) -> Iterator[Expectation]:
        """Open an expectation for one GC request of ``kind``, before the request is sent
        (a callback can arrive before its answer); closed on leaving the block."""
        expectation = Expectation(self, kind)
        with self._cond:
            self._open.append(expectation)
        try:
            yield expectation
        finally:
            with self._cond:
                self._open.remove(expectation)
                unjudged, expectation.early = expectation.early, []
            for callback in unjudged:  # the request failed: nothing was started
                self._report(callback, CallbackOutcome.NO_GC_RUNNING)

    def deliver(self, callbacks: list[GcCallback]) -> list[str]:
        """Hand callbacks to the GCs waiting for them; each one's outcome (``pending`` while
        its GC's request is not answered yet)."""
        outcomes: list[CallbackOutcome | None] = []
        with self._cond:
            for callback in callbacks:
                outcomes.append(self._judge(callback))
            self._cond.notify_all()
        for callback, outcome in zip(callbacks, outcomes, strict=True):
            if outcome is not None:
                self._report(callback, outcome)
        return [outcome or "pending" for outcome in outcomes]

    def _judge(self, callback: GcCallback) -> CallbackOutcome | None:
        if not callback.understood:
            return CallbackOutcome.NOT_UNDERSTOOD
        waiting = [e for e in self._open if e.kind == callback.kind]
        if not waiting:
            return CallbackOutcome.NO_GC_RUNNING
        return waiting[-1]._offer(callback)

    def _report(self, callback: GcCallback, outcome: CallbackOutcome) -> None:
        level = logging.INFO if outcome == CallbackOutcome.MATCHED else logging.WARNING
        log.log(level, "GC callback received", extra={
            "kind": callback.kind, "node": callback.node or "-", "status": callback.status,
            "deleted": callback.deleted, "outcome": outcome,
            "notes": "; ".join(callback.notes)})
        if self.on_outcome is not None:
            self.on_outcome(callback.kind, outcome)


def _parse_entry(entry: object) -> GcCallback | None:
    """One entry of ``services``: a GC callback, or None if it is none."""
    if not isinstance(entry, dict):
        return None
    for key in ("message", "media"):
        service = entry.get(key)
        gc = service.get("gc") if isinstance(service, dict) else None
        if isinstance(gc, dict):
            kind = GcKind.MEDIA if key == "media" or "items_deleted" in gc else GcKind.MESSAGE
            return _parse_gc(kind, gc)
    return None


def _parse_gc(kind: GcKind, gc: dict[str, Any]) -> GcCallback:
    notes: list[str] = []
    status = gc.get("status")
    if status not in STATUSES:
        notes.append(f"status {_clip_repr(status)} is neither complete nor failed")
    field = COUNT_FIELDS[kind]
    deleted = gc.get(field)
    if deleted is not None and not _is_count(deleted):
        notes.append(f"{field} {_clip_repr(deleted)} is not a count")
        deleted = None
    node = gc.get("node")
    if node is not None and (not isinstance(node, str) or not node.strip() or len(node) > 200):
        notes.append(f"node {_clip_repr(node)} is not a node name")
        node = None
    raw_errors = gc.get("errors", [])
    if not isinstance(raw_errors, list):
        notes.append("errors is not a list")
        raw_errors = [{}]
    errors = tuple(_parse_error(e) for e in raw_errors[:MAX_CALLBACKS_PER_BODY])
    return GcCallback(kind=kind, status=str(status)[:40], deleted=deleted, node=node,
                      errors=errors, notes=tuple(notes))


def _parse_error(error: object) -> GcError:
    """An error entry, whatever it holds: even an unreadable one says the GC had an error."""
    if not isinstance(error, dict):
        return GcError(None, _clip_repr(error))
    code, details, title = error.get("code"), error.get("details"), error.get("title")
    return GcError(code if isinstance(code, int) and not isinstance(code, bool) else None,
                   details[:500] if isinstance(details, str) else None,
                   title[:200] if isinstance(title, str) else None)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _clip_repr(value: object, limit: int = 60) -> str:
    """A value quoted from a callback, short enough for a log line."""
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[:limit] + "…"
