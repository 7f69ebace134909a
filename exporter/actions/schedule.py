"""Cron-style schedules in a configured time zone, submitting to the same runner."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from croniter import croniter

from exporter.actions.base import Request
from exporter.actions.runner import Runner
from exporter.config import ScheduleEntry
from exporter.vocabulary import Trigger

log = logging.getLogger(__name__)


def next_fire(entry: ScheduleEntry, after: float, timezone: str) -> float:
    """The first time strictly after ``after`` (epoch seconds) that ``entry`` fires."""
    start = datetime.fromtimestamp(after, ZoneInfo(timezone))
    return float(croniter(entry.cron, start).get_next(float))


class Scheduler:
    def __init__(self, entries: list[ScheduleEntry], timezone: str, runner: Runner,
                 clock: Callable[[], float] = time.time) -> None:
        self.entries = [e for e in entries if e.action in runner.actions]
        for entry in entries:
            if entry not in self.entries:
                log.info("schedule entry inactive: action not configured",
                         extra={"action": entry.action, "cron": entry.cron})
        self.timezone = timezone
        self.runner = runner
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.entries:
            return
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def _loop(self) -> None:
        now = self.clock()
        due = {i: next_fire(e, now, self.timezone) for i, e in enumerate(self.entries)}
        while not self._stop.is_set():
            index = min(due, key=due.__getitem__)
            # Sleep in bounded steps, so a changed wall clock is noticed within a minute.
            if self._stop.wait(max(0.0, min(60.0, due[index] - self.clock()))):
                return
            if self.clock() < due[index]:
                continue
            entry = self.entries[index]
            self.runner.submit(Request(entry.action, Trigger.SCHEDULE, entry.target,
                                       dry_run=entry.dry_run, origin={"cron": entry.cron}))
            due[index] = next_fire(entry, self.clock(), self.timezone)
