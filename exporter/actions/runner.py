"""The one runner every trigger goes through: alert, schedule or a person at the CLI.

Each request takes the same steps: **decide** (:meth:`Runner._check`, under the runner's
mutex), **lock** (:meth:`Runner._lock`, the cluster lock of every free target), then the
cleared run **runs** and **records** its outcome (:class:`exporter.actions.run.ActionRun`).
The words they share are in :mod:`exporter.actions.decision`.

The rules, in order: only allow-listed actions; targets from discovery only; the off-peak
window (alerts and schedules; an alert outside it is deferred until it opens,
:mod:`exporter.actions.deferred`); one run per action (per container for cleanup) in this
process and, through the database lock, across replicas; a cooldown that survives restarts
(the state file) and that other replicas see (a second database lock held for the rest of
it); dry-run. Every decision and every outcome is one audit record and one
``whatsapp_action_requests_total`` increment.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping

from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import Action, ActionResult, Request, UnknownTarget
from exporter.actions.decision import (
    DEFERRED,
    OUTCOMES,
    REJECTED,
    SKIPPED_COOLDOWN,
    SKIPPED_LOCK,
    SKIPPED_RUNNING,
    SKIPPED_WINDOW,
    STARTED,
    ClusterLock,
    Decision,
    HeldLock,
    ProgressListener,
    RunObserver,
    run_key,
)
from exporter.actions.deferred import Deferrals
from exporter.actions.run import ActionRun, NoLock, recover_interrupted
from exporter.config import ActionsSettings
from exporter.offpeak import OffPeak
from exporter.vocabulary import Outcome, Trigger

log = logging.getLogger(__name__)


class Runner:
    def __init__(self, actions: Mapping[str, Action], settings: ActionsSettings,
                 audit: AuditLog, state: StateFile, lock: ClusterLock | None,
                 observer: RunObserver, clock: Callable[[], float] = time.time,
                 unavailable: Mapping[str, str] | None = None,
                 window: OffPeak | None = None) -> None:
        self.actions = dict(actions)
        # Allowed but not runnable with these settings (no WA API...): why, for the rejection.
        self.unavailable = dict(unavailable or {})
        self.settings = settings
        self.audit = audit
        self.state = state
        self.lock = lock
        self.observer = observer
        self.clock = clock
        self.window = window or OffPeak(settings.window, settings.timezone)
        self.deferred = Deferrals(state, audit, self.window, settings.defer_max_age)
        self._mutex = threading.Lock()
        self._running: set[str] = set()
        self._reserved: set[str] = set()  # deciding: the cluster lock is being taken
        self._threads: dict[str, threading.Thread] = {}
        self._idle = threading.Condition(self._mutex)

    # --- start-up -------------------------------------------------------------------------

    def recover_interrupted(self) -> list[str]:
        """Record the runs a restart cut short (:func:`exporter.actions.run.recover_interrupted`);
        their cooldown still holds."""
        return recover_interrupted(self)

    # --- the book of what runs here (the run's Ledger) -------------------------------------

    def mark_running(self, keys: list[str]) -> None:
        self._running.update(keys)

    def mark_done(self, keys: list[str]) -> None:
        with self._idle:
            self._running.difference_update(keys)

    def forget(self, run_id: str) -> None:
        with self._idle:
            self._threads.pop(run_id, None)
            self._idle.notify_all()

    # --- deciding -------------------------------------------------------------------------

    def submit(self, request: Request) -> Decision:
        """Decide now, run in the background; returns at once."""
        decision, run = self._decide(request)
        if run is not None:
            thread = threading.Thread(target=run, name=f"action-{decision.run_id}", daemon=True)
            with self._mutex:
                assert decision.run_id is not None
                self._threads[decision.run_id] = thread
            thread.start()
        return decision

    def run_now(self, request: Request, on_progress: ProgressListener | None = None
                ) -> tuple[Decision, ActionResult | None]:
        """Decide and, if started, run in this thread (the CLI, which prints the progress)."""
        decision, run = self._decide(request, on_progress)
        return decision, (run() if run is not None else None)

    def wait_idle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._threads:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def running(self) -> list[str]:
        with self._mutex:
            return sorted(self._running)

    def deferred_count(self, action: str) -> int:
        """Alerts of ``action`` waiting for the off-peak window."""
        return self.deferred.count(action)

    def record_ignored(self, request: Request, outcome: str, reason: str) -> Decision:
        """A request turned away before the rules (resolved alert, no action mapped)."""
        decision = Decision(request.action, outcome, reason)
        self._record(request, decision)
        return decision

    def _record(self, request: Request, decision: Decision) -> None:
        extra = {name: True for name in ("ignore_cooldown", "ignore_window")
                 if getattr(request, name)}
        self.audit.append({"event": "decision", "trigger": request.trigger,
                           "dry_run": request.dry_run, **extra, **dict(request.origin),
                           **decision.as_dict()}, sync=decision.outcome == STARTED)
        self.observer.decided(decision.action, decision.outcome)

    def _decide(self, request: Request, on_progress: ProgressListener | None = None
                ) -> tuple[Decision, ActionRun | None]:
        targets, reason = self._targets(request)  # may ask Docker: not under the mutex
        with self._mutex:
            decision = self._check(request, targets, reason)
            free = decision.targets if decision.outcome == STARTED else []
            # Reserved while the cluster lock is taken, outside the mutex: a slow database
            # delays this request only, and a concurrent one sees "running".
            self._reserved.update(run_key(request.action, t) for t in free)
        locks: list[HeldLock] = []
        if free:
            decision, locks = self._lock(request.action, free, decision,
                                         request.ignore_cooldown)
        with self._mutex:
            self._reserved.difference_update(run_key(request.action, t) for t in free)
            run = None
            if decision.outcome in (STARTED, Outcome.DRY_RUN):
                decision.run_id = uuid.uuid4().hex[:12]
                run = ActionRun(self, request, decision, decision.targets if locks else [],
                                locks, on_progress)
        if decision.outcome == DEFERRED:
            self.deferred.defer([request], self.clock())
        elif decision.outcome == STARTED:
            self.deferred.served(request, decision.run_id)
        self._record(request, decision)
        return decision, run

    def validate(self, request: Request) -> str:
        """Why the request must be rejected (not allowed, unknown target), or ``""``."""
        return self._targets(request)[1]

    def _targets(self, request: Request) -> tuple[list[str], str]:
        """The targets the request would act on, or a reason to reject it."""
        action = self.actions.get(request.action)
        if action is None or request.action not in self.settings.allowed:
            if request.action in self.unavailable:
                return [], self.unavailable[request.action]
            allowed = ", ".join(a for a in self.settings.allowed if a in self.actions)
            return [], f"action {request.action!r} not allowed; allowed: {allowed or 'none'}"
        try:
            return action.targets(request.target), ""
        except UnknownTarget as exc:
            return [], str(exc)

    def _check(self, request: Request, targets: list[str], reason: str) -> Decision:
        """Every rule but the cluster lock; a STARTED decision names the free targets."""
        name = request.action
        if reason:
            return Decision(name, REJECTED, reason)
        now = self.clock()
        if request.trigger != Trigger.MANUAL and not request.ignore_window \
                and not self.window.is_open(now):
            if request.trigger == Trigger.ALERT:  # kept until the window opens
                return Decision(name, DEFERRED, self.deferred.reason(now))
            return Decision(name, SKIPPED_WINDOW, "outside the off-peak window")

        keys = [run_key(name, target) for target in targets]
        busy = [key in self._running or key in self._reserved for key in keys]
        # The state file is read (a stat at least) only for a target not running here: in an
        # alert storm, every notification after the first finds the run in flight.
        state = None if keys and all(busy) else self.state.read()
        cooldown = self.settings.cooldown_for(name)
        free, reasons = [], []
        for target, key, running in zip(targets, keys, busy, strict=True):
            if running:
                reasons.append((SKIPPED_RUNNING, f"{key} is running"))
                continue
            assert state is not None
            last = state["last_start"].get(key)
            if not request.dry_run and not request.ignore_cooldown and last is not None \
                    and now - last < cooldown:
                reasons.append((SKIPPED_COOLDOWN, f"{key} started {now - last:.0f}s ago; "
                                f"cooldown {cooldown:.0f}s"))
            else:
                free.append(target)
        if not free:
            outcome, reason = min(reasons, key=lambda r: OUTCOMES.index(r[0]))
            return Decision(name, outcome, reason, targets=list(targets))
        if request.dry_run or self.settings.dry_run:
            return Decision(name, Outcome.DRY_RUN, "dry run: nothing is changed", targets=free)
        return Decision(name, STARTED, "; ".join(r for _, r in reasons), targets=free)

    def _lock(self, name: str, free: list[str], decision: Decision,
              ignore_cooldown: bool = False) -> tuple[Decision, list[HeldLock]]:
        """Take the cluster lock of every free target; those held elsewhere are skipped."""
        locks: list[HeldLock] = []
        held: list[str] = []
        skipped: list[tuple[str, str]] = []
        for target in free:
            key = run_key(name, target)
            try:
                # The lock's key may say more than the state's (cleanup: which Docker engine).
                shared = self.actions[name].lock_key(target)
                if self.lock is None:
                    lock: HeldLock | None = NoLock()
                elif (lock := self.lock.try_acquire(shared)) is None:
                    skipped.append((SKIPPED_RUNNING, f"{key} is running on another replica"))
                    continue
                elif not ignore_cooldown and self.lock.cooling_elsewhere(shared):
                    lock.release()
                    skipped.append((SKIPPED_COOLDOWN,
                                    f"{key} ran on another replica within its cooldown"))
                    continue
            except Exception as exc:  # the lock's database is out of reach
                for other in locks:
                    other.release()
                return Decision(name, SKIPPED_LOCK, f"cluster lock unavailable: {exc}"), []
            assert lock is not None
            locks.append(lock)
            held.append(target)
        if not held:
            outcome, reason = min(skipped, key=lambda r: OUTCOMES.index(r[0]))
            return Decision(name, outcome, reason, targets=free), []
        reasons = [decision.reason] if decision.reason else []
        return Decision(name, STARTED, "; ".join(reasons + [r for _, r in skipped]),
                        targets=held), locks


