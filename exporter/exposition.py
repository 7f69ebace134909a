"""The ``/metrics`` body: prometheus_client's own encoders, collector by collector, each
collector's text kept until it changes.

Most of what a scrape shows changes far less often than it is scraped: a collector's snapshot
once per refresh, the action counters once per decision. Rendering them again for every
scrape was most of a scrape's cost (about 0.5 ms for ~125 lines, two fifths of it the action
counters). A collector that can tell when its output changed says so with
``exposition_version()``: a value that changes with every change of its output and never
comes back to an earlier value (a count of changes, a snapshot compared by identity), as
the version read before a render may be paired with a change made during it; the next
change moves the version on and that text is never served again. Its text is rendered
again only when that value changes; every other collector (process figures, readiness, the
audit log's figures, whether an action runs) is rendered on each scrape, as before. The
body is byte for byte what ``prometheus_client``'s encoder gives for the whole registry.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

# Encodings kept per collector. The Accept header picks the encoding (text or OpenMetrics, its
# version, its escaping); a client cycling through made-up versions must not grow the cache.
MAX_KEPT_ENCODINGS = 4

Encoder = Callable[[Any], bytes]


class _One:
    """One collector seen as a registry, which is all an encoder asks for."""

    __slots__ = ("collector",)

    def __init__(self, collector: Collector | None) -> None:
        self.collector = collector

    def collect(self) -> Iterable[Metric]:
        return self.collector.collect() if self.collector is not None else ()


class Registry(CollectorRegistry):
    """The registry the exporter registers everything in; it also remembers the order of
    its collectors, to render them one by one (``CollectorRegistry.collect`` follows the
    same order)."""

    def __init__(self) -> None:
        super().__init__(auto_describe=False)
        self._ordered: list[Collector] = []
        # collector -> {content type: (version, text)}
        self._texts: dict[Collector, dict[str, tuple[object, bytes]]] = {}

    def register(self, collector: Collector) -> None:
        super().register(collector)  # refuses a name registered twice
        self._ordered = [*self._ordered, collector]

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self._ordered = [c for c in self._ordered if c is not collector]
        self._texts.pop(collector, None)

    def render(self, encoder: Encoder, content_type: str) -> bytes:
        # The encoding's trailer (OpenMetrics' "# EOF"), once, after every collector's text.
        trailer = encoder(_One(None))
        parts = []
        for collector in self._ordered:  # a copy: (un)registering swaps the list
            version_of = getattr(collector, "exposition_version", None)
            if version_of is None:
                parts.append(_body(encoder, collector, trailer))
                continue
            version = version_of()
            kept = self._texts.setdefault(collector, {})
            held = kept.get(content_type)
            if held is not None and held[0] == version:
                parts.append(held[1])
                continue
            text = _body(encoder, collector, trailer)
            if content_type not in kept and len(kept) >= MAX_KEPT_ENCODINGS:
                kept.clear()
            kept[content_type] = (version, text)
            parts.append(text)
        parts.append(trailer)
        return b"".join(parts)


class PythonGcCollector(GCCollector):
    """prometheus_client's ``python_gc_*`` figures, which change only when Python's cyclic
    garbage collector runs."""

    def exposition_version(self) -> object:
        return tuple((s["collections"], s["collected"], s["uncollectable"])
                     for s in gc.get_stats())


def _body(encoder: Encoder, collector: Collector, trailer: bytes) -> bytes:
    text = encoder(_One(collector))
    return text[:len(text) - len(trailer)] if trailer else text


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The body and content type of a scrape whose Accept header is ``accept``."""
    encoder, content_type = choose_encoder(accept or "")
    if isinstance(registry, Registry):
        return registry.render(encoder, content_type), content_type
    return encoder(registry), content_type
