"""Alerts that come outside the off-peak window: deferred, not dropped.

A firing alert outside ``actions.window`` is recorded as ``deferred`` and kept in the state
file (``deferred`` in ``state.json``, so a restart keeps it) until the window opens. Then one
run of each action serves every request deferred for it, through the runner's usual rules
(cooldown, one run at a time, lock, audit). A request is dropped instead when its alert
resolves meanwhile (Alertmanager's resolved notification, matched by fingerprint), when a run
of its action starts anyway (a person's, or an alert's with ``window="ignore"``), or when no
notification has renewed it for ``actions.defer_max_age`` (24 h). :class:`WindowWatch` wakes
when the window opens.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import Request
from exporter.offpeak import OffPeak
from exporter.vocabulary import Trigger

log = logging.getLogger(__name__)

KEY = "deferred"  # in the state file


def _entry_key(request: Request) -> str:
    """One entry per alert: Alertmanager's fingerprint names it across notifications."""
    origin = request.origin
    return origin.get("fingerprint") or "|".join(
        (origin.get("alertname", ""), origin.get("instance", ""), request.action,
         request.target or ""))


class Deferrals:
    def __init__(self, state: StateFile, audit: AuditLog, window: OffPeak,
                 max_age: float) -> None:
        self.state = state
        self.audit = audit
        self.window = window
        self.max_age = max_age

    def reason(self, now: float) -> str:
        """Why a request is deferred, and until when."""
        hours = self.window.hours(now)
        opens = self.window.next_open(now)
        until = "" if opens is None else f" at {self.window.format(opens)}"
        return (f"outside the off-peak window ({hours.mode} {hours.start}-{hours.end} "
                f"{self.window.timezone}): deferred, runs when it opens{until}")

    def defer(self, requests: Sequence[Request], now: float) -> None:
        """Keep ``requests`` (alerts') until the window opens; a repeat renews its entry.
        One write for all of them: a notification may hold a thousand alerts."""
        def keep(data: dict[str, Any]) -> None:
            entries = data.setdefault(KEY, {})
            for request in requests:
                entry = entries.setdefault(_entry_key(request), {
                    "action": request.action, "target": request.target,
                    "alertname": request.origin.get("alertname", ""), "first": now,
                    "notifications": 0})
                entry["last"] = now
                entry["notifications"] += 1

        if requests:
            self.state.update(keep)

    def cancel(self, request: Request) -> bool:
        """A resolved alert: drop its deferred request, if there is one."""
        key = _entry_key(request)
        dropped = self._take(lambda entry_key, entry: entry_key == key)
        for entry in dropped:
            self._dropped(entry, "its alert resolved")
        return bool(dropped)

    def served(self, request: Request, run_id: str | None) -> None:
        """A run of the action started: it serves what was deferred for it (for cleanup on
        one container, what was deferred for that container)."""
        def covered(key: str, entry: dict[str, Any]) -> bool:
            return entry["action"] == request.action and (
                request.target is None or entry["target"] == request.target)

        taken = self._take(covered)
        if taken:
            self.audit.append({"event": "deferred_served", "action": request.action,
                               "run_id": run_id, "alertnames": _alertnames(taken)})

    def pending(self) -> list[dict[str, Any]]:
        """What waits for the window, oldest first (``GET /actions``)."""
        entries = self.state.read().get(KEY, {})
        return sorted((dict(e) for e in entries.values()), key=lambda e: e.get("first", 0))

    def count(self, action: str) -> int:
        """Read at every scrape: an entry edited by hand must not fail ``/metrics``."""
        return sum(1 for e in self.state.read().get(KEY, {}).values()
                   if e.get("action") == action)

    def release(self, now: float) -> list[Request]:
        """Drop what no notification renewed for ``max_age``; then, inside the window, every
        deferred request as one request per action (cleanup on the one container they all
        name, else on every container)."""
        if not self.state.read().get(KEY):
            return []
        for entry in self._take(lambda key, entry: now - entry["last"] > self.max_age):
            self._dropped(entry, f"no notification renewed it for {self.max_age:.0f}s")
        if not self.window.is_open(now):
            return []
        by_action: dict[str, list[dict[str, Any]]] = {}
        for entry in self._take(lambda key, entry: True):
            by_action.setdefault(entry["action"], []).append(entry)
        released = []
        for action, entries in by_action.items():
            targets = {e["target"] for e in entries}
            target = targets.pop() if len(targets) == 1 else None
            first = min(e["first"] for e in entries)
            released.append(Request(action, Trigger.ALERT, target, origin={
                "alertname": _alertnames(entries), "deferred_requests": str(len(entries)),
                "deferred_since": self.window.format(first)}))
        return released

    def _take(self, wanted: Callable[[str, dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Remove the entries ``wanted(key, entry)`` picks; the file is written only if the
        one on disk holds any (a resolved notification mostly finds nothing to cancel)."""
        taken: list[dict[str, Any]] = []

        def take(data: dict[str, Any]) -> None:
            entries = data.setdefault(KEY, {})
            for key in [k for k, e in entries.items() if wanted(k, e)]:
                taken.append(entries.pop(key))

        if any(wanted(k, e) for k, e in self.state.read().get(KEY, {}).items()):
            self.state.update(take)
        return taken

    def _dropped(self, entry: dict[str, Any], why: str) -> None:
        self.audit.append({"event": "deferred_dropped", "action": entry["action"],
                           "alertname": entry.get("alertname", ""), "reason": why})
        log.info("deferred request dropped", extra={"action": entry["action"], "reason": why})


def _alertnames(entries: list[dict[str, Any]]) -> str:
    return ", ".join(sorted({e.get("alertname", "") for e in entries} - {""}))


class WindowWatch:
    """Wakes when the window opens (and every minute, so a changed clock or a learned window
    that moved is noticed) and hands what was deferred to the runner."""

    def __init__(self, deferrals: Deferrals, submit: Callable[[Request], object],
                 clock: Callable[[], float] = time.time) -> None:
        self.deferrals = deferrals
        self.submit = submit
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="window-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def release_due(self) -> list[Request]:
        """Submit every deferred request if the window is open now; what was submitted."""
        released = self.deferrals.release(self.clock())
        for request in released:
            self.submit(request)
        return released

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.release_due()
            except Exception:  # a bad state file must not end the watch
                log.exception("releasing deferred requests failed")
            now = self.clock()
            opens = self.deferrals.window.next_open(now)
            self._stop.wait(60.0 if opens is None else max(0.05, min(60.0, opens - now)))
