"""The WA client's own view, relayed: ``/v1/stats/app`` every refresh (cheap, in memory),
``/v1/stats/db`` rarely (at start, after each message GC, on a long interval: the app wiring
asks for the read after a GC through the refresher) and ``/v1/settings/application``.

Each endpoint is its own collector, so each has its ``whatsapp_exporter_collector_success``
and its figures age out after ``stale_after`` as everywhere else; nothing here runs during a
scrape. The families and their names follow :mod:`exporter.collectors.relay`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily

from exporter.collectors.base import Collector, described
from exporter.collectors.relay import relay
from exporter.config import CollectorSettings
from exporter.errors import SourceError
from exporter.sources.wa_stats import ClientSettings, StatsReading

log = logging.getLogger(__name__)


class Claims:
    """Which collector exports each relayed name, so that two never export one (a newer
    client could report a family under both endpoints, or one named like ours)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: dict[str, str] = {}

    def claim(self, owner: str, name: str) -> bool:
        with self._lock:
            return self._owner.setdefault(name, owner) == owner

    def keep_only(self, owner: str, names: set[str]) -> None:
        """``owner`` exports ``names`` now: what else it held is free again."""
        with self._lock:
            for name in [n for n, o in self._owner.items() if o == owner and n not in names]:
                del self._owner[name]


class ClientStatsCollector(Collector):
    """One stats endpoint of the client, every family relayed."""

    def __init__(self, name: str, read: Callable[[], StatsReading], settings: CollectorSettings,
                 claims: Claims, documented: Sequence[Metric]) -> None:
        super().__init__(settings)
        self.name = name
        self.read = read
        self.claims = claims
        self.documented = described(documented)
        self._skipped: list[str] = []
        for family in self.documented:
            claims.claim(name, family.name)

    def refresh(self) -> Sequence[Metric]:
        reading = self.read()
        if not reading.families and reading.empty_nodes:
            raise SourceError(f"every node answered without stats ({', '.join(reading.empty_nodes)}"
                              "): is the primary master down?", kind="empty")
        relayed = relay(reading.families, lambda n: not self.claims.claim(self.name, n))
        self.claims.keep_only(self.name, {f.name for f in relayed.families}
                              | {f.name for f in self.documented})
        skipped = reading.skipped + relayed.skipped
        if skipped and skipped != self._skipped:  # once per change, not per refresh
            log.warning("WA client stats not relayed", extra={
                "collector": self.name, "err": "; ".join(skipped[:5])
                + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")})
        self._skipped = skipped
        return relayed.families

    def describe(self) -> Sequence[Metric]:
        return self.documented


def app_families() -> list[Metric]:
    """The families Meta documents for ``/v1/stats/app``, as relayed (more are relayed)."""
    return [
        GaugeMetricFamily("whatsapp_client_callback_queue_size", "Current callback queue size"),
        SummaryMetricFamily("whatsapp_client_callback_requests_duration_seconds",
                            "Total duration(ms) of callback requests"),
        SummaryMetricFamily("whatsapp_client_db_request_duration_seconds",
                            "Total duration(us) of db requests"),
    ]


def db_families() -> list[Metric]:
    """The families Meta documents for ``/v1/stats/db``, as relayed."""
    return [
        GaugeMetricFamily("whatsapp_client_db_contacts", "Current number of contacts in DB"),
        GaugeMetricFamily("whatsapp_client_db_message_receipts",
                          "Current number of message receipts in DB"),
        GaugeMetricFamily("whatsapp_client_db_messages", "Current number of messages in DB"),
        GaugeMetricFamily("whatsapp_client_db_pending_callbacks",
                          "Current number of pending callbacks in DB"),
        GaugeMetricFamily("whatsapp_client_db_pending_messages",
                          "Current number of pending messages in DB"),
    ]


class ClientSettingsCollector(Collector):
    """``/v1/settings/application``: whether the client collects its own garbage, and
    whether it keeps undelivered callbacks in its database."""

    name = "wa_settings"

    def __init__(self, read: Callable[[], ClientSettings], settings: CollectorSettings,
                 claims: Claims, schedules_gc: bool) -> None:
        super().__init__(settings)
        self.read = read
        self.schedules_gc = schedules_gc
        self._nobody_collects = False
        for family in self.describe():
            claims.claim(self.name, family.name)

    def refresh(self) -> Sequence[Metric]:
        settings = self.read()
        nobody = settings.message_gc_off and not self.schedules_gc
        if nobody and not self._nobody_collects:
            log.warning("nothing deletes old messages", extra={"err": (
                "the WA client's own message GC is off (garbagecollector_enable.messages "
                "false) and no schedule here runs message GC"), "fix": (
                "allow gc in actions.allowed with a gc schedule, or turn the client's message "
                "GC on (PATCH /v1/settings/application)")})
        self._nobody_collects = nobody
        return self._families(settings)

    def describe(self) -> Sequence[Metric]:
        return described(self._families(ClientSettings({}, None)))

    @staticmethod
    def _families(settings: ClientSettings) -> list[Metric]:
        gc = GaugeMetricFamily("whatsapp_client_gc_enabled",
                               "1 if the WA client's own garbage collector is on for this kind "
                               "(garbagecollector_enable).", labels=["kind"])
        for kind, on in sorted(settings.gc_enabled.items()):
            gc.add_metric([kind], 1.0 if on else 0.0)
        persist = GaugeMetricFamily("whatsapp_client_callback_persist",
                                    "1 if the WA client keeps undelivered callbacks in its "
                                    "database (callback_persist).")
        if settings.callback_persist is not None:
            persist.add_metric([], 1.0 if settings.callback_persist else 0.0)
        return [gc, persist]
