"""The off-peak window: when alerts and schedules may start actions.

The guide asks for message GC "during downtime, when outgoing message volume is low" and for
``cleanup.sh`` daily off-peak. ``actions.window`` says when that is, in ``actions.timezone``:
``fixed`` (01:00-05:00 unless configured), ``learned`` (the quietest 4 hours of the day in the
last week's inflow, :class:`~exporter.inflow.InflowProfile`; the fixed hours until a week is
known) or ``always``. The runner asks :meth:`OffPeak.is_open`; what is deferred waits for
:meth:`OffPeak.next_open`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from exporter.config import WindowSettings
from exporter.config.types import WEEKDAYS
from exporter.inflow import InflowProfile

LEARNED_HOURS = 4


@dataclass(frozen=True)
class Hours:
    """The window in force: ``mode`` is fixed, learned, learning (learned, still on the fixed
    hours until a week of inflow is known) or always; ``start`` and ``end`` are HH:MM."""

    mode: str
    start: str
    end: str


class OffPeak:
    def __init__(self, window: WindowSettings, timezone: str,
                 profile: InflowProfile | None = None) -> None:
        self.window = window
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self.profile = profile

    def hours(self, now: float) -> Hours:
        window = self.window
        if window.mode == "always":
            return Hours("always", "00:00", "24:00")
        if window.mode == "learned":
            start = None if self.profile is None else self.profile.quietest(
                now, LEARNED_HOURS, prefer=int(window.start[:2]))
            if start is None:
                return Hours("learning", window.start, window.end)
            return Hours("learned", f"{start:02d}:00", f"{(start + LEARNED_HOURS) % 24:02d}:00")
        return Hours("fixed", window.start, window.end)

    def is_open(self, now: float) -> bool:
        hours = self.hours(now)
        if hours.mode == "always":
            return True
        local = datetime.fromtimestamp(now, self.zone)
        clock = local.strftime("%H:%M")
        start, end = hours.start, hours.end
        # A window such as 22:00-04:00 crosses midnight: its day is the one it started on.
        inside = start <= clock < end if start < end else (clock >= start or clock < end)
        day = local if start < end or clock >= start else local - timedelta(days=1)
        return inside and WEEKDAYS[day.weekday()] in self.window.days

    def next_open(self, now: float) -> float | None:
        """When the window next opens after ``now`` (epoch seconds); None if it never closes.
        A learned window may move meanwhile: whoever waits for it asks again."""
        hours = self.hours(now)
        if hours.mode == "always":
            return None
        local = datetime.fromtimestamp(now, self.zone)
        hour, minute = int(hours.start[:2]), int(hours.start[3:])
        for days in range(8):
            day = local.date() + timedelta(days=days)
            if WEEKDAYS[day.weekday()] not in self.window.days:
                continue
            opens = datetime(day.year, day.month, day.day, hour, minute,
                             tzinfo=self.zone).timestamp()
            if opens > now:
                return opens
        return None

    def describe(self, now: float) -> dict[str, Any]:
        """The window in force, for ``GET /actions`` and the decisions' reasons."""
        hours = self.hours(now)
        opens = self.next_open(now)
        return {"mode": hours.mode, "start": hours.start, "end": hours.end,
                "days": list(self.window.days), "timezone": self.timezone,
                "open": self.is_open(now),
                "next_open": None if opens is None else self.format(opens)}

    def format(self, timestamp: float) -> str:
        """A time as the operator reads it: local, with the zone."""
        return datetime.fromtimestamp(timestamp, self.zone).strftime("%Y-%m-%d %H:%M %Z")
