"""The inbox for message-GC completion callbacks that the WA client POSTs to its webhook.

The operator forwards them to the exporter's callback endpoint; the HTTP layer hands each
body to :meth:`CallbackInbox.parse` (a malformed one raises :class:`InvalidCallback`, a 4xx)
and the result to :meth:`CallbackInbox.deliver`. A running ``gc`` action waits in
:meth:`CallbackInbox.wait` for every node it started to call back, while it watches the
row count (:mod:`exporter.actions.gc_watch`).

The WA client's callbacks carry no GC id, so a callback is matched to a GC by time (received
after the GC request was sent) and by node.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_CALLBACKS_PER_BODY = 64  # one per coreapp node
KEEP_CALLBACKS = 256
STATUSES = ("complete", "failed")


class InvalidCallback(ValueError):
    """A callback body that is not a WA message-GC callback; the message says what is wrong."""


@dataclass(frozen=True)
class GcError:
    code: int
    title: str
    details: str | None = None


@dataclass(frozen=True)
class GcCallback:
    """One node's message-GC outcome. ``node`` is None when the callback names none (a
    single-node install); ``received_at`` is the ``time.monotonic()`` of delivery."""

    status: str  # complete or failed
    messages_deleted: int | None = None
    node: str | None = None
    errors: tuple[GcError, ...] = ()
    received_at: float = 0.0

    @property
    def clean(self) -> bool:
        """Complete and without errors. A callback that says ``complete`` but lists
        ``errors`` is not a success: the guide's advice is to call GC again."""
        return self.status == "complete" and not self.errors

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, without the delivery time."""
        data: dict[str, Any] = {"node": self.node, "status": self.status,
                                "messages_deleted": self.messages_deleted}
        if self.errors:
            data["errors"] = [dataclasses.asdict(e) for e in self.errors]
        return data


class CallbackInbox:
    """Thread-safe: the HTTP layer delivers, running GCs wait. Keeps the newest
    :data:`KEEP_CALLBACKS` callbacks."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._received: deque[GcCallback] = deque(maxlen=KEEP_CALLBACKS)

    @staticmethod
    def parse(body: bytes) -> list[GcCallback]:
        """The callbacks in one POSTed body; :class:`InvalidCallback` if it is malformed."""
        if len(body) > MAX_BODY_BYTES:
            raise InvalidCallback(f"body is larger than {MAX_BODY_BYTES} bytes")
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # also too deep, too long an integer, not UTF-8
            raise InvalidCallback("body is not JSON") from None
        services = data.get("services") if isinstance(data, dict) else None
        if not isinstance(services, list) or not services:
            raise InvalidCallback('"services" must be a non-empty list')
        if len(services) > MAX_CALLBACKS_PER_BODY:
            raise InvalidCallback(f'"services" holds more than {MAX_CALLBACKS_PER_BODY} entries')
        return [_parse_entry(entry, f"services[{i}]") for i, entry in enumerate(services)]

    def deliver(self, callbacks: Iterable[GcCallback]) -> None:
        """Record callbacks as received now and wake every waiting GC."""
        now = time.monotonic()
        with self._cond:
            for callback in callbacks:
                self._received.append(dataclasses.replace(callback, received_at=now))
                log.info("GC callback received", extra={
                    "node": callback.node or "-", "status": callback.status,
                    "messages_deleted": callback.messages_deleted})
            self._cond.notify_all()

    def wait(self, since: float, nodes: Collection[str | None],
             timeout: float) -> list[GcCallback]:
        """Wait up to ``timeout`` seconds until each of ``nodes`` has called back at or after
        ``since`` (a ``time.monotonic()`` value); return the first callback of each node that
        has, in the order of ``nodes``. The node ``None`` (single node) matches any callback."""
        wanted = list(dict.fromkeys(nodes))
        with self._cond:
            self._cond.wait_for(lambda: len(self._first(since, wanted)) == len(wanted),
                                max(0.0, timeout))
            return list(self._first(since, wanted).values())

    def _first(self, since: float, wanted: list[str | None]) -> dict[str | None, GcCallback]:
        found: dict[str | None, GcCallback] = {}
        single = None in wanted
        for callback in self._received:
            key = None if single else callback.node
            if callback.received_at >= since and key in wanted and key not in found:
                found[key] = callback
        return {node: found[node] for node in wanted if node in found}


def _parse_entry(entry: object, where: str) -> GcCallback:
    message = entry.get("message") if isinstance(entry, dict) else None
    gc = message.get("gc") if isinstance(message, dict) else None
    if not isinstance(gc, dict):
        raise InvalidCallback(f"{where}: not a message GC callback (no message.gc object)")
    status = gc.get("status")
    if status not in STATUSES:
        raise InvalidCallback(f"{where}.message.gc.status must be one of {', '.join(STATUSES)}")
    deleted = gc.get("messages_deleted")
    if deleted is not None and (not isinstance(deleted, int) or isinstance(deleted, bool)
                                or deleted < 0):
        raise InvalidCallback(f"{where}.message.gc.messages_deleted must be a whole number >= 0")
    if status == "complete" and deleted is None:
        raise InvalidCallback(f"{where}.message.gc: a complete callback needs messages_deleted")
    node = gc.get("node")
    if node is not None and (not isinstance(node, str) or not node.strip() or len(node) > 200):
        raise InvalidCallback(f"{where}.message.gc.node must be a non-empty string")
    errors = gc.get("errors", [])
    if not isinstance(errors, list) or (status == "failed" and not errors):
        raise InvalidCallback(f"{where}.message.gc.errors must be a list, non-empty on failure")
    return GcCallback(status=str(status), messages_deleted=deleted, node=node,
                      errors=tuple(_parse_error(e, f"{where}.message.gc.errors[{i}]")
                                   for i, e in enumerate(errors)))


def _parse_error(error: object, where: str) -> GcError:
    if not isinstance(error, dict):
        raise InvalidCallback(f"{where} must be an object")
    code, title, details = error.get("code"), error.get("title"), error.get("details")
    if not isinstance(code, int) or isinstance(code, bool):
        raise InvalidCallback(f"{where}.code must be a number")
    if not isinstance(title, str):
        raise InvalidCallback(f"{where}.title must be a string")
    if details is not None and not isinstance(details, str):
        raise InvalidCallback(f"{where}.details must be a string")
    return GcError(code, title[:200], None if details is None else details[:500])
