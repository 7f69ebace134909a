"""The message-GC round watch's own database time on a 10 M-row MariaDB table: the share of
a round's time the exact row counts keep the database busy, with the counts spaced by the
time they take (now) against the fixed three counts per ``settle_interval`` (before).

One round each, with the default GC settings (settle_interval 30 s): the WA stand-in deletes
``BENCH_GC_WATCH_DELETE`` read rows (60,000) in batches of 10,000, ``BENCH_GC_WATCH_PAUSE``
(10 s) apart, and sends no callback, as in most deployments, so the row count ends the
round. The deleted rows are put back after each round. "Before" is the same code with the
count spacing of the previous release (``settle_interval / 3``, whatever a count costs),
swapped in by this script. The table (``wabench_10m``) is kept between runs.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from bench.bench_messages import PREFIX, _fill, _settings
from exporter.actions import gc as gc_module
from exporter.actions.base import RunContext
from exporter.actions.callbacks import CallbackInbox
from exporter.actions.gc import GcAction
from exporter.config import GcSettings, MessagesSettings, WaApiSettings
from exporter.sources.database import MessagesSource, ServerReading, open_counting_source
from exporter.sources.wa_api import WaApiClient
from tests.wa_standin.server import StandIn

ROWS = int(os.environ.get("BENCH_GC_WATCH_ROWS", "10000000"))
DATABASE = "wabench_10m"
DELETE = int(os.environ.get("BENCH_GC_WATCH_DELETE", "60000"))
PAUSE = float(os.environ.get("BENCH_GC_WATCH_PAUSE", "10"))


class TimedSource:
    """The counting source, with the time each count took."""

    def __init__(self, source: MessagesSource) -> None:
        self.source = source
        self.counts: list[tuple[float, float]] = []  # (start, seconds), monotonic

    def read(self) -> ServerReading:
        started = time.monotonic()
        try:
            return self.source.read()
        finally:
            self.counts.append((started, time.monotonic() - started))


def _round(url: sa.URL, spacing: Callable[[float, float], float] | None) -> dict[str, Any]:
    timed = TimedSource(open_counting_source(_settings(url, "MYSQL"),
                                             MessagesSettings(query_timeout=60)))
    original = gc_module.next_count_after
    if spacing is not None:
        gc_module.next_count_after = spacing  # type: ignore[assignment]
    try:
        with StandIn(url.render_as_string(hide_password=False), gc_batch_size=10_000,
                     gc_max_rows_per_round=DELETE, gc_batch_pause=PAUSE) as wa:
            client = WaApiClient(WaApiSettings.model_validate({
                "WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}))
            action = GcAction(client, timed, CallbackInbox(), GcSettings())  # type: ignore[arg-type]
            rounds: list[dict[str, Any]] = []
            result = action.run(RunContext("bench", "gc", "manual", progress=lambda event, **f:
                                           rounds.append(f) if event == "round" else None))
            client.close()
    finally:
        gc_module.next_count_after = original  # type: ignore[assignment]
        timed.source.close()
    watch = timed.counts[1:-1]  # the first count is before the request, the last after it
    round_seconds = result.details["duration_seconds"]
    db_seconds = sum(seconds for _, seconds in watch)
    return {"result": result.result, "completed_by": rounds[0].get("completed_by"),
            "deleted": result.details["messages_deleted"], "round_seconds": round_seconds,
            "counts": len(watch), "count_median_s": statistics.median(s for _, s in watch),
            "watch_db_seconds": db_seconds, "watch_db_share": db_seconds / round_seconds}


def main() -> None:
    print(f"  table {DATABASE}: {ROWS:,} rows (MariaDB)", flush=True)
    url = _fill("MYSQL", DATABASE, ROWS)
    assert PREFIX and DATABASE.startswith(PREFIX)
    results = {}
    for name, spacing in (("before", lambda settle, _last: settle / 3), ("after", None)):
        results[name] = _round(url, spacing)
        _fill("MYSQL", DATABASE, ROWS)  # put the deleted rows back
        r = results[name]
        print(f"  {name}: {r['result']} ({r['completed_by']}), {r['deleted']:,} deleted in "
              f"{r['round_seconds']:.0f} s; {r['counts']} counts of {r['count_median_s']:.1f} s "
              f"(median): the watch kept the database busy {r['watch_db_seconds']:.0f} s, "
              f"{100 * r['watch_db_share']:.0f} % of the round (goal <= 10 %)", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
