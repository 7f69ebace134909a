"""Garbage collection through the WA API: the ``gc`` (messages) and ``media_gc`` actions.

Every verdict needs evidence (SPEC §2, §3). A message-GC round is one
``PUT /v1/services/message/gc``. From the moment it is answered, the round waits for the
callbacks of every node that answered "processing" (see :mod:`exporter.actions.callbacks`)
and, at the same time, watches the row count of the ``messages`` tables
(:mod:`exporter.actions.gc_watch`). It ends

- ``success`` when every node that answered "processing" called back clean, or, when no
  callback came at all (most businesses point the WA webhook at their own integration), when
  the rows fell and then settled;
- ``failed`` when no node answers "processing", or any node's callback reports errors
  (``"status":"failed"``, or ``complete`` with an ``errors`` list) — one failed node fails
  the round, whatever the others say;
- ``unconfirmed`` when there is no such evidence: no callback and rows that did not start
  falling within ``callback_timeout``, or callbacks from some nodes only;
- ``timeout`` when none of these happens within ``round_timeout``.

A deleted count is taken from the callbacks when every node called back, else from the row
count; a count above the rows the tables held when the round started is logged and kept out.

A database whose ``messages`` table holds more than ``large_table_rows`` rows is large, each
database judged alone. With a large database the run repeats rounds, ``round_pause`` apart,
up to ``max_rounds``: after a round whose callbacks reported errors, since the guide says
more than one call may be needed "so that the callback comes back without errors"; after a
clean round, while a large database is still at or above ``target_rows`` and the round
deleted something. The run succeeds when its last round came back clean. Without a large
database one round is the run, and a callback with errors is a failure.

Media GC (``PUT /v1/services/media/gc``) completes asynchronously too: it waits for its
callback up to ``actions.media_gc.callback_timeout`` and ends ``success``, ``failed`` or
``unconfirmed``; its ``items_deleted`` are media files, never messages.
"""

from __future__ import annotations

import logging
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
    UNCONFIRMED,
    Action,
    ActionResult,
    RunContext,
)
from exporter.actions.callbacks import CallbackInbox, Expectation, GcCallback
from exporter.actions.gc_watch import NO_CHANGE, ROW_COUNT, RowWatch, next_count_after
from exporter.config import GcSettings, MediaGcSettings
from exporter.sources.database import DatabaseError, MessagesSource
from exporter.sources.wa_api import MEDIA_GC_PATH, MESSAGE_GC_PATH, WaApiClient, WaApiError
from exporter.vocabulary import GcKind

log = logging.getLogger(__name__)

CANCEL_CHECK_SECONDS = 1.0  # the longest a wait for callbacks holds off a cancel
CALLBACK = "callback"  # how a round completed: every node called back (gc_watch has the others)
COMPLETIONS = {
    CALLBACK: "every node called back",
    ROW_COUNT: "the row count fell and settled",
    NO_CHANGE: "the rows did not start falling within callback_timeout",
}


@dataclass(frozen=True)
class RowCount:
    databases: dict[str, int]  # database -> rows of its messages table

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
    """``PUT /v1/services/media/gc``, complete on its callback (it runs on the leader only, so
    one callback, whichever node sends it)."""

    name = "media_gc"
    path = MEDIA_GC_PATH

    def __init__(self, client: WaApiClient, inbox: CallbackInbox,
                 settings: MediaGcSettings) -> None:
        super().__init__(client)
        self.inbox = inbox
        self.settings = settings

    def _work(self, ctx: RunContext, details: dict[str, Any]) -> str:
        with self.inbox.expect(GcKind.MEDIA) as expectation:
            answer = self.client.media_gc()
            details["nodes"] = [{"node": node, "answer": status}
                                for node, status in answer.nodes.items()]
            if not answer.processing:
                details["errors"] = [{"details": "no node answered that it is processing"}]
                return FAILED
            expectation.set_nodes([None])
            ctx.progress("media_gc_started", nodes_processing=len(answer.processing))
            callbacks = _wait(ctx, expectation, time.monotonic()
                              + self.settings.callback_timeout)
        if ctx.cancel.is_set():
            return INTERRUPTED
        if not callbacks:
            details["completed_by"] = None
            return UNCONFIRMED
        callback = callbacks[0]
        details.update(completed_by=CALLBACK, status=callback.status,
                       items_deleted=callback.deleted or 0)
        if callback.errors:
            details["errors"] = [e.to_dict() for e in callback.errors]
        return SUCCESS if callback.clean else FAILED


class GcAction(_ApiAction):
    """Message GC, in rounds on a large table. ``source`` should count exactly (see
    :func:`exporter.sources.database.open_counting_source`)."""

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
        rows = count_rows(self.source)
        large = [name for name, n in rows.databases.items() if n > s.large_table_rows]
        details.update(rows_before=rows.total, rows_after=rows.total, messages_deleted=0,
                       rounds=0, large_table=bool(large), large_databases=large,
                       databases_before=rows.databases)
        number = 0
        while True:
            if ctx.cancel.is_set():
                return INTERRUPTED
            number += 1
            done = self._round(ctx, number, rows)
            rows = done.rows
            ctx.progress("round", **done.record)
            _add_round(details, done)
            if done.result != SUCCESS and not (large and done.callback_errors):
                return done.result  # one round is the run, or errors no round can mend
            stop, why = self._stop(done, number, large)
            if stop is not None:
                details["stopped"] = stop
                return done.result
            log.info("large messages table: another GC round follows", extra={
                "run_id": ctx.run_id, "round": number, "why": why, "rows": rows.total,
                "pause_seconds": s.round_pause})
            if ctx.cancel.wait(s.round_pause):
                return INTERRUPTED

    def _stop(self, done: _Round, number: int, large: list[str]) -> tuple[str | None, str]:
        """Whether the run ends after this round: (the ``stopped`` reason or None, why not)."""
        s = self.settings
        if not large:
            return "single_round", ""
        target = s.large_table_rows if s.target_rows is None else s.target_rows
        above = [name for name in large if done.rows.databases.get(name, 0) >= target]
        if not done.callback_errors:
            if not above:
                return "under_target", ""
            if done.record["messages_deleted"] == 0:
                return "nothing_deleted", ""
        if number == s.max_rounds:
            return "max_rounds", ""
        if done.callback_errors:
            return None, "the callbacks reported errors"
        return None, f"{', '.join(above)} still at or above {target} rows"

    def _round(self, ctx: RunContext, number: int, before: RowCount) -> _Round:
        """One GC request and its completion."""
        record: dict[str, Any] = {"round": number, "rows_before": before.total}
        with self.inbox.expect(GcKind.MESSAGE) as expectation:
            since = time.monotonic()  # callbacks can arrive before the PUT's answer does
            answer = self.client.message_gc()
            expected = answer.processing
            expectation.set_nodes(expected)
            ctx.progress("round_started", round=number, rows_before=before.total,
                         nodes_processing=len(expected))
            if not expected:
                counted = count_rows(self.source)
                record.update(result=FAILED, rows_after=counted.total, messages_deleted=0,
                              completed_by=None, nodes=_node_statuses(answer.nodes, []),
                              errors=[{"details": "no node answered that it is processing"}])
                return _Round(FAILED, record, counted)
            watch = RowWatch(before.databases, since, self.settings.settle_interval,
                             self.settings.callback_timeout)
            ended, callbacks, after = self._complete(ctx, expectation, watch)
        if after is None:  # a cancel ends the round without another count
            after = before if ended == INTERRUPTED else count_rows(self.source)
        unclean = [c for c in callbacks if not c.clean]
        result = round_result(ended, callbacks)
        counts, implausible = plausible_counts(callbacks, before.total)
        if implausible:
            record["implausible_counts"] = implausible
            log.warning("GC callback reports more deleted messages than the tables held; "
                        "kept out of the deleted count", extra={
                            "run_id": ctx.run_id, "rows_before": before.total,
                            "reported": [i["reported"] for i in implausible]})
        record.update(
            result=result, rows_after=after.total,
            messages_deleted=sum(counts) if ended == CALLBACK else watch.deleted,
            completed_by=None if ended in (INTERRUPTED, TIMEOUT) else ended,
            nodes=_node_statuses(answer.nodes, callbacks))
        if unclean:
            record["errors"] = [dict(error.to_dict(), node=c.node) for c in unclean
                                for error in c.errors] or [
                                    {"details": f"status {c.status}", "node": c.node}
                                    for c in unclean]
        return _Round(result, record, after, callback_errors=bool(unclean))

    def _complete(self, ctx: RunContext, expectation: Expectation, watch: RowWatch
                  ) -> tuple[str, list[GcCallback], RowCount | None]:
        """Wait for every callback while reading the row count. Returns how the round ended
        (:data:`CALLBACK`, the watch's verdict, TIMEOUT or INTERRUPTED), the callbacks
        received, and the last row count if the watch decided."""
        s = self.settings
        deadline = watch.started + s.round_timeout
        next_count = time.monotonic() + next_count_after(s.settle_interval, 0.0)
        while True:
            callbacks = _wait(ctx, expectation, min(next_count, deadline))
            if ctx.cancel.is_set():
                return INTERRUPTED, callbacks, None
            if expectation.complete:
                return CALLBACK, callbacks, None
            if time.monotonic() >= deadline:
                return TIMEOUT, callbacks, None
            counting = time.monotonic()
            try:
                current = count_rows(self.source)
            except DatabaseError as exc:  # one missed reading; callbacks may still come
                log.warning("row count failed during GC; trying again", extra={
                    "run_id": ctx.run_id, "err": str(exc)})
                current = None
            now = time.monotonic()
            next_count = now + next_count_after(s.settle_interval, now - counting)
            if current is None:
                continue
            watch.observe(current.databases, now)
            verdict = watch.verdict(now)
            if verdict is not None:
                return verdict, callbacks, current


def _wait(ctx: RunContext, expectation: Expectation, until: float) -> list[GcCallback]:
    """Wait for the expected callbacks until ``until`` (a ``time.monotonic()`` value), or a
    cancel, whichever comes first; the callbacks matched so far."""
    while True:
        remaining = until - time.monotonic()
        callbacks = expectation.wait(min(remaining, CANCEL_CHECK_SECONDS))
        if expectation.complete or remaining <= CANCEL_CHECK_SECONDS or ctx.cancel.is_set():
            return callbacks


def round_result(ended: str, callbacks: list[GcCallback]) -> str:
    """A round's verdict from how it ended and the callbacks that came (the rule in the
    module's docstring): a failed node fails it; success needs every node's clean callback,
    or, with no callback at all, rows that fell."""
    if ended == INTERRUPTED:
        return INTERRUPTED
    if any(not c.clean for c in callbacks):
        return FAILED
    if ended == CALLBACK or (ended == ROW_COUNT and not callbacks):
        return SUCCESS
    return TIMEOUT if ended == TIMEOUT else UNCONFIRMED


def plausible_counts(callbacks: list[GcCallback], rows_before: int
                     ) -> tuple[list[int], list[dict[str, Any]]]:
    """The callbacks' deleted counts that can be true, and those that cannot: more than the
    tables held when the round started, alone or together."""
    reported = [c for c in callbacks if c.deleted is not None]
    total = sum(c.deleted or 0 for c in reported)
    implausible = [c for c in reported if total > rows_before]
    kept = [c.deleted or 0 for c in reported if c not in implausible]
    return kept, [{"node": c.node, "reported": c.deleted} for c in implausible]


@dataclass(frozen=True)
class _Round:
    result: str
    record: dict[str, Any]  # the progress record, as audited and printed by ``run``
    rows: RowCount  # after the round
    callback_errors: bool = False  # a callback said failed, or complete with errors


def _add_round(details: dict[str, Any], done: _Round) -> None:
    """Fold one round into the run's record."""
    details["rounds"] = done.record["round"]
    details["messages_deleted"] += done.record["messages_deleted"]
    details.update(rows_after=done.rows.total, databases_after=done.rows.databases,
                   nodes=done.record["nodes"])
    if done.callback_errors:
        details["rounds_with_errors"] = details.get("rounds_with_errors", 0) + 1
    if "errors" in done.record:
        details["errors"] = done.record["errors"]
    elif done.result == SUCCESS:
        details.pop("errors", None)  # an earlier round's, mended by this clean one


def _node_statuses(answers: dict[str | None, str],
                   callbacks: list[GcCallback]) -> list[dict[str, Any]]:
    by_node = {c.node if None not in answers else None: c for c in callbacks}
    statuses = []
    for node, answer in answers.items():
        callback = by_node.get(node)
        statuses.append({"node": node, "answer": answer,
                         "status": callback.status if callback else "no_callback",
                         "messages_deleted": callback.deleted if callback else None})
    return statuses


def progress_line(event: str, fields: dict[str, Any]) -> str | None:
    """A person's line for a GC progress record (``wa-exporter run gc`` prints them)."""
    if event == "media_gc_started":
        return (f"media gc: started on {fields['nodes_processing']} node(s); waiting for its "
                "completion callback")
    if event == "round_started":
        return (f"gc round {fields['round']}: started at {fields['rows_before']} rows; "
                f"waiting for the callbacks of {fields['nodes_processing']} node(s) or for "
                "the row count to stop falling")
    if event != "round":
        return None
    how = COMPLETIONS.get(fields.get("completed_by") or "", {
        TIMEOUT: "neither every callback nor a settled row count within round_timeout",
        INTERRUPTED: "interrupted"}.get(fields["result"], ""))
    line = (f"gc round {fields['round']} {fields['result']}: rows {fields['rows_before']} -> "
            f"{fields['rows_after']}, {fields['messages_deleted']} deleted, {how}")
    errors = "; ".join(error_text(e) for e in fields.get("errors", []))
    return f"{line}; errors: {errors}" if errors else line


def error_text(error: dict[str, Any]) -> str:
    """``1014 Internal error: details (node n)``, from whichever of the fields are there."""
    head = " ".join(str(error[k]) for k in ("code", "title") if error.get(k) is not None)
    text = ": ".join(part for part in (head, str(error.get("details") or "")) if part)
    return text + (f" (node {error['node']})" if error.get("node") else "")
