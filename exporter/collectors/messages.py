"""``whatsapp_db_up`` and the ``messages`` table figures, per WA database; the row counts
also feed the hour-of-week inflow profile (``whatsapp_messages_inflow_by_hour``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.collectors.base import Collector, Snapshot, described
from exporter.config import MessagesSettings
from exporter.errors import Degraded
from exporter.inflow import InflowProfile
from exporter.sources.database import MessagesSource, TableReading, empty_prefix_warning

log = logging.getLogger(__name__)


class MessagesCollector(Collector):
    name = "messages"

    def __init__(self, source: MessagesSource, settings: MessagesSettings,
                 clock: Callable[[], float] = time.time,
                 profile: InflowProfile | None = None) -> None:
        super().__init__(settings)
        self.source = source
        self.clock = clock
        self.profile = profile
        # Last good reading per database and when it was taken: served until stale.
        self._last: dict[str, tuple[TableReading, float]] = {}
        self._up: dict[str, bool] = {}
        self._found_none = False  # the last refresh found no WA database: warned once
        self._named: set[str] = set()  # matched by an empty prefix, named in a warning

    def refresh(self) -> Sequence[Metric]:
        reading = self.source.read()
        now = self.clock()
        up = {name: True for name in reading.tables} | {name: False for name in reading.errors}
        for name, table in reading.tables.items():
            self._last[name] = (table, now)
        for name in [n for n in self._last if n not in up]:
            del self._last[name]  # the database was dropped, or lost its messages table
        for name, error in reading.errors.items():
            if self._up.get(name, True):
                log.warning("database query failed", extra={"database": name, "err": str(error),
                                                            "kind": error.kind})
        for name in reading.tables:
            if self._up.get(name) is False:
                log.info("database recovered", extra={"database": name})
        self._up = up
        found_none = not up
        if found_none and not self._found_none:
            log.warning("no WA database found", extra={"err": self.source.explain_none_found()})
        self._found_none = found_none
        self._warn_empty_prefix(up)
        if self.profile is not None:
            self.profile.feed({name: t.rows for name, t in reading.tables.items()}, now)
        families = self._families(up, now, discovered=len(up))
        if reading.errors:
            failed = ", ".join(sorted(reading.errors))
            raise Degraded(f"queries failed on {failed}", families)
        return families

    def _warn_empty_prefix(self, found: dict[str, bool]) -> None:
        """An empty prefix takes every database with a messages table: name them once each."""
        if self.source.prefix or not set(found) - self._named:
            return
        self._named |= set(found)
        log.warning("WA_DB_NAME_PREFIX is empty", extra={
            "err": empty_prefix_warning(sorted(found))})

    def latest(self) -> dict[str, TableReading]:
        """The last fresh reading of each database (what ``/metrics`` shows now)."""
        now = self.clock()
        return {name: table for name, (table, at) in self._last.items()
                if now - at <= self.stale_after and self._up.get(name, False)}

    def describe(self) -> Sequence[Metric]:
        return described(self._families({}, 0.0, discovered=0))

    def failed(self, error: BaseException, previous: Snapshot | None, now: float) -> Snapshot:
        """The server is out of reach: every known database is down; old figures age out."""
        names = list(self._up) or [f"{self.source.prefix}*"]
        self._up = dict.fromkeys(self._up, False)
        return Snapshot(self._families(dict.fromkeys(names, False), now, discovered=None), now)

    def close(self) -> None:
        self.source.close()

    def _families(self, up: dict[str, bool], now: float, discovered: int | None) -> list[Metric]:
        db_up = GaugeMetricFamily("whatsapp_db_up",
                                  "1 if the last query against that database worked.",
                                  labels=["database"])
        rows = GaugeMetricFamily("whatsapp_messages_table_rows",
                                 "Rows in the messages table (exact or estimated).",
                                 labels=["database"])
        exact = GaugeMetricFamily("whatsapp_messages_table_rows_exact",
                                  "1 if the row figure is an exact COUNT(*), 0 if an engine "
                                  "estimate.", labels=["database"])
        source = GaugeMetricFamily("whatsapp_messages_table_rows_source",
                                   "Where the row figure came from (always 1): count (an exact "
                                   "COUNT(*)), n_live_tup or reltuples (PostgreSQL), table_rows "
                                   "(MySQL/MariaDB information_schema).",
                                   labels=["database", "source"])
        size = GaugeMetricFamily("whatsapp_messages_table_size_bytes",
                                 "Data and index bytes of the messages table.",
                                 labels=["database"])
        for name in sorted(up):
            db_up.add_metric([name], 1.0 if up[name] else 0.0)
            last = self._last.get(name)
            if last is None or now - last[1] > self.stale_after:
                continue
            table = last[0]
            rows.add_metric([name], float(table.rows))
            exact.add_metric([name], 1.0 if table.exact else 0.0)
            source.add_metric([name, table.source], 1.0)
            size.add_metric([name], float(table.size_bytes))
        families: list[Metric] = [db_up, rows, exact, source, size]
        if self.profile is not None:
            inflow = GaugeMetricFamily("whatsapp_messages_inflow_by_hour",
                                       "Rows that came into the messages tables per hour, in "
                                       "the latest occurrence of each hour of the week seen in "
                                       "the last 7 days (0 is Monday 00:00 in "
                                       "actions.timezone; the hour under way extrapolated).",
                                       labels=["hour_of_week"])
            for hour, per_hour in self.profile.per_hour(now).items():
                inflow.add_metric([str(hour)], per_hour)
            families.append(inflow)
        if discovered is not None:
            count = GaugeMetricFamily("whatsapp_messages_databases",
                                      "WA databases found: name starts with the prefix and holds "
                                      "a messages table.")
            count.add_metric([], float(discovered))
            families.append(count)
        return families
