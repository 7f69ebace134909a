"""What every action is: a named piece of work the runner starts, with one result record."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.vocabulary import Result

# The results by their short names, as the actions use them (defined in exporter.vocabulary).
SUCCESS, FAILED, ERROR, TIMEOUT = Result.SUCCESS, Result.FAILED, Result.ERROR, Result.TIMEOUT
DRY_RUN, INTERRUPTED, UNCONFIRMED = Result.DRY_RUN, Result.INTERRUPTED, Result.UNCONFIRMED


@dataclass(frozen=True)
class Request:
    """What a trigger asks the runner for."""

    action: str
    trigger: str
    target: str | None = None
    dry_run: bool = False
    origin: Mapping[str, str] = field(default_factory=dict)  # alertname, schedule… for audit
    # A person's explicit choice (upgrade-check --prepare --ignore-cooldown); recorded.
    ignore_cooldown: bool = False
    # An alert labelled window="ignore" (an emergency: a disk about to fill); recorded.
    ignore_window: bool = False


@dataclass
class RunContext:
    """Handed to :meth:`Action.run`: who asked, and how to report progress."""

    run_id: str
    action: str
    trigger: str  # alert, schedule, manual
    dry_run: bool = False
    target: str | None = None  # e.g. the one container an alert names, for cleanup
    targets: list[str] = field(default_factory=list)  # what the runner cleared to act on
    cancel: threading.Event = field(default_factory=threading.Event)
    # Appends a progress record to the audit log: progress("round", rows_before=…, …).
    progress: Callable[..., object] = lambda event, **fields: None


@dataclass
class ActionResult:
    # SUCCESS, FAILED (the WA side said no), ERROR (we could not ask), TIMEOUT, UNCONFIRMED
    # (no evidence either way)…: exporter.vocabulary.Result
    result: str
    details: dict[str, Any] = field(default_factory=dict)  # JSON-safe, never a secret
    per_target: dict[str, str] = field(default_factory=dict)  # cleanup: container -> result


class UnknownTarget(ValueError):
    """A request named a target (container) that discovery does not know: rejected."""


class Action:
    """Base for ``gc``, ``media_gc`` and ``cleanup``."""

    name: str = "action"

    def targets(self, requested: str | None) -> list[str]:
        """The keys this run would act on; one empty key means the action as a whole."""
        if requested:
            raise UnknownTarget(f"{self.name} takes no target; got {requested!r}")
        return [""]

    def lock_key(self, target: str) -> str:
        """The cross-replica lock of one target (``""``: the action as a whole): replicas
        that would act on the same thing must build the same key, and only they."""
        return f"{self.name}:{target}" if target else self.name

    def run(self, ctx: RunContext) -> ActionResult:
        raise NotImplementedError
