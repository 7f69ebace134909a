"""Alertmanager webhook payloads (version 4) -> runner requests.

The payload is validated strictly; each firing alert maps to an action through its
``action`` label or, failing that, the ``alert_rules`` on its ``alertname``. Cleanup may be
narrowed to the one container an alert's ``container`` label names. Resolved alerts start
nothing. Targets are only ever checked against discovery, never taken on trust.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.actions.runner import REJECTED, SKIPPED_RESOLVED, Decision, Request, Runner
from exporter.config import ACTION_NAMES, ActionsSettings

MAX_ALERTS = 1000


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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"body is not JSON: {exc}") from None
    try:
        return Notification.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PayloadError(f"not an Alertmanager v4 notification: {where}: {first['msg']}",
                           422) from None


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def requests_for(notification: Notification, settings: ActionsSettings
                 ) -> tuple[list[tuple[Request, str]], list[tuple[Request, str, str]]]:
    """Split the alerts into requests to submit and requests turned away (outcome, reason)."""
    wanted: dict[tuple[str, str | None], Request] = {}
    turned_away: list[tuple[Request, str, str]] = []
    for alert in notification.alerts:
        alertname = alert.labels.get("alertname", "")
        label = alert.labels.get("action")
        action = _normalise(label) if label else settings.alert_rules.get(alertname, "")
        target = alert.labels.get("container") if action == "cleanup" else None
        origin = {"alertname": alertname[:200], "fingerprint": alert.fingerprint}
        request = Request(action or "none", "alert", target, origin=origin)
        if alert.status == "resolved":
            turned_away.append((request, SKIPPED_RESOLVED, "resolved alerts start nothing"))
        elif not action:
            turned_away.append((request, REJECTED, f"alert {alertname!r} has no action label "
                                "and no alert_rules entry"))
        elif action not in ACTION_NAMES:
            turned_away.append((request, REJECTED, f"unknown action {label!r}; known: "
                                f"{', '.join(ACTION_NAMES)}"))
        else:
            wanted.setdefault((action, target), request)
    return [(r, "") for r in wanted.values()], turned_away


def handle(body: bytes, runner: Runner) -> tuple[int, dict[str, object]]:
    """Validate, decide, start; the answer's status and JSON. Raises PayloadError on 4xx."""
    notification = parse(body)
    wanted, turned_away = requests_for(notification, runner.settings)
    rejected = [(r, o, why) for r, o, why in turned_away if o == REJECTED]
    for request, _ in wanted:
        reason = runner.validate(request)
        if reason:
            rejected.append((request, REJECTED, reason))
    decisions: list[Decision] = []
    if rejected:
        # One bad alert makes the whole notification bad: nothing starts, all is recorded.
        for request, outcome, reason in turned_away + [x for x in rejected
                                                        if x not in turned_away]:
            decisions.append(runner.record_ignored(request, outcome, reason))
        return 422, {"status": "rejected", "decisions": [d.as_dict() for d in decisions]}
    for request, outcome, reason in turned_away:
        decisions.append(runner.record_ignored(request, outcome, reason))
    for request, _ in wanted:
        decisions.append(runner.submit(request))
    return 200, {"status": "ok", "decisions": [d.as_dict() for d in decisions]}
