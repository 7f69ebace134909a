"""The words every layer shares, defined once: what a run ended in (``Result``), what the
runner decided about a request (``Outcome``), who asked (``Trigger``), which GC (``GcKind``)
and what became of a GC callback (``CallbackOutcome``). They are the label values of
``whatsapp_gc_runs_total{result}``, ``whatsapp_cleanup_runs_total{result}``,
``whatsapp_action_requests_total{outcome}``, ``whatsapp_gc_callbacks_total{kind,outcome}``
and the ``trigger`` labels, and the words of the audit log; as ``StrEnum`` members they
compare equal to, and print as, those strings. And one rule both the runner and the metrics
read off a run: the rows a message GC left."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Result(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"  # the WA side said no (an error answer or callback, a script's exit)
    ERROR = "error"  # we could not ask (the WA API, the database or Docker out of reach)
    TIMEOUT = "timeout"
    # A GC the client took, with no evidence that it did anything: no callback came and the
    # rows did not fall (message GC), or no callback came (media GC). Not a success.
    UNCONFIRMED = "unconfirmed"
    DRY_RUN = "dry_run"
    INTERRUPTED = "interrupted"  # the exporter stopped or was killed during the run


class Outcome(StrEnum):
    """In order of precedence: when several reasons apply, the first one is reported."""

    STARTED = "started"
    SKIPPED_COOLDOWN = "skipped_cooldown"
    SKIPPED_RUNNING = "skipped_running"
    SKIPPED_WINDOW = "skipped_window"  # a schedule outside the window
    DEFERRED = "deferred"  # an alert outside the window: runs when it opens
    DRY_RUN = "dry_run"
    REJECTED = "rejected"
    SKIPPED_RESOLVED = "skipped_resolved"
    SKIPPED_LOCK = "skipped_lock_unavailable"
    SKIPPED_OTHER_HOST = "skipped_other_host"  # an alert another exporter reported


class GcKind(StrEnum):
    """Which GC: the ``kind`` label of the ``whatsapp_gc_*`` metrics and of a callback."""

    MESSAGE = "message"
    MEDIA = "media"


class CallbackOutcome(StrEnum):
    """What became of one GC callback the WA client POSTed (``whatsapp_gc_callbacks_total``).
    Every well-formed callback is accepted (2xx) whatever its outcome: the client retries
    one that is refused."""

    MATCHED = "matched"  # a node a running GC waits for: it counts towards the verdict
    NO_GC_RUNNING = "no_gc_running"  # no GC of its kind waits (late, or started elsewhere)
    UNKNOWN_NODE = "unknown_node"  # a node that did not answer "processing" to this GC
    DUPLICATE = "duplicate"  # that node has called back for this GC already
    NOT_UNDERSTOOD = "not_understood"  # a status other than complete or failed


# The action that runs each kind of GC.
GC_ACTIONS = {"gc": GcKind.MESSAGE, "media_gc": GcKind.MEDIA}


class Trigger(StrEnum):
    ALERT = "alert"
    SCHEDULE = "schedule"
    MANUAL = "manual"


def rows_after_gc(action: str, result: str, details: Mapping[str, Any]) -> dict[str, int]:
    """The rows left per database by a message-GC run that succeeded, which
    ``whatsapp_gc_rows_after_last_success`` shows and the state file keeps across restarts;
    empty for any other run."""
    after = details.get("databases_after")
    if action != "gc" or result != Result.SUCCESS or not isinstance(after, dict):
        return {}
    return after
