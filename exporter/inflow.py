"""The hour-of-week inflow profile: how many rows came into the WA ``messages`` tables in each
of the 168 hours of the week, in the actions' time zone.

The messages collector feeds it every refresh with the row count of each database; what a
count rose by since the reading before is inflow (a fall is GC, not traffic). Each hour of the
week keeps its latest occurrence only, so the profile is the last 7 days. It is published as
``whatsapp_messages_inflow_by_hour{hour_of_week}`` and read by ``window: learned``
(:mod:`exporter.offpeak`), which needs to know a whole week first. It survives restarts in
``inflow.json`` in the state directory, written every few minutes and at exit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

HOURS_OF_WEEK = 7 * 24
WEEK_SECONDS = 7 * 86400.0
# Two readings further apart (the exporter was stopped, the database out of reach) say
# nothing about any one hour: the rows that came in between are not attributed.
MAX_GAP_SECONDS = 3600.0
SAVE_EVERY_SECONDS = 300.0


@dataclass
class HourBucket:
    """One hour of the week, as last seen: when that hour started, the rows that came in
    and the seconds of it that readings covered."""

    started: float
    rows: int = 0
    seconds: float = 0.0

    def per_hour(self) -> float:
        """Rows per hour (extrapolated while the hour is under way)."""
        return self.rows * 3600.0 / self.seconds if self.seconds > 0 else 0.0


class InflowProfile:
    def __init__(self, timezone: str, path: Path | None = None) -> None:
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self.path = path
        self._lock = threading.Lock()
        self._hours: dict[int, HourBucket] = {}
        self._last: tuple[float, dict[str, int]] | None = None
        self._since: float | None = None  # the first reading: how long the profile has run
        self._saved_at = 0.0
        self._save_failed = False
        self._load()

    def hour_of_week(self, timestamp: float) -> tuple[int, float]:
        """The hour of the week (0 is Monday 00:00, local time) and when that hour began."""
        local = datetime.fromtimestamp(timestamp, self.zone)
        began = local.replace(minute=0, second=0, microsecond=0).timestamp()
        return local.weekday() * 24 + local.hour, began

    def feed(self, rows: Mapping[str, int], now: float) -> None:
        """One reading: the row count of each WA database read this refresh."""
        with self._lock:
            if self._since is None:
                self._since = now
            last, self._last = self._last, (now, dict(rows))
            if last is not None and 0 < now - last[0] <= MAX_GAP_SECONDS:
                before = last[1]
                inflow = sum(max(0, count - before[name]) for name, count in rows.items()
                             if name in before)
                hour, began = self.hour_of_week(now)
                bucket = self._hours.get(hour)
                if bucket is None or bucket.started != began:  # a new week's occurrence
                    bucket = self._hours[hour] = HourBucket(began)
                bucket.rows += inflow
                bucket.seconds += now - last[0]
        if now - self._saved_at >= SAVE_EVERY_SECONDS:
            self.save(now)

    def per_hour(self, now: float) -> dict[int, float]:
        """Rows per hour for each hour of the week seen in the last 7 days."""
        with self._lock:
            return {hour: bucket.per_hour() for hour, bucket in sorted(self._hours.items())
                    if bucket.seconds > 0 and now - bucket.started < WEEK_SECONDS}

    def quietest(self, now: float, hours: int, prefer: int) -> int | None:
        """The local hour of day that starts the ``hours`` with the least inflow, each hour
        of the day averaged over the days of the last week; None until a week is known.
        A tie goes to the first start from ``prefer`` on (the fixed window's start)."""
        with self._lock:
            known_for = now - self._since if self._since is not None else 0.0
        if known_for < WEEK_SECONDS:
            return None
        by_hour_of_day: dict[int, list[float]] = {}
        for hour, rate in self.per_hour(now).items():
            by_hour_of_day.setdefault(hour % 24, []).append(rate)
        if len(by_hour_of_day) < 24:
            return None  # an hour of the day not seen all week (the exporter was stopped)
        mean = [sum(by_hour_of_day[h]) / len(by_hour_of_day[h]) for h in range(24)]
        starts = [(prefer + offset) % 24 for offset in range(24)]
        return min(starts, key=lambda s: sum(mean[(s + i) % 24] for i in range(hours)))

    # --- the file ---------------------------------------------------------------------------

    def save(self, now: float) -> None:
        """Write the profile (atomically); a failure is logged once, the profile kept."""
        if self.path is None:
            return
        with self._lock:
            self._saved_at = now
            data = {"timezone": self.timezone, "since": self._since,
                    "last": None if self._last is None else {"at": self._last[0],
                                                             "rows": self._last[1]},
                    "hours": {str(h): [b.started, b.rows, b.seconds]
                              for h, b in self._hours.items()}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(data, fh, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(self.path)
            self._save_failed = False
        except OSError as exc:
            if not self._save_failed:
                log.warning("inflow profile not saved; kept in memory",
                            extra={"path": str(self.path), "err": exc.strerror or str(exc)})
            self._save_failed = True
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("timezone") != self.timezone:
                log.info("inflow profile restarted: actions.timezone changed",
                         extra={"path": str(self.path)})
                return
            hours = {int(h): HourBucket(float(v[0]), int(v[1]), float(v[2]))
                     for h, v in data["hours"].items() if 0 <= int(h) < HOURS_OF_WEEK}
            last = data.get("last")
            since = data.get("since")
            reading = None if last is None else (
                float(last["at"]), {str(k): int(v) for k, v in last["rows"].items()})
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            log.warning("inflow profile unreadable; starting a new one",
                        extra={"path": str(self.path), "err": str(exc)})
            return
        self._hours = hours
        self._since = float(since) if isinstance(since, int | float) else None
        self._last = reading
