"""Alertmanager webhook payloads (version 4) -> runner requests.

The payload is validated strictly; each firing alert maps to an action through its
``action`` label or, failing that, the ``alert_rules`` on its ``alertname``. Cleanup may be
narrowed to the one container an alert's ``container`` label names. A ``window="ignore"``
label lets an emergency run outside the off-peak window. Resolved alerts start nothing (they
cancel the alert's deferred request), nor do alerts whose ``instance`` is another exporter's
(``actions.instances``). Targets are only ever checked against discovery, never taken on
trust.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.actions.audit import clip
from exporter.actions.base import Request
from exporter.actions.decision import (
    DEFERRED,
    REJECTED,
    SKIPPED_OTHER_HOST,
    SKIPPED_RESOLVED,
    Decision,
)
from exporter.actions.runner import Runner
from exporter.config import ACTION_NAMES, ActionsSettings, normalise_action
from exporter.vocabulary import Trigger

MAX_ALERTS = 1000
# The one value of an alert's `window` label: run now, whatever the window.
IGNORE_WINDOW = "ignore"


class PayloadError(ValueError):
    """The notification is not one we accept; ``status`` is the HTTP answer (4xx)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


Labels = dict[str, str]


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: Labels
    annotations: Labels = {}
    fingerprint: str = Field(default="", max_length=128)


class Notification(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: Literal["4"]
    status: Literal["firing", "resolved"]
    receiver: str = Field(default="", max_length=512)
    groupKey: str = Field(default="", max_length=4096)
    alerts: list[Alert] = Field(min_length=1, max_length=MAX_ALERTS)


def parse(body: bytes) -> Notification:
    try:
        data = json.loads(body)
    except RecursionError:
        raise PayloadError("body is not JSON we accept: nested too deeply") from None
    except ValueError as exc:  # also integers over 4,300 digits, and bytes that are not UTF-8
        raise PayloadError(f"body is not JSON we accept: {clip(str(exc))}") from None
    try:
        return Notification.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PayloadError(f"not an Alertmanager v4 notification: {where}: {first['msg']}",
                           422) from None


def requests_for(notification: Notification, settings: ActionsSettings
                 ) -> list[tuple[Request, str, str]]:
    """One (request, outcome, reason) per alert: outcome ``""`` for a request to submit,
    else why it is turned away. Label values are clipped: they reach the audit log."""
    decided: list[tuple[Request, str, str]] = []
    for alert in notification.alerts:
        alertname = clip(alert.labels.get("alertname", ""))
        label = clip(alert.labels.get("action", ""))
        action = normalise_action(label) if label else settings.alert_rules.get(alertname, "")
        target = alert.labels.get("container") if action == "cleanup" else None
        instance = alert.labels.get("instance")
        window = alert.labels.get("window")
        origin = {"alertname": alertname, "fingerprint": alert.fingerprint}
        if instance is not None:
            origin["instance"] = clip(instance)
        request = Request(action or "none", Trigger.ALERT, clip(target) if target else None,
                          origin=origin,
                          ignore_window=(window or "").strip().lower() == IGNORE_WINDOW)
        if alert.status == "resolved":
            decided.append((request, SKIPPED_RESOLVED, "resolved alerts start nothing"))
        elif settings.instances and instance is not None and instance not in settings.instances:
            # Another exporter's alert (one per host, every notification sent to all): the
            # container it names is on that host, whatever a container here is called.
            decided.append((request, SKIPPED_OTHER_HOST,
                            f"instance {clip(instance)!r} is another exporter; this one is "
                            f"{', '.join(settings.instances)}"))
        elif not action:
            decided.append((request, REJECTED, f"alert {alertname!r} has no action label "
                            "and no alert_rules entry"))
        elif action not in ACTION_NAMES:
            decided.append((request, REJECTED, f"unknown action {label!r}; known: "
                            f"{', '.join(ACTION_NAMES)}"))
        elif window is not None and not request.ignore_window:
            decided.append((request, REJECTED, f"label window={clip(window)!r}: the only "
                            f"value is {IGNORE_WINDOW!r} (run outside the off-peak window)"))
        else:
            decided.append((request, "", ""))
    return decided


def _named(request: Request, decision: Decision) -> dict[str, object]:
    """A decision as answered, naming the alert it was made for."""
    return {**request.origin, **decision.as_dict()}


def handle(body: bytes, runner: Runner) -> tuple[int, dict[str, object]]:
    """Validate, decide, start; the answer's status and JSON. Raises PayloadError on 4xx."""
    notification = parse(body)
    decided = requests_for(notification, runner.settings)
    reasons: dict[tuple[str, str | None], str] = {}
    for index, (request, outcome, reason) in enumerate(decided):
        if outcome == SKIPPED_RESOLVED and runner.deferred.cancel(request):
            decided[index] = (request, outcome, f"{reason}; its deferred request is cancelled")
        if outcome:
            continue
        key = (request.action, request.target)
        if key not in reasons:
            reasons[key] = runner.validate(request)
        if reasons[key]:
            decided[index] = (request, REJECTED, reasons[key])
    bad = [r.origin["alertname"] or r.action for r, outcome, _ in decided if outcome == REJECTED]
    if bad:
        # One bad alert makes the whole notification bad: nothing starts, and every alert in
        # it is named, in the answer and in the audit log.
        named = ", ".join(repr(n) for n in bad[:3]) + (f" and {len(bad) - 3} more"
                                                       if len(bad) > 3 else "")
        answer = []
        for request, outcome, reason in decided:
            if not outcome:
                outcome, reason = REJECTED, f"not started: rejected with {named} in the same " \
                                            "notification"
            answer.append(_named(request, runner.record_ignored(request, outcome, reason)))
        return 422, {"status": "rejected", "decisions": answer}
    answer = [_named(r, runner.record_ignored(r, outcome, reason))
              for r, outcome, reason in decided if outcome]
    submitted: dict[tuple[str, str | None, bool], str] = {}
    also_deferred: list[Request] = []
    for request, outcome, _ in decided:
        run = (request.action, request.target, request.ignore_window)
        if outcome:
            continue
        if run not in submitted:  # one run per action and target (an emergency's apart)
            decision = runner.submit(request)
            submitted[run] = decision.outcome
            answer.append(_named(request, decision))
        elif submitted[run] == DEFERRED:
            # Every alert is kept, so that one resolving leaves the others' request.
            also_deferred.append(request)
    runner.deferred.defer(also_deferred, runner.clock())
    return 200, {"status": "ok", "decisions": answer}
