"""A person's run request, sent to the running exporter (``wa-exporter run ACTION
--exporter.url URL``): ``POST /actions/run`` with ``{"action", "target", "dry_run", "user"}``.

It goes through the one runner like an alert (allow-list, cooldown, lock, audit, metrics with
``trigger="manual"``) except for the off-peak window, which a person's run ignores, and
the GC it starts hears its callbacks in the exporter's inbox. The answer is the decision with
its ``run_id``; the run's records are then read with ``GET /actions?run_id=…``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from exporter.actions.audit import clip
from exporter.actions.base import Request
from exporter.actions.runner import Runner
from exporter.config import ACTION_NAMES
from exporter.vocabulary import Trigger

log = logging.getLogger(__name__)


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=40)
    target: str | None = Field(default=None, max_length=256)
    dry_run: bool = False
    user: str = Field(default="", max_length=256)


def handle(body: bytes, runner: Runner) -> tuple[int, dict[str, Any]]:
    """Decide and start; the HTTP status and the JSON answer (4xx for a malformed body)."""
    try:
        asked = RunRequest.model_validate(json.loads(body))
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            reason = f"{where}: {first['msg']}"
        else:
            reason = "body is not JSON"
        return 400, {"status": "error", "error": f"not a run request: {reason}; send "
                     '{"action": "gc"|"media_gc"|"cleanup", "target": null, "dry_run": false}'}
    action = asked.action.strip().lower().replace("-", "_")
    if action not in ACTION_NAMES:
        return 400, {"status": "error", "error": f"unknown action {clip(asked.action)!r}; "
                     f"known: {', '.join(ACTION_NAMES)}"}
    request = Request(action, Trigger.MANUAL, asked.target, dry_run=asked.dry_run,
                      origin={"user": clip(asked.user), "via": "exporter.url"})
    decision = runner.submit(request)
    return 200, {"status": "ok", "decision": decision.as_dict()}
