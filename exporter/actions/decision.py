"""The runner's words: a decision and its record, and what the runner is handed (the cluster
lock, who hears about runs). Shared by the runner (:mod:`exporter.actions.runner`, which
decides and locks) and a cleared run (:mod:`exporter.actions.run`, which runs and records)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from exporter.actions.base import ActionResult, Request
from exporter.vocabulary import Outcome

# The outcomes by their short names (defined, in order of precedence, in exporter.vocabulary).
STARTED, SKIPPED_COOLDOWN, SKIPPED_RUNNING = (Outcome.STARTED, Outcome.SKIPPED_COOLDOWN,
                                              Outcome.SKIPPED_RUNNING)
SKIPPED_WINDOW, REJECTED, SKIPPED_RESOLVED = (Outcome.SKIPPED_WINDOW, Outcome.REJECTED,
                                              Outcome.SKIPPED_RESOLVED)
SKIPPED_LOCK, SKIPPED_OTHER_HOST = Outcome.SKIPPED_LOCK, Outcome.SKIPPED_OTHER_HOST
DEFERRED = Outcome.DEFERRED
OUTCOMES = tuple(Outcome)

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


def run_key(action: str, target: str) -> str:
    """How the state file and the runner name one target of an action (``""``: the whole
    action): ``gc``, ``cleanup:wa-wacore-1``."""
    return f"{action}:{target}" if target else action
