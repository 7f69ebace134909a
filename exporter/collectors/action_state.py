"""What the actions hold right now, read at every scrape (cheap, in memory): actions in
flight, alerts deferred to the off-peak window, the window itself, and whether the audit log
keeps up. Each family is a function of state that changes under it, so none is kept between
scrapes (see :mod:`exporter.exposition`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collectors.base import described


class RunnerView(Protocol):
    """What runs and waits in the runner (the actions' ``Runner``)."""

    def running(self) -> list[str]:
        """The keys in flight here: ``gc``, ``cleanup:<container>``."""

    def deferred_count(self, action: str) -> int:
        """Alerts of ``action`` waiting for the off-peak window."""


class WindowView(Protocol):
    """The off-peak window in force (the runner's ``OffPeak``)."""

    def describe(self, now: float) -> dict[str, Any]: ...


class AuditHealth(Protocol):
    """Whether the audit log keeps up (the actions' ``AuditLog``)."""

    @property
    def write_errors(self) -> int: ...

    @property
    def pending(self) -> int: ...


class ActionStateMetrics(Collector):
    """``whatsapp_action_running`` and ``whatsapp_action_deferred_requests`` per action,
    and the off-peak window: in force (a learned one moves) and open now."""

    def __init__(self, actions: list[str], runner: RunnerView, window: WindowView,
                 clock: Callable[[], float] = time.time) -> None:
        self.actions = list(actions)
        self.runner = runner
        self.window = window
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        return iter(described(self.collect()))

    def collect(self) -> Iterator[Metric]:
        in_flight = {key.partition(":")[0] for key in self.runner.running()}
        running = GaugeMetricFamily("whatsapp_action_running", "1 while a run of this action "
                                    "is in flight in this exporter.", labels=["action"])
        deferred = GaugeMetricFamily("whatsapp_action_deferred_requests", "Alerts deferred to "
                                     "the off-peak window, waiting for it to open.",
                                     labels=["action"])
        for action in self.actions:
            running.add_metric([action], 1.0 if action in in_flight else 0.0)
            deferred.add_metric([action], float(self.runner.deferred_count(action)))
        now = self.window.describe(self.clock())
        info = GaugeMetricFamily("whatsapp_action_window_info", "The off-peak window in force "
                                 "(always 1): mode fixed, learned, learning (learned, on the "
                                 "fixed hours until a week of inflow is known) or always; "
                                 "start and end are local times in timezone.",
                                 labels=["mode", "start", "end", "timezone"])
        info.add_metric([now["mode"], now["start"], now["end"], now["timezone"]], 1.0)
        opened = GaugeMetricFamily("whatsapp_action_window_open", "1 while the off-peak "
                                   "window is open: alerts and schedules may start actions.")
        opened.add_metric([], 1.0 if now["open"] else 0.0)
        yield from (running, deferred, info, opened)


class AuditMetrics(Collector):
    """Whether the audit log keeps up: write errors, and records held in memory meanwhile."""

    def __init__(self, audit: AuditHealth) -> None:
        self.audit = audit

    def describe(self) -> Iterator[Metric]:
        return iter(described(self.collect()))

    def collect(self) -> Iterator[Metric]:
        errors = CounterMetricFamily("whatsapp_audit_write_errors",
                                     "Audit log writes that failed (e.g. a full disk).")
        errors.add_metric([], float(self.audit.write_errors))
        pending = GaugeMetricFamily("whatsapp_audit_pending_records",
                                    "Audit records kept in memory until the log can be written.")
        pending.add_metric([], float(self.audit.pending))
        yield from (errors, pending)
