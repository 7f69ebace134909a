"""A collector's exposition, compared with a checked-in fixture (as node_exporter's end-to-end
output test does). ``UPDATE_FIXTURES=1 make test-fast`` writes the fixtures anew; read the
diff before committing it: every changed line is a change operators and dashboards see."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector as PromCollector

from exporter.collectors.base import Collector
from exporter.errors import Degraded

FIXTURES = Path(__file__).parent / "fixtures"
UPDATE = os.environ.get("UPDATE_FIXTURES", "") not in ("", "0")

# As the exporter serves them (exporter.app turns ``*_created`` off), whichever test ran first.
disable_created_metrics()  # type: ignore[no-untyped-call]


class _Only:
    """The collector under test as the registry sees it: its description and these families."""

    def __init__(self, collector: Collector, families: Sequence[Metric]) -> None:
        self.collector = collector
        self.families = families

    def describe(self) -> Sequence[Metric]:
        return self.collector.describe()

    def collect(self) -> Iterable[Metric]:
        return self.families


def refreshed(collector: Collector) -> Sequence[Metric]:
    """What one refresh serves: its families, or the ones a partial failure still reports."""
    try:
        return collector.refresh()
    except Degraded as degraded:
        return degraded.families


def exposition(collector: Collector, families: Sequence[Metric], *, relayed: bool = False
               ) -> str:
    """The text format of ``families`` from a fresh registry holding only ``collector``;
    every family must be one the collector describes (name and type). A collector that
    relays families it cannot know in advance (``relayed``) describes those it knows: their
    types must match."""
    described = {(f.name, f.type) for f in collector.describe()}
    known = {name for name, _ in described}
    undescribed = {(f.name, f.type) for f in families
                   if not relayed or f.name in known} - described
    assert not undescribed, f"{type(collector).__name__}.describe() lacks {sorted(undescribed)}"
    registry = CollectorRegistry()
    registry.register(_Only(collector, families))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def live_exposition(collector: PromCollector) -> str:
    """The text format of a collector read at every scrape, alone in a fresh registry; what
    it collects must be what it describes (names and types)."""
    described = {(f.name, f.type) for f in collector.describe()}
    collected = {(f.name, f.type) for f in collector.collect()}
    assert collected == described, f"{type(collector).__name__}: {collected ^ described}"
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def assert_matches_fixture(name: str, text: str) -> None:
    path = FIXTURES / name
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"no fixture {path}; write it with UPDATE_FIXTURES=1 make test-fast"
    assert text == path.read_text(encoding="utf-8"), (
        f"exposition differs from {path.relative_to(FIXTURES.parent.parent.parent)}; if the "
        "change is intended, UPDATE_FIXTURES=1 make test-fast and review the diff")
