"""The row-count half of message-GC completion: when the rows of ``messages`` say a round is over.

Most businesses point the WA webhook at their own integration, so the GC callback often never
reaches the exporter, and ``wa-exporter run gc`` has no endpoint for it at all. The row count is
therefore watched from the moment the GC request is answered, beside the callbacks; a callback
that comes wins at once (see :mod:`exporter.actions.gc`).

The rule, as the README states it:

- The rows have *fallen* when any database's count goes below the lowest count seen for it
  so far in this round (the count just before the request is the first low).
- Once they have fallen, the round is complete when no database has reached a new low for
  ``settle_interval``. Rows added by traffic do not hold the round open.
- If they never fall, the client may be starting slowly: the round waits ``callback_timeout``
  from the request for the first fall, and then ends with no evidence that GC did anything
  (``unconfirmed``, not a success: it may have had nothing to delete, or never run).

The watch counts exactly: an engine's estimate can lag behind the client's deletions (InnoDB's
``TABLE_ROWS`` does, and moves by sampling), and a figure that stops moving while rows still go
would end a round early. An exact ``COUNT(*)`` of 10 M rows takes seconds on MariaDB, so the
counts are spaced to keep the watch's own database time at most :data:`WATCH_DB_SHARE` of the
round (:func:`next_count_after`).

A client that pauses longer than ``settle_interval`` between deletions would be cut short;
raise ``settle_interval`` for one that does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

ROW_COUNT = "row_count"  # the rows fell, then stopped falling
NO_CHANGE = "no_change"  # the rows did not fall within callback_timeout: no evidence
# The most of a round's time the watch may spend counting rows in the database.
WATCH_DB_SHARE = 0.10


def next_count_after(settle_interval: float, last_count_seconds: float) -> float:
    """Seconds from the end of one count to the start of the next: three counts per
    ``settle_interval`` (a round then ends at most about a third of it late), spaced further
    when a count is slow, so counting takes at most :data:`WATCH_DB_SHARE` of the time."""
    return max(settle_interval / 3, last_count_seconds * (1 / WATCH_DB_SHARE - 1))


@dataclass
class RowWatch:
    """Row counts of one round, fed in as they are read; ``started`` is when the request was
    sent, on the same clock as the ``now`` values given."""

    before: Mapping[str, int]
    started: float
    settle_interval: float
    grace: float  # callback_timeout: how long rows may take to start falling
    lows: dict[str, int] = field(init=False)
    last_fall: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.lows = dict(self.before)

    def observe(self, counts: Mapping[str, int], now: float) -> None:
        """One reading of every database's rows."""
        for database, rows in counts.items():
            low = self.lows.get(database)
            if low is not None and rows < low:
                self.last_fall = now
            if low is None or rows < low:  # a database new in this round starts its own low
                self.lows[database] = rows

    def verdict(self, now: float) -> str | None:
        """:data:`ROW_COUNT` or :data:`NO_CHANGE` once the round is complete, else None."""
        if self.last_fall is not None:
            return ROW_COUNT if now - self.last_fall >= self.settle_interval else None
        return NO_CHANGE if now - self.started >= self.grace else None

    @property
    def deleted(self) -> int:
        """Rows gone by the lows: what GC deleted, not counting rows traffic added since."""
        return sum(max(0, rows - self.lows.get(database, rows))
                   for database, rows in self.before.items())
