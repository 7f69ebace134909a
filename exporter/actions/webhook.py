"""The exporter's inbound hooks, independent of HTTP plumbing: authentication, the
Alertmanager notification, forwarded WA GC callbacks, a person's run request, the recent
action records, and what waits for the off-peak window."""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
from collections.abc import Callable
from typing import Any

from exporter.actions import alertmanager, manual
from exporter.actions.runner import Runner
from exporter.config import WebhookSettings

log = logging.getLogger(__name__)


class Webhooks:
    def __init__(self, settings: WebhookSettings, runner: Runner,
                 gc_callback: Callable[[bytes], list[str]] | None = None) -> None:
        self.settings = settings
        self.runner = runner
        self.gc_callback = gc_callback

    @property
    def max_body_bytes(self) -> int:
        return self.settings.max_body_bytes

    @property
    def has_auth(self) -> bool:
        return self.settings.has_auth

    def routes(self) -> dict[str, Callable[[bytes], tuple[int, dict[str, Any]]]]:
        """Each POST path, with the handler the server hands its body to."""
        return {"/webhook/alertmanager": self.alertmanager,
                "/webhook/wa-callback": self.wa_callback,
                "/actions/run": self.run_request}

    def authorized(self, headers: Any) -> bool:
        """Bearer token or basic auth, compared in constant time; no auth configured: open."""
        if not self.settings.has_auth:
            return True
        header = headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        token = self.settings.bearer_token
        # An empty token or password given never matches, whatever the settings hold (they
        # refuse an empty secret).
        if scheme.lower() == "bearer" and token is not None and credentials.strip():
            return hmac.compare_digest(credentials.strip().encode(), token.reveal().encode())
        user, password = self.settings.basic_auth_username, self.settings.basic_auth_password
        if scheme.lower() == "basic" and user is not None and password is not None:
            try:
                given = base64.b64decode(credentials.strip(), validate=True)
            except (binascii.Error, ValueError):
                return False
            expected = f"{user}:{password.reveal()}".encode()
            return bool(given.partition(b":")[2].strip()) and hmac.compare_digest(given, expected)
        return False

    def alertmanager(self, body: bytes) -> tuple[int, dict[str, Any]]:
        try:
            return alertmanager.handle(body, self.runner)
        except alertmanager.PayloadError as exc:
            log.warning("webhook notification refused", extra={"err": str(exc)})
            return exc.status, {"status": "error", "error": str(exc)}

    def wa_callback(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """A GC callback the WA client POSTed: 200 for every WA GC callback, whatever became
        of it (the client retries one that is refused); 400 only for a body that is none."""
        if self.gc_callback is None:
            return 404, {"status": "error", "error": "GC is not configured"}
        try:
            outcomes = self.gc_callback(body)
        except ValueError as exc:
            log.warning("GC callback refused", extra={"err": str(exc)})
            return 400, {"status": "error", "error": str(exc)}
        return 200, {"status": "ok", "accepted": len(outcomes), "outcomes": outcomes}

    def run_request(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """``wa-exporter run ACTION --exporter.url``: a person's run, through this runner."""
        return manual.handle(body, self.runner)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        return self.runner.audit.recent(limit)

    def of_run(self, run_id: str) -> list[dict[str, Any]]:
        return self.runner.audit.of_run(run_id)

    def waiting(self) -> dict[str, Any]:
        """The off-peak window in force and the alerts deferred to it."""
        runner = self.runner
        return {"window": runner.window.describe(runner.clock()),
                "deferred": runner.deferred.pending()}
