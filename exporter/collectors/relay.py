"""The WA client's own stats families as ours: ``whatsapp_client_<name>``, by one rule for
every family, documented or new.

- Base units: a ``ms``, ``us`` or ``ns`` word of the name becomes ``seconds`` and its values
  are converted (a count of observations, ``_count`` or ``_bucket``, keeps its value; a
  bucket's ``le`` bound is converted).
- A ``<stem>_count`` and ``<stem>_sum`` pair of one node (the client reports each as its
  own counter) becomes one summary ``whatsapp_client_<stem>``, or a histogram with a
  ``<stem>_bucket`` family beside it: promtool's lint refuses ``_count`` and ``_sum`` on
  anything else.
- Counters end in ``_total``; a type the client does not give is ``unknown``.
- The client's labels are kept (names made valid); on multiconnect each series gets
  ``node="host:container-id"``, a client label already called ``node`` (or a reserved
  ``le``/``quantile``) becomes ``exported_<name>``, as Prometheus renames clashing labels.

A family whose name another family already took with another type, a series that repeats
one already relayed, and a name ``taken`` by another collector are skipped and named.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import Metric

from exporter.sources.wa_stats import ClientFamily, ClientSample

PREFIX = "whatsapp_client_"
# The client's time units, in seconds.
TIME_UNITS = {"ms": 1e-3, "milliseconds": 1e-3, "us": 1e-6, "microseconds": 1e-6,
              "ns": 1e-9, "nanoseconds": 1e-9}
PARTS = ("_count", "_sum", "_bucket")
NODE = "node"


@dataclass(frozen=True)
class RelayName:
    name: str  # whatsapp_client_…, in base units (a counter's without _total)
    scale: float  # a value in the client's unit times this is in base units


def relay_name(raw: str) -> RelayName:
    words = re.sub(r"[^a-zA-Z0-9_]", "_", raw).split("_")
    scale = 1.0
    for i, word in enumerate(words):
        if word.lower() in TIME_UNITS:
            scale, words[i] = TIME_UNITS[word.lower()], "seconds"
            break
    name = PREFIX + "_".join(words)
    if name.endswith(("_count", "_bucket")):
        scale = 1.0  # observations are counted, not measured
    return RelayName(name, scale)


@dataclass
class Relayed:
    families: list[Metric] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class _Builder:
    def __init__(self, taken: Callable[[str], bool]) -> None:
        self.taken = taken
        self.metrics: dict[str, Metric] = {}
        self.series: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
        self.skipped: list[str] = []

    def family(self, name: str, help_text: str, kind: str, source: str) -> Metric | None:
        held = self.metrics.get(name)
        if held is None:
            if self.taken(name):
                self.skipped.append(f"{source}: {name} is exported by another collector")
                return None
            held = self.metrics[name] = Metric(name, help_text or f"{source} (WA client)", kind)
        elif held.type != kind:
            self.skipped.append(f"{source}: {name} is already a {held.type}")
            return None
        return held

    def add(self, metric: Metric, sample_name: str, labels: dict[str, str], value: float,
            source: str) -> None:
        key = (sample_name, tuple(sorted(labels.items())))
        if key in self.series:
            self.skipped.append(f"{source}: a repeated series {labels}")
            return
        self.series.add(key)
        metric.add_sample(sample_name, labels, value)


def relay(families: Iterable[ClientFamily], taken: Callable[[str], bool] = lambda _: False
          ) -> Relayed:
    """Every family of one reading, converted; ``taken`` names ours owned elsewhere."""
    families = list(families)
    by_node: dict[str | None, set[str]] = {}
    for family in families:
        by_node.setdefault(family.node, set()).add(family.name)
    builder = _Builder(taken)
    for family in families:
        stem, part = _paired(family.name, by_node[family.node])
        if stem is None:
            _plain(builder, family)
        else:
            kind = "histogram" if stem + "_bucket" in by_node[family.node] else "summary"
            _part(builder, family, stem, part, kind)
    # A family none of whose values could be read is left out, not shown empty.
    return Relayed([_grouped(m) for m in builder.metrics.values() if m.samples],
                   builder.skipped)


def _grouped(metric: Metric) -> Metric:
    """A summary's or histogram's samples series by series, as OpenMetrics requires (one
    label set's buckets, count and sum together; a scraper asking for OpenMetrics, as
    Prometheus does, refuses the whole answer otherwise); other families as they are."""
    if metric.type not in ("summary", "histogram"):
        return metric
    order = {"_bucket": 0, "_count": 1, "_sum": 2}
    groups: dict[tuple[tuple[str, str], ...], int] = {}
    for sample in metric.samples:
        groups.setdefault(tuple(sorted((k, v) for k, v in sample.labels.items()
                                       if k != "le")), len(groups))

    def position(sample: Any) -> tuple[int, int, float]:
        series = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        part = order.get(sample.name[len(metric.name):], 3)
        return groups[series], part, _le(sample.labels.get("le", ""))

    metric.samples.sort(key=position)
    return metric


def _le(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def _paired(name: str, siblings: set[str]) -> tuple[str | None, str]:
    for part in PARTS:
        stem = name.removesuffix(part)
        if stem != name and {stem + "_count", stem + "_sum"} <= siblings:
            return stem, part
    return None, ""


def _plain(builder: _Builder, family: ClientFamily) -> None:
    target = relay_name(family.name)
    kind = family.type if family.type in ("counter", "gauge") else "unknown"
    name = target.name.removesuffix("_total") if kind == "counter" else target.name
    metric = builder.family(name, _help(family.help, target.scale), kind, family.name)
    if metric is None:
        return
    sample_name = name + "_total" if kind == "counter" else name
    for sample in family.samples:
        builder.add(metric, sample_name, _labels(sample, family.node, ()),
                    sample.value * target.scale, family.name)


def _part(builder: _Builder, family: ClientFamily, stem: str, part: str, kind: str) -> None:
    target = relay_name(stem)
    metric = builder.family(target.name, family.help if part == "_sum" else "", kind,
                            stem)
    if metric is None:
        return
    if part == "_sum" and family.help:
        metric.documentation = _help(family.help, target.scale)  # it names the measure
    own = ("le",) if part == "_bucket" and kind == "histogram" else ()
    for sample in family.samples:
        labels = _labels(sample, family.node, own)
        value = sample.value * (target.scale if part == "_sum" else 1.0)
        if "le" in own and "le" in labels:
            labels["le"] = _bound(labels["le"], target.scale)
        builder.add(metric, target.name + part, labels, value, family.name)


def _help(text: str, scale: float) -> str:
    return f"{text} (relayed in seconds)" if text and scale != 1.0 else text


def _labels(sample: ClientSample, node: str | None, own: tuple[str, ...]) -> dict[str, str]:
    """The client's labels, valid and clear of ours; ``node`` added on multiconnect."""
    reserved = {"le", "quantile"} - set(own)
    if node is not None:
        reserved.add(NODE)
    labels: dict[str, str] = {}
    for raw, value in sample.labels.items():
        name = re.sub(r"[^a-zA-Z0-9_]", "_", raw)
        if not name or name[0].isdigit() or name.startswith("__"):
            name = "label_" + name.lstrip("_")
        labels["exported_" + name if name in reserved else name] = value
    if node is not None:
        labels[NODE] = node
    return labels


def _bound(le: str, scale: float) -> str:
    try:
        bound = float(le)
    except ValueError:
        return le
    return le if math.isinf(bound) or scale == 1.0 else format(bound * scale, ".12g")
