"""``wa-exporter run ACTION --exporter.url URL``: ask the running exporter to run an action,
follow its progress and end with its result, like ``amtool --alertmanager.url``.

So a person's run shares the exporter's one runner, cooldown, lock, audit log, metrics
(``trigger="manual"``) and callback inbox: a GC it starts hears the WA client's callbacks.
The request is ``POST /actions/run`` with the webhook credentials of the same
``--config.file`` (``webhook.bearer_token`` or basic auth); progress is read from
``GET /actions?run_id=…`` until the run's ``finished`` record.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from exporter.config import WebhookSettings

POLL_SECONDS = 0.5
# How long the exporter may stay out of reach while a run is followed.
LOST_AFTER_SECONDS = 60.0
TIMEOUT = (5.0, 30.0)  # connect, read

ProgressPrinter = Callable[[str, dict[str, Any]], None]


class RemoteError(RuntimeError):
    """The exporter could not be asked or followed; ``exit_code`` says how the CLI ends."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class RemoteRun:
    decision: dict[str, Any]
    finished: dict[str, Any] | None  # the run's "finished" record, None if it never started


def run_remote(url: str, webhook: WebhookSettings, action: str, target: str | None,
               dry_run: bool, user: str, on_progress: ProgressPrinter,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> RemoteRun:
    """Ask, then follow until the run finishes; :class:`RemoteError` if the exporter cannot
    be reached or refuses."""
    base = url.rstrip("/")
    with requests.Session() as session:
        session.headers["User-Agent"] = "wa-exporter-run"
        _authenticate(session, webhook)
        answer = _call(session, "POST", f"{base}/actions/run", json={
            "action": action, "target": target, "dry_run": dry_run, "user": user})
        decision: dict[str, Any] = answer.get("decision", {})
        run_id = decision.get("run_id")
        if not run_id:
            return RemoteRun(decision, None)
        seen = 0
        last_contact = clock()
        while True:
            try:
                records = _call(session, "GET", f"{base}/actions",
                                params={"run_id": run_id}).get("records", [])
                last_contact = clock()
            except RemoteError as exc:
                if exc.exit_code != 1 or clock() - last_contact > LOST_AFTER_SECONDS:
                    raise RemoteError(f"lost the exporter while following run {run_id}: "
                                      f"{exc}; the run goes on there: see {base}/actions"
                                      ) from None
                records = []
            for record in records[seen:]:
                event = record.get("event", "")
                if event == "finished":
                    return RemoteRun(decision, record)
                on_progress(event, record)
            seen = max(seen, len(records))
            sleep(POLL_SECONDS)


def _authenticate(session: requests.Session, webhook: WebhookSettings) -> None:
    if webhook.bearer_token is not None:
        session.headers["Authorization"] = f"Bearer {webhook.bearer_token.reveal()}"
    elif webhook.basic_auth_username is not None and webhook.basic_auth_password is not None:
        session.auth = (webhook.basic_auth_username, webhook.basic_auth_password.reveal())


def _call(session: requests.Session, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = session.request(method, url, timeout=TIMEOUT, **kwargs)
    except requests.RequestException as exc:
        raise RemoteError(f"cannot reach the exporter at {url}: {type(exc).__name__}; "
                          "fix: check --exporter.url (WA_EXPORTER_URL) and that the exporter "
                          "runs with actions on") from None
    if response.status_code in (401, 403):
        raise RemoteError(f"the exporter refused the credentials ({response.status_code}); "
                          "fix: pass the --config.file whose webhook section holds the "
                          "exporter's bearer token or basic auth", exit_code=2)
    if response.status_code == 404:
        raise RemoteError(f"{url}: not found (404); fix: the exporter runs without actions "
                          "(actions.allowed is empty) or --exporter.url is not the exporter",
                          exit_code=2)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise RemoteError(f"{url}: answered {response.status_code} without JSON; is "
                          "--exporter.url the exporter?")
    if response.status_code >= 400:
        raise RemoteError(f"the exporter refused the request ({response.status_code}): "
                          f"{body.get('error', '')}",
                          exit_code=1 if response.status_code >= 500 else 2)
    return body


def print_error(error: RemoteError) -> int:
    print(f"wa-exporter: {error}", file=sys.stderr)
    return error.exit_code
