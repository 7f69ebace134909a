"""The WA client's own view of itself: ``/v1/stats/app``, ``/v1/stats/db`` and
``/v1/settings/application``, read through the WA API client and parsed into plain data.

The stats answers hold a map of families, each ``{"data": [{"labels": {…}, "value": 450}],
"help": "…", "type": "gauge"}``. With multiconnect the map is keyed by node first
(``"host:container-id"``), and for ``/v1/stats/db`` only the primary master answers: the
other nodes give ``{}``. What the documentation shows is parsed; what does not fit (a family
without data, a value that is not a number) is skipped and named in ``skipped``, so a newer
client's additions never break the reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exporter.sources.wa_api import WaApiClient


@dataclass(frozen=True)
class ClientSample:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class ClientFamily:
    """One family as the client reports it: its own name, help and type (lower case; empty
    when the answer gives none), for one node (None on a single instance)."""

    name: str
    help: str
    type: str
    node: str | None
    samples: list[ClientSample]


@dataclass
class StatsReading:
    families: list[ClientFamily] = field(default_factory=list)
    empty_nodes: list[str] = field(default_factory=list)  # answered {} (non-primary masters)
    skipped: list[str] = field(default_factory=list)  # what was not understood, and why

    def total(self, name: str) -> float | None:
        """The sum of every sample of family ``name`` over all nodes; None if absent."""
        values = [s.value for f in self.families if f.name == name for s in f.samples]
        return sum(values) if values else None


def parse_stats(section: dict[str, Any]) -> StatsReading:
    """The ``app`` or ``db`` object of a stats answer, single instance or keyed by node."""
    reading = StatsReading()
    for key, value in section.items():
        if _is_family(value):
            _add_family(reading, str(key), value, None)
        elif isinstance(value, dict) and not value:
            reading.empty_nodes.append(str(key))
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):
            for name, family in value.items():
                if _is_family(family):
                    _add_family(reading, str(name), family, str(key))
                else:
                    reading.skipped.append(f"{key}/{name}: not a family (no data list)")
        else:
            reading.skipped.append(f"{key}: not a family (no data list) nor a node")
    return reading


def _is_family(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("data"), list)


def _add_family(reading: StatsReading, name: str, family: dict[str, Any],
                node: str | None) -> None:
    samples = []
    for point in family["data"]:
        number = _number(point.get("value")) if isinstance(point, dict) else None
        if number is None:
            reading.skipped.append(f"{name}: a value that is not a number")
            continue
        labels = point.get("labels")
        samples.append(ClientSample(
            {str(k): _label_value(v) for k, v in labels.items()}
            if isinstance(labels, dict) else {}, number))
    kind = family.get("type")
    reading.families.append(ClientFamily(
        name, str(family.get("help") or ""), kind.strip().lower() if isinstance(kind, str) else "",
        node, samples))


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _label_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class ClientSettings:
    """What ``/v1/settings/application`` says about GC and callbacks; None where it is silent."""

    gc_enabled: dict[str, bool]  # garbagecollector_enable: "messages", "media"
    callback_persist: bool | None

    @property
    def message_gc_off(self) -> bool:
        """The client's own message GC is off (as it says; unknown counts as on)."""
        return self.gc_enabled.get("messages") is False


def parse_application_settings(application: dict[str, Any]) -> ClientSettings:
    gc = application.get("garbagecollector_enable")
    enabled = ({str(kind): on for kind, on in gc.items() if isinstance(on, bool)}
               if isinstance(gc, dict) else {})
    persist = application.get("callback_persist")
    return ClientSettings(enabled, persist if isinstance(persist, bool) else None)


class WaClientView:
    """The three reads, through the shared WA API client (its login, TLS and timeouts)."""

    def __init__(self, api: WaApiClient) -> None:
        self.api = api

    def app(self) -> StatsReading:
        return parse_stats(self.api.stats_app())

    def db(self) -> StatsReading:
        return parse_stats(self.api.stats_db())

    def settings(self) -> ClientSettings:
        return parse_application_settings(self.api.application_settings())
