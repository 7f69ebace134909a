"""Metrics of decisions and finished runs: ``whatsapp_action_*``, ``whatsapp_gc_*``,
``whatsapp_cleanup_*``. Updated when things happen, so a scrape only reads them.

The runner reports to :class:`ActionMetrics` (its ``RunObserver``) and ``app.py`` wires the
two; what is read of a request, a result and the audit log is named by the protocols below,
so this module depends on the shared vocabulary only, never on :mod:`exporter.actions`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from exporter.vocabulary import (
    GC_ACTIONS,
    CallbackOutcome,
    GcKind,
    Outcome,
    Result,
    Trigger,
    rows_after_gc,
)

if TYPE_CHECKING:
    from exporter.sources.docker import WaContainer


class RunRequest(Protocol):
    """What was asked (the runner's ``Request``)."""

    @property
    def action(self) -> str: ...

    @property
    def trigger(self) -> str: ...


class RunResult(Protocol):
    """How a run ended (an action's ``ActionResult``)."""

    @property
    def result(self) -> str: ...

    @property
    def details(self) -> dict[str, Any]: ...

    @property
    def per_target(self) -> dict[str, str]: ...


Method = TypeVar("Method", bound=Callable[..., None])


def _changes_output(method: Method) -> Method:
    """Counts a call of an :class:`ActionMetrics` method that changes what it exports."""
    @functools.wraps(method)
    def changing(self: ActionMetrics, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        finally:
            self._changes += 1  # after the change: a scrape that saw the old count renders again

    return cast(Method, changing)


class ActionMetrics(Collector):
    """The action metrics, registered as one collector. They change only through the
    methods below, which count the changes: a scrape renders them again only after one
    (:meth:`exposition_version`)."""

    def __init__(self, registry: CollectorRegistry, actions: list[str]) -> None:
        self._changes = 0
        self.requests = Counter("whatsapp_action_requests", "Every decision the webhook, a "
                                "schedule or the CLI made.", ["action", "outcome"],
                                registry=None)
        self.gc_runs = Counter("whatsapp_gc_runs", "Finished GC runs.",
                               ["kind", "trigger", "result"], registry=None)
        self.gc_deleted = Counter("whatsapp_gc_messages_deleted", "Messages deleted by message "
                                  "GC, from callbacks or row deltas; database where the row "
                                  "counts tell it, node where the callbacks do, else empty.",
                                  ["database", "node"], registry=None)
        self.gc_media_deleted = Counter("whatsapp_gc_media_items_deleted", "Media files "
                                        "deleted by media GC, from its completion callbacks.",
                                        registry=None)
        self.gc_callbacks = Counter("whatsapp_gc_callbacks", "GC callbacks the WA client "
                                    "POSTed, by what became of them (matched to a running "
                                    "GC, or why not).", ["kind", "outcome"], registry=None)
        self.gc_rows_after = Gauge("whatsapp_gc_rows_after_last_success", "Rows in messages "
                                   "after the last successful message GC.", ["database"],
                                   registry=None)
        self.gc_last_run = Gauge("whatsapp_gc_last_run_timestamp_seconds",
                                 "When the last GC run of this kind finished.", ["kind"],
                                 registry=None)
        self.gc_last_success = Gauge("whatsapp_gc_last_success_timestamp_seconds",
                                     "When the last successful GC run of this kind finished.",
                                     ["kind"], registry=None)
        self.gc_duration = Histogram("whatsapp_gc_duration_seconds",
                                     "GC runs from request to completion.", ["kind"],
                                     buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
                                     registry=None)
        self.cleanup_runs = Counter("whatsapp_cleanup_runs", "cleanup.sh runs per container.",
                                    ["container", "role", "trigger", "result"], registry=None)
        self.cleanup_last_run = Gauge("whatsapp_cleanup_last_run_timestamp_seconds",
                                      "When cleanup.sh last finished on this container.",
                                      ["container", "role"], registry=None)
        self.cleanup_last_success = Gauge("whatsapp_cleanup_last_success_timestamp_seconds",
                                          "When cleanup.sh last succeeded on this container.",
                                          ["container", "role"], registry=None)
        # Pre-created so dashboards and rate() see every series before the first event.
        for action in actions:
            for outcome in Outcome:
                self.requests.labels(action, outcome)
            kind = GC_ACTIONS.get(action)
            if kind is not None:
                for trigger in Trigger:
                    for result in Result:
                        self.gc_runs.labels(kind, trigger, result)
                for callback_outcome in CallbackOutcome:
                    self.gc_callbacks.labels(kind, callback_outcome)
        self._members = (self.requests, self.gc_runs, self.gc_deleted, self.gc_media_deleted,
                         self.gc_callbacks, self.gc_rows_after,
                         self.gc_last_run, self.gc_last_success, self.gc_duration,
                         self.cleanup_runs, self.cleanup_last_run, self.cleanup_last_success)
        registry.register(self)

    def describe(self) -> Iterator[Metric]:
        for member in self._members:
            yield from member.describe()

    def collect(self) -> Iterator[Metric]:
        for member in self._members:
            yield from member.collect()

    def exposition_version(self) -> object:
        """How many changes the methods below made."""
        return self._changes

    @_changes_output
    def containers_found(self, containers: list[WaContainer]) -> None:
        """Pre-create the cleanup counters of every WA container discovered, so that
        ``increase()`` sees a container's first failure. (Not the timestamps: a 0 there
        would read as "never cleaned" before the first run.)"""
        for container in containers:  # labels() returns the existing child if there is one
            for trigger in Trigger:
                for result in Result:
                    self.cleanup_runs.labels(container.name, container.role, trigger, result)

    @_changes_output
    def decided(self, action: str, outcome: str) -> None:
        self.requests.labels(action, outcome).inc()

    @_changes_output
    def callback_received(self, kind: str, outcome: str) -> None:
        """What became of one GC callback (the inbox's ``on_outcome``)."""
        self.gc_callbacks.labels(kind, outcome).inc()

    @_changes_output
    def finished(self, request: RunRequest, targets: list[str], result: RunResult,
                 started: float, ended: float) -> None:
        kind = GC_ACTIONS.get(request.action)
        if kind is not None:
            self.gc_runs.labels(kind, request.trigger, result.result).inc()
            if result.result != Result.DRY_RUN:
                self.gc_last_run.labels(kind).set(ended)
                self.gc_duration.labels(kind).observe(max(0.0, ended - started))
                if result.result == Result.SUCCESS:
                    self.gc_last_success.labels(kind).set(ended)
            if kind == GcKind.MEDIA:
                items = result.details.get("items_deleted")
                if isinstance(items, int) and items > 0:
                    self.gc_media_deleted.inc(items)
            else:
                for (database, node), deleted in deleted_by_source(result.details).items():
                    self.gc_deleted.labels(database, node).inc(deleted)
            for database, rows in rows_after_gc(request.action, result.result,
                                                result.details).items():
                self.gc_rows_after.labels(database).set(rows)
        elif request.action == "cleanup":
            containers: dict[str, Any] = result.details.get("containers", {})
            for name in targets:
                info = containers.get(name, {})
                role = str(info.get("role", ""))
                outcome = result.per_target.get(name, result.result)
                self.cleanup_runs.labels(name, role, request.trigger, outcome).inc()
                if outcome != Result.DRY_RUN:
                    self.cleanup_last_run.labels(name, role).set(ended)
                    if outcome == Result.SUCCESS:
                        self.cleanup_last_success.labels(name, role).set(ended)

    @_changes_output
    def restore(self, state: dict[str, Any]) -> None:
        """Last-run timestamps and the rows after the last successful message GC from the
        state file, so alerts on age and on GC's pace survive a restart."""
        for database, rows in state.get("gc_rows_after", {}).items():
            if isinstance(rows, int | float):
                self.gc_rows_after.labels(database).set(rows)
        roles: dict[str, str] = state.get("roles", {})
        for section, gc_gauge, cleanup_gauge in (
                ("last_run", self.gc_last_run, self.cleanup_last_run),
                ("last_success", self.gc_last_success, self.cleanup_last_success)):
            for key, when in state.get(section, {}).items():
                action, _, target = key.partition(":")
                if action in GC_ACTIONS:
                    gc_gauge.labels(GC_ACTIONS[action]).set(when)
                elif action == "cleanup" and target in roles:
                    cleanup_gauge.labels(target, roles[target]).set(when)


def deleted_by_source(details: dict[str, Any]) -> dict[tuple[str, str], int]:
    """``(database, node) -> messages deleted`` by one message-GC run, summing to its
    ``messages_deleted``. The callbacks give nodes (for a run of one round, whose node
    figures the details keep); the row counts give databases: one database takes every
    deletion, several share them by their row deltas (what is left has no database)."""
    total = details.get("messages_deleted")
    if not isinstance(total, int) or total <= 0:
        return {}
    before: dict[str, int] = details.get("databases_before") or {}
    after: dict[str, int] = details.get("databases_after") or {}
    only = next(iter(before)) if len(before) == 1 else ""
    nodes = {str(n.get("node") or ""): n["messages_deleted"] for n in details.get("nodes", [])
             if isinstance(n.get("messages_deleted"), int)}
    if details.get("rounds") == 1 and nodes and sum(nodes.values()) == total:
        return {(only, node): count for node, count in nodes.items() if count > 0}
    if only:
        return {(only, ""): total}
    shares: dict[tuple[str, str], int] = {}
    left = total
    for database in sorted(before):
        share = min(left, max(0, before[database] - after.get(database, before[database])))
        if share:
            shares[(database, "")] = share
            left -= share
    if left:
        shares[("", "")] = left
    return shares
