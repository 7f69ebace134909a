"""The upgrade-readiness rule for one WA database, shared by ``wa-exporter upgrade-check``
(:mod:`exporter.upgrade.report`) and ``whatsapp_upgrade_ready``
(:mod:`exporter.collectors.readiness`): the facts it reads and the verdict, nothing else.

Meta's guide: a ``messages`` table above 2 million rows is *large* and should get message GC
around an upgrade. A message GC that is running (wait for it) or whose last run did not
succeed (the WA client has trouble) also blocks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatabaseFacts:
    name: str
    rows: int | None = None  # None: could not be counted
    exact: bool = True
    error: str = ""

    def ready(self, bound: int) -> bool:
        return self.rows is not None and self.rows < bound


@dataclass(frozen=True)
class GcFacts:
    """From the runner's state file (``last_run``/``last_success`` of ``gc``), the audit log
    (the last result, for people) and the cluster lock (running)."""

    last_success: float | None = None  # when the last successful message GC finished
    last_run: float | None = None  # when the last message GC (any result) finished
    last_result: str | None = None
    running: bool | None = None  # None: the lock could not be asked
    running_error: str = ""

    @property
    def failing(self) -> bool:
        """The last message GC did not succeed (failed, error, timeout, interrupted)."""
        return self.last_run is not None and (self.last_success is None
                                              or self.last_run > self.last_success)


def database_ready(db: DatabaseFacts, gc: GcFacts, bound: int) -> bool:
    """The verdict for one database: its table under the bound, and GC neither running nor
    failing (GC covers every database of the install at once)."""
    return db.ready(bound) and not gc.running and not gc.failing
