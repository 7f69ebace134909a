"""The one runner every trigger goes through: alert, schedule or a person at the CLI.

It decides, records and starts. The rules, in order: only allow-listed actions; targets
from discovery only; the off-peak window (alerts and schedules; an alert outside it is
deferred until it opens, :mod:`exporter.actions.deferred`); one run per action (per
container for cleanup) in this process and, through the database lock, across replicas; a
cooldown that survives restarts (the state file) and that other replicas see (a second
database lock held for the rest of it); dry-run. Every decision and every outcome is one
audit record and one ``whatsapp_action_requests_total`` increment.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import (
    ERROR,
    INTERRUPTED,
    SUCCESS,
    Action,
    ActionResult,
    Request,
    RunContext,
    UnknownTarget,
)
from exporter.actions.deferred import Deferrals
from exporter.config import ActionsSettings
from exporter.offpeak import OffPeak
from exporter.vocabulary import Outcome, Trigger, rows_after_gc

log = logging.getLogger(__name__)

# The outcomes by their short names (defined, in order of precedence, in exporter.vocabulary).
STARTED, SKIPPED_COOLDOWN, SKIPPED_RUNNING = (Outcome.STARTED, Outcome.SKIPPED_COOLDOWN,
                                              Outcome.SKIPPED_RUNNING)
SKIPPED_WINDOW, REJECTED, SKIPPED_RESOLVED = (Outcome.SKIPPED_WINDOW, Outcome.REJECTED,
                                              Outcome.SKIPPED_RESOLVED)
SKIPPED_LOCK, SKIPPED_OTHER_HOST = Outcome.SKIPPED_LOCK, Outcome.SKIPPED_OTHER_HOST
DEFERRED = Outcome.DEFERRED
OUTCOMES = tuple(Outcome)
INSTANCE = uuid.uuid4().hex  # this process, as named in the runs it records

# Hears each progress record of a run besides the audit log: (event, fields).
ProgressListener = Callable[[str, dict[str, Any]], None]


@dataclass
class Decision:
    action: str
    outcome: str
    reason: str = ""
    run_id: str | None = None
    targets: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies, a third of a webhook decision's time.
        data = {"action": self.action, "outcome": self.outcome, "reason": self.reason,
                "run_id": self.run_id, **named_targets(self.targets)}
        return {k: v for k, v in data.items() if v not in (None, "", [])}


def named_targets(targets: list[str]) -> dict[str, list[str]]:
    """The ``targets`` field of an audit record: the containers a run acts on, none for an
    action on the whole install (whose one target, "", only keys its lock and cooldown)."""
    named = [t for t in targets if t]
    return {"targets": named} if named else {}


class HeldLock(Protocol):
    def release(self) -> None: ...

    def release_after(self, seconds: float) -> None:
        """Free the run at once, but keep other replicas out for ``seconds`` (a cooldown)."""


class ClusterLock(Protocol):
    """Mutual exclusion across replicas; never blocks."""

    def try_acquire(self, key: str) -> HeldLock | None: ...

    def cooling_elsewhere(self, key: str) -> bool:
        """Whether another replica ran ``key`` within its cooldown."""


class RunObserver(Protocol):
    """Who hears about decisions and finished runs (the action metrics)."""

    def decided(self, action: str, outcome: str) -> None: ...

    def finished(self, request: Request, targets: list[str], result: ActionResult,
                 started: float, ended: float) -> None: ...


def _key(action: str, target: str) -> str:
    return f"{action}:{target}" if target else action


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
        """Runs the state file says were in flight when the process died: record, don't redo.

        Their start time stays in ``last_start``, so the cooldown still holds.
        """
        def orphaned(run: dict[str, Any]) -> bool:
            if run.get("host") != socket.gethostname():
                return False  # another machine's run in a shared state directory
            pid = int(run.get("pid", 0))
            if run.get("instance") == INSTANCE:
                return False
            if pid == os.getpid():
                return True  # a restarted container gets the same pid: the entry is old
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return False  # e.g. the CLI's run while the service runs, or the other way round

        interrupted = {k: v for k, v in self.state.read()["running"].items() if orphaned(v)}
        roles = self.state.data.get("roles", {})
        for run_id, run in interrupted.items():
            targets = list(run.get("targets", []))
            self.audit.append({"event": "finished", "run_id": run_id, "action": run["action"],
                               **named_targets(targets), "result": INTERRUPTED,
                               "reason": "the exporter stopped while this run was in flight"},
                              sync=True)
            result = ActionResult(INTERRUPTED, {"containers": {
                t: {"role": roles.get(t, "")} for t in targets if t}})
            self.observer.finished(Request(run["action"], run.get("trigger", "manual")),
                                   targets, result, float(run.get("started", 0)), self.clock())
            log.warning("run was interrupted by a restart",
                        extra={"run_id": run_id, "action": run["action"]})
        if interrupted:
            self.state.update(lambda d: [d["running"].pop(k, None) for k in interrupted])
        return list(interrupted)

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
            self._reserved.update(_key(request.action, t) for t in free)
        locks: list[HeldLock] = []
        if free:
            decision, locks = self._lock(request.action, free, decision,
                                         request.ignore_cooldown)
        with self._mutex:
            self._reserved.difference_update(_key(request.action, t) for t in free)
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

        keys = [_key(name, target) for target in targets]
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
            key = _key(name, target)
            try:
                # The lock's key may say more than the state's (cleanup: which Docker engine).
                shared = self.actions[name].lock_key(target)
                if self.lock is None:
                    lock: HeldLock | None = _NoLock()
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


class ActionRun:
    """One run the runner cleared: made under the runner's mutex, where it claims its targets,
    then called once, on its own thread (``submit``) or the caller's (``run_now``).

    Calling it takes the steps in order: :meth:`run_action`, :meth:`settle` the state file,
    :meth:`release` the locks and the targets, :meth:`record_finished`, :meth:`forget`.
    A dry run claims and settles nothing and holds no lock.
    """

    def __init__(self, runner: Runner, request: Request, decision: Decision,
                 targets: list[str], locks: list[HeldLock],
                 on_progress: ProgressListener | None = None) -> None:
        assert decision.run_id is not None
        self.runner = runner
        self.request = request
        self.decision = decision
        self.run_id, self.action = decision.run_id, request.action
        self.dry_run = decision.outcome == Outcome.DRY_RUN
        self.targets = targets  # those whose cluster lock is held, one lock each
        self.keys = [_key(self.action, t) for t in targets]
        self.locks = locks
        self.on_progress = on_progress
        self.started = runner.clock()
        if not self.dry_run:
            self.claim()

    def __call__(self) -> ActionResult:
        result, ended = self.run_and_release()
        try:
            self.record_finished(result, ended)
            return result
        finally:
            self.forget()

    def claim(self) -> None:
        """Mark the targets running, here and in the state file; their cooldown starts now."""
        self.runner._running.update(self.keys)

        def mark(data: dict[str, Any]) -> None:
            data["running"][self.run_id] = {
                "action": self.action, "targets": self.targets,
                "trigger": self.request.trigger, "started": self.started, "pid": os.getpid(),
                "host": socket.gethostname(), "instance": INSTANCE,
                "previous_start": {k: data["last_start"].get(k) for k in self.keys}}
            for key in self.keys:
                data["last_start"][key] = self.started

        self.runner.state.update(mark)

    def progress(self, event: str, **fields: Any) -> None:
        """One progress record of the action: to the audit log and to the caller, if it
        listens."""
        self.runner.audit.append({"event": event, "run_id": self.run_id,
                                  "action": self.action, **fields})
        if self.on_progress is not None:
            self.on_progress(event, fields)

    def run_and_release(self) -> tuple[ActionResult, float]:
        """Run the action and settle the state file; release whatever happens."""
        result = ActionResult(ERROR, {"error": "the run was cut short"})
        try:
            result = self.run_action()
            ended = self.runner.clock()
            if not self.dry_run:
                self.settle(result, ended)
        finally:
            # Free before the "finished" record: whoever reads it may ask again at once.
            self.release(result)
        return result, ended

    def run_action(self) -> ActionResult:
        """The action's own work; an exception in it is an error result, never a lost run."""
        ctx = RunContext(run_id=self.run_id, action=self.action,
                         trigger=self.request.trigger, dry_run=self.dry_run,
                         target=self.request.target, targets=list(self.decision.targets),
                         progress=self.progress)
        try:
            return self.runner.actions[self.action].run(ctx)
        except Exception as exc:  # an action bug must still end in a record
            log.exception("action failed unexpectedly", extra={"run_id": self.run_id})
            return ActionResult(ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    def settle(self, result: ActionResult, ended: float) -> None:
        """Write the outcome to the state file: the run is no longer in flight, and each
        target's last run, last success and role."""
        def settle(data: dict[str, Any]) -> None:
            run = data["running"].pop(self.run_id, {})
            containers = result.details.get("containers", {})
            for target, key in zip(self.targets, self.keys, strict=True):
                if result.per_target.get(target, result.result) == ERROR:
                    # Nothing was done (the API or engine could not be reached): give the
                    # cooldown back, so the next alert may try again.
                    previous = run.get("previous_start", {}).get(key)
                    if previous is None:
                        data["last_start"].pop(key, None)
                    else:
                        data["last_start"][key] = previous
                role = containers.get(target, {}).get("role") if target else None
                if role:
                    data["roles"][target] = role
                data["last_run"][key] = ended
                if result.per_target.get(target, result.result) == SUCCESS:
                    data["last_success"][key] = ended
            data["gc_rows_after"].update(rows_after_gc(self.action, result.result,
                                                       result.details))

        self.runner.state.update(settle)

    def release(self, result: ActionResult) -> None:
        """Give back the cluster locks and free the targets here.

        Other replicas stay out for the rest of the cooldown, unless nothing was done (an
        error gives the cooldown back, here as in the state file).
        """
        runner = self.runner
        left = self.started + runner.settings.cooldown_for(self.action) - runner.clock()
        for target, lock in zip(self.targets, self.locks, strict=True):
            if left > 0 and result.per_target.get(target, result.result) != ERROR:
                lock.release_after(left)
            else:
                lock.release()
        with runner._idle:
            runner._running.difference_update(self.keys)

    def record_finished(self, result: ActionResult, ended: float) -> None:
        """The outcome: one audit record, the action metrics, one log line."""
        self.runner.audit.append({"event": "finished", "run_id": self.run_id,
                                  "action": self.action, "trigger": self.request.trigger,
                                  **named_targets(self.decision.targets),
                                  "result": result.result,
                                  "duration_seconds": round(ended - self.started, 3),
                                  **result.details}, sync=True)
        self.runner.observer.finished(self.request, self.decision.targets, result,
                                      self.started, ended)
        log.info("action finished", extra={"run_id": self.run_id, "action": self.action,
                                           "result": result.result})

    def forget(self) -> None:
        """The run is over: ``wait_idle`` stops waiting for it."""
        with self.runner._idle:
            self.runner._threads.pop(self.run_id, None)
            self.runner._idle.notify_all()


class _NoLock:
    def release(self) -> None:
        pass

    def release_after(self, seconds: float) -> None:
        pass
