"""One run the runner cleared, from its claim to its record: claim the targets, run the action,
settle the state file, release the locks and the targets, record the outcome; and the record
of runs a restart cut short."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
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
)
from exporter.actions.decision import (
    Decision,
    HeldLock,
    ProgressListener,
    RunObserver,
    named_targets,
    run_key,
)
from exporter.config import ActionsSettings
from exporter.vocabulary import Outcome, Trigger, rows_after_gc

log = logging.getLogger(__name__)

INSTANCE = uuid.uuid4().hex  # this process, as named in the runs it records


class Ledger(Protocol):
    """What a run needs of the runner that cleared it (:class:`~exporter.actions.runner.Runner`):
    its collaborators, and its book of the targets running in this process."""

    @property
    def actions(self) -> Mapping[str, Action]: ...

    @property
    def settings(self) -> ActionsSettings: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def state(self) -> StateFile: ...

    @property
    def observer(self) -> RunObserver: ...

    @property
    def clock(self) -> Callable[[], float]: ...

    def mark_running(self, keys: list[str]) -> None:
        """The targets are running here (called under the runner's mutex, where it decides)."""

    def mark_done(self, keys: list[str]) -> None:
        """The targets are free again here."""

    def forget(self, run_id: str) -> None:
        """The run is over: ``wait_idle`` stops waiting for it."""


class ActionRun:
    """One run the runner cleared: made under the runner's mutex, where it claims its targets,
    then called once, on its own thread (``submit``) or the caller's (``run_now``).

    Calling it takes the steps in order: :meth:`run_action`, :meth:`settle` the state file,
    :meth:`release` the locks and the targets, :meth:`record_finished`, :meth:`forget`.
    A dry run claims and settles nothing and holds no lock.
    """

    def __init__(self, runner: Ledger, request: Request, decision: Decision,
                 targets: list[str], locks: list[HeldLock],
                 on_progress: ProgressListener | None = None) -> None:
        assert decision.run_id is not None
        self.runner = runner
        self.request = request
        self.decision = decision
        self.run_id, self.action = decision.run_id, request.action
        self.dry_run = decision.outcome == Outcome.DRY_RUN
        self.targets = targets  # those whose cluster lock is held, one lock each
        self.keys = [run_key(self.action, t) for t in targets]
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
        self.runner.mark_running(self.keys)

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
        runner.mark_done(self.keys)

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
        self.runner.forget(self.run_id)


class NoLock:
    """The lock of a runner without a cluster lock: nothing to take or give back."""

    def release(self) -> None:
        pass

    def release_after(self, seconds: float) -> None:
        pass


def recover_interrupted(runner: Ledger) -> list[str]:
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

    interrupted = {k: v for k, v in runner.state.read()["running"].items() if orphaned(v)}
    roles = runner.state.data.get("roles", {})
    for run_id, run in interrupted.items():
        targets = list(run.get("targets", []))
        runner.audit.append({"event": "finished", "run_id": run_id, "action": run["action"],
                             **named_targets(targets), "result": INTERRUPTED,
                             "reason": "the exporter stopped while this run was in flight"},
                            sync=True)
        result = ActionResult(INTERRUPTED, {"containers": {
            t: {"role": roles.get(t, "")} for t in targets if t}})
        runner.observer.finished(Request(run["action"], run.get("trigger", Trigger.MANUAL)),
                                 targets, result, float(run.get("started", 0)), runner.clock())
        log.warning("run was interrupted by a restart",
                    extra={"run_id": run_id, "action": run["action"]})
    if interrupted:
        runner.state.update(lambda d: [d["running"].pop(k, None) for k in interrupted])
    return list(interrupted)
