"""Garbage collection through the WA API: the ``gc`` (messages) and ``media_gc`` actions.

A message-GC round is one ``PUT /v1/services/message/gc``. It is complete when every node
that answered "processing" has called back (see :mod:`exporter.actions.callbacks`), or, when
the callbacks do not all come within ``callback_timeout``, when two row counts of the
``messages`` tables ``settle_interval`` apart are equal; ``round_timeout`` bounds the round.
A table above ``large_table_rows`` gets further rounds, ``round_pause`` apart, until its rows
fall below ``target_rows``, a round deletes nothing, or ``max_rounds`` is reached, as Meta's
guide advises for tables above 10 million rows.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from exporter.actions.base import (
    DRY_RUN,
    ERROR,
    FAILED,
    INTERRUPTED,
    SUCCESS,
    TIMEOUT,
    Action,
    ActionResult,
    RunContext,
)
from exporter.actions.callbacks import CallbackInbox, GcCallback
from exporter.config import DatabaseSettings, GcSettings, MessagesSettings
from exporter.sources.database import DatabaseError, MessagesSource, open_source
from exporter.sources.wa_api import MEDIA_GC_PATH, MESSAGE_GC_PATH, WaApiClient, WaApiError

log = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 1.0  # the longest a wait for callbacks holds off a cancel


def open_counting_source(db: DatabaseSettings, messages: MessagesSettings) -> MessagesSource:
    """A source that always counts exactly: an engine's estimate may not move while GC
    deletes, which would end a round by row count too early."""
    return open_source(db, messages.model_copy(update={"exact_count_below": sys.maxsize}))


@dataclass(frozen=True)
class RowCount:
    databases: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.databases.values())


def count_rows(source: MessagesSource) -> RowCount:
    """Rows of every WA ``messages`` table; :class:`DatabaseError` if any cannot be counted."""
    reading = source.read()
    if reading.errors:
        name, error = min(reading.errors.items())
        raise DatabaseError(f"{name}: {error}", kind=error.kind)
    return RowCount({name: table.rows for name, table in sorted(reading.tables.items())})


class _ApiAction(Action):
    """Dry run, timing and error reporting shared by both GC actions."""

    path = ""

    def __init__(self, client: WaApiClient) -> None:
        self.client = client

    def run(self, ctx: RunContext) -> ActionResult:
        if ctx.dry_run:
            log.info("dry run: would call the WA API", extra={
                "action": self.name, "run_id": ctx.run_id, "call": f"PUT {self.path}",
                "url": self.client.url})
            return ActionResult(DRY_RUN, {"would_call": f"PUT {self.path}",
                                          "url": self.client.url})
        started = time.monotonic()
        details: dict[str, Any] = {}
        try:
            result = self._work(ctx, details)
        except WaApiError as exc:
            result, details["error"] = ERROR, exc.to_dict()
        except DatabaseError as exc:
            result = ERROR
            details["error"] = {"kind": f"database_{exc.kind}", "message": str(exc)}
        details["duration_seconds"] = round(time.monotonic() - started, 3)
        log.log(logging.INFO if result == SUCCESS else logging.WARNING, "%s finished",
                self.name, extra={"action": self.name, "run_id": ctx.run_id, "result": result,
                                  "err": details.get("error", {}).get("message", "")})
        return ActionResult(result, details)

    def _work(self, ctx: RunContext, details: dict[str, Any]) -> str:
        """Do the work, filling ``details`` as it goes; return the result."""
        raise NotImplementedError


class MediaGcAction(_ApiAction):
    """``PUT /v1/services/media/gc``; media GC sends no callback, so its answer is the result."""

    name = "media_gc"
    path = MEDIA_GC_PATH

    def _work(self, ctx: RunContext, details: dict[str, Any]) -> str:
        answer = self.client.media_gc()
        details["nodes"] = [{"node": node, "answer": status}
                            for node, status in answer.nodes.items()]
        return SUCCESS


class GcAction(_ApiAction):
    """Message GC, in rounds on a large table. ``source`` should count exactly (see
    :func:`open_counting_source`)."""

    name = "gc"
    path = MESSAGE_GC_PATH

    def __init__(self, client: WaApiClient, source: MessagesSource, inbox: CallbackInbox,
                 settings: GcSettings) -> None:
        super().__init__(client)
        self.source = source
        self.inbox = inbox
        self.settings = settings

    def _work(self, ctx: RunContext, details: dict[str, Any]) -> str:
        s = self.settings
        target = s.large_table_rows if s.target_rows is None else s.target_rows
        rows = count_rows(self.source)
        large = rows.total > s.large_table_rows
        details.update(rows_before=rows.total, rows_after=rows.total, messages_deleted=0,
                       rounds=0, large_table=large, databases_before=rows.databases)
        number = 0
        while True:
            if ctx.cancel.is_set():
                return INTERRUPTED
            number += 1
            result, record, rows = self._round(ctx, number, rows)
            details["rounds"] = number
            details["messages_deleted"] += record["messages_deleted"]
            details.update(rows_after=rows.total, databases_after=rows.databases,
                           nodes=record["nodes"])
            ctx.progress("round", **record)
            if result != SUCCESS:
                if "errors" in record:
                    details["errors"] = record["errors"]
                return result
            stop = ("single_round" if not large else
                    "under_target" if rows.total < target else
                    "nothing_deleted" if record["messages_deleted"] == 0 else
                    "max_rounds" if number == s.max_rounds else None)
            if stop is not None:
                details["stopped"] = stop
                return SUCCESS
            log.info("large messages table: another GC round follows", extra={
                "run_id": ctx.run_id, "round": number, "rows": rows.total, "target": target,
                "pause_seconds": s.round_pause})
            if ctx.cancel.wait(s.round_pause):
                return INTERRUPTED

    def _round(self, ctx: RunContext, number: int,
               before: RowCount) -> tuple[str, dict[str, Any], RowCount]:
        """One GC request and its completion: (result, progress record, rows after)."""
        s = self.settings
        since = time.monotonic()  # callbacks can arrive before the PUT's answer does
        answer = self.client.message_gc()
        expected = answer.processing
        callbacks = self._wait_callbacks(ctx, since, expected, since + s.callback_timeout)
        result = SUCCESS if expected else FAILED
        after: RowCount | None = None
        if expected and len(callbacks) < len(expected) and not _failed(callbacks):
            result, callbacks, after = self._settle(ctx, since, expected, callbacks)
        if after is None:
            after = count_rows(self.source)
        failed = _failed(callbacks)
        if failed and result == SUCCESS:
            result = FAILED
        complete = bool(expected) and len(callbacks) == len(expected)
        record: dict[str, Any] = {
            "round": number, "result": result, "rows_before": before.total,
            "rows_after": after.total,
            "messages_deleted": (sum(c.messages_deleted or 0 for c in callbacks) if complete
                                 else max(0, before.total - after.total)),
            "completed_by": ("callback" if complete else
                             "row_count" if result == SUCCESS else None),
            "nodes": _node_statuses(answer.nodes, callbacks),
        }
        if failed:
            record["errors"] = [dict(error, node=c.node) for c in failed
                                for error in c.to_dict()["errors"]]
        elif not expected:
            record["errors"] = [{"details": "no node answered that it is processing"}]
        return result, record, after

    def _settle(self, ctx: RunContext, since: float, expected: list[str | None],
                callbacks: list[GcCallback]) -> tuple[str, list[GcCallback], RowCount | None]:
        """Without every callback: wait for the row count to stop falling, still accepting
        callbacks that come late. Returns (result, callbacks, settled row count or None)."""
        s = self.settings
        deadline = since + s.round_timeout
        log.info("not every GC callback came in time; watching the row count", extra={
            "run_id": ctx.run_id, "callbacks": len(callbacks), "expected": len(expected)})
        previous = count_rows(self.source)
        while True:
            if time.monotonic() >= deadline:
                return TIMEOUT, callbacks, previous
            callbacks = self._wait_callbacks(ctx, since, expected,
                                             min(time.monotonic() + s.settle_interval, deadline))
            if ctx.cancel.is_set():
                return INTERRUPTED, callbacks, previous
            if len(callbacks) == len(expected) or _failed(callbacks):
                return SUCCESS, callbacks, None
            current = count_rows(self.source)
            if current.total == previous.total:
                return SUCCESS, callbacks, current
            previous = current

    def _wait_callbacks(self, ctx: RunContext, since: float, expected: list[str | None],
                        until: float) -> list[GcCallback]:
        while True:
            remaining = until - time.monotonic()
            callbacks = self.inbox.wait(since, expected, min(remaining, CANCEL_CHECK_SECONDS))
            if len(callbacks) == len(expected) or remaining <= CANCEL_CHECK_SECONDS \
                    or ctx.cancel.is_set():
                return callbacks


def _failed(callbacks: list[GcCallback]) -> list[GcCallback]:
    return [c for c in callbacks if c.status == "failed"]


def _node_statuses(answers: dict[str | None, str],
                   callbacks: list[GcCallback]) -> list[dict[str, Any]]:
    by_node = {c.node if None not in answers else None: c for c in callbacks}
    statuses = []
    for node, answer in answers.items():
        callback = by_node.get(node)
        statuses.append({"node": node, "answer": answer,
                         "status": callback.status if callback else "no_callback",
                         "messages_deleted": callback.messages_deleted if callback else None})
    return statuses
