"""The words every layer shares, defined once: what a run ended in (``Result``), what the
runner decided about a request (``Outcome``) and who asked (``Trigger``). They are the label
values of ``whatsapp_gc_runs_total{result}``, ``whatsapp_cleanup_runs_total{result}``,
``whatsapp_action_requests_total{outcome}`` and the ``trigger`` labels, and the words of the
audit log; as ``StrEnum`` members they compare equal to, and print as, those strings."""

from __future__ import annotations

from enum import StrEnum


class Result(StrEnum):
    SUCCESS = "success"
    FAILED = "failed"  # the WA side said no (an error answer or callback, a script's exit)
    ERROR = "error"  # we could not ask (the WA API, the database or Docker out of reach)
    TIMEOUT = "timeout"
    DRY_RUN = "dry_run"
    INTERRUPTED = "interrupted"  # the exporter stopped or was killed during the run


class Outcome(StrEnum):
    """In order of precedence: when several reasons apply, the first one is reported."""

    STARTED = "started"
    SKIPPED_COOLDOWN = "skipped_cooldown"
    SKIPPED_RUNNING = "skipped_running"
    SKIPPED_WINDOW = "skipped_window"
    DRY_RUN = "dry_run"
    REJECTED = "rejected"
    SKIPPED_RESOLVED = "skipped_resolved"
    SKIPPED_LOCK = "skipped_lock_unavailable"
    SKIPPED_OTHER_HOST = "skipped_other_host"  # an alert another exporter reported


class Trigger(StrEnum):
    ALERT = "alert"
    SCHEDULE = "schedule"
    MANUAL = "manual"
