"""``whatsapp_upgrade_ready``: the ``upgrade-check`` verdict per WA database, on the dashboard
before anyone runs the command.

Nothing is read at scrape time but what the process already holds: the messages collector's
last fresh row figures (an engine estimate above ``exact_count_below``; the command counts
exactly) and the runner's state file (re-read only when it changed). Whether a GC runs is
what this process runs and what the state file records as in flight (``wa-exporter run`` or
``upgrade-check --prepare`` on the same state directory); the command also asks the cluster
lock, which this collector does not, to keep the database out of ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collectors.messages import MessagesCollector
from exporter.config import UpgradeSettings
from exporter.readiness import DatabaseFacts, GcFacts, database_ready


class RunState(Protocol):
    """The runner's state file (the actions' ``StateFile``), as it is on disk now."""

    def read(self) -> dict[str, Any]: ...


class ReadinessCollector(Collector):
    def __init__(self, messages: MessagesCollector, state: RunState, settings: UpgradeSettings,
                 running_here: Callable[[], list[str]] = list) -> None:
        self.messages = messages
        self.state = state
        self.bound = settings.large_table_rows
        self.running_here = running_here

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        state = self.state.read()
        in_flight = any(run.get("action") == "gc" for run in state["running"].values())
        gc = GcFacts(last_success=state["last_success"].get("gc"),
                     last_run=state["last_run"].get("gc"),
                     running=in_flight or "gc" in self.running_here())
        ready, bound = self._families()
        for name, table in sorted(self.messages.latest().items()):
            db = DatabaseFacts(name, table.rows, table.exact)
            ready.add_metric([name], 1.0 if database_ready(db, gc, self.bound) else 0.0)
        bound.add_metric([], float(self.bound))
        yield from (ready, bound)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily("whatsapp_upgrade_ready",
                                  "1 if this WA database is ready for a WA client upgrade: its "
                                  "messages table under upgrade.large_table_rows, and message "
                                  "GC neither running nor failing.", labels=["database"]),
                GaugeMetricFamily("whatsapp_upgrade_large_table_rows",
                                  "Rows from which a messages table counts as large "
                                  "(upgrade.large_table_rows; the guide: 2 million)."))
