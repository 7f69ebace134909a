"""What every fault test needs: a short-interval configuration, firing alerts, a watch on
/metrics for as long as the fault lasts, and the audit-log checks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support import ExporterProcess, Samples, parse_metrics, value, wait_for
from tests.wa_standin.server import StandIn

TOKEN = "fault-suite-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRAPE_LIMIT = 1.0  # seconds: the longest any scrape may take while a fault lasts

MESSAGES = {"interval": "500ms", "timeout": "4s", "query_timeout": "1s"}
FAST_GC = {"callback_timeout": "5s", "settle_interval": "200ms", "round_timeout": "20s",
           "round_pause": "10ms"}
FAST_WA_API = {"connect_timeout": "1s", "read_timeout": "1s", "retry_attempts": 3,
               "retry_backoff": "50ms"}


def config(tmp_path: Path, *, state_dir: Path | None = None, allowed: tuple[str, ...] = (),
           messages: dict[str, Any] | None = None, containers: dict[str, Any] | None = None,
           actions: dict[str, Any] | None = None) -> str:
    """The exporter's YAML: only the collectors a test names, short timeouts, the webhook
    behind :data:`TOKEN`, no schedules (a cron firing mid-test would be a second run), no
    off-peak window (an alert acts at once, at any hour)."""
    token = tmp_path / "webhook-token"
    token.write_text(TOKEN + "\n")
    off = {"enabled": False}
    document = {
        "collectors": {"messages": messages or off, "containers": containers or off,
                       "logs": off, "volume": off, "volume_scan": off},
        "actions": {"allowed": list(allowed), "state_dir": str(state_dir or tmp_path / "state"),
                    "schedules": [], "window": "always", "gc": FAST_GC, **(actions or {})},
        "webhook": {"bearer_token_file": str(token)},
        "wa_api": FAST_WA_API,
    }
    return yaml.safe_dump(document)


def wa_env(standin: StandIn) -> dict[str, str]:
    return {"WA_WEB_URL": standin.url, "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}


def notification(action: str, seq: int, **labels: str) -> dict[str, Any]:
    """Alertmanager's v4 notification of one firing alert; ``seq`` is its fingerprint, so
    each request can be found again in the audit log."""
    alert = {"status": "firing", "labels": {"alertname": "FaultSuite", "action": action, **labels},
             "annotations": {}, "startsAt": "2026-11-26T10:00:00Z",
             "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom",
             "fingerprint": fingerprint(seq)}
    return {"version": "4", "status": "firing", "receiver": "wa-exporter", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://am", "alerts": [alert]}


def fingerprint(seq: int) -> str:
    return f"fault{seq:05d}"


def post_alert(exporter: ExporterProcess, action: str, seq: int, timeout: float = 15,
               **labels: str) -> tuple[int, dict[str, Any]]:
    """POST one firing alert; return the HTTP status and the exporter's one decision."""
    response = requests.post(exporter.url + "/webhook/alertmanager", headers=AUTH,
                             json=notification(action, seq, **labels), timeout=timeout)
    assert response.status_code in (200, 422), response.text
    [decision] = response.json()["decisions"]
    return response.status_code, decision


def fire(exporter: ExporterProcess, action: str, seq: int, timeout: float = 15,
         **labels: str) -> dict[str, Any]:
    """POST one firing alert; return the exporter's one decision (the answer must be 200)."""
    status, decision = post_alert(exporter, action, seq, timeout, **labels)
    assert status == 200, decision
    return decision


def deliver_gc_callback(exporter: ExporterProcess, messages_deleted: int) -> None:
    """What the WA client's webhook forwards when a message GC completes."""
    body = {"services": [{"message": {"gc": {"messages_deleted": messages_deleted,
                                             "status": "complete"}}}]}
    response = requests.post(exporter.url + "/webhook/wa-callback", json=body, headers=AUTH,
                             timeout=5)
    assert response.status_code == 200, response.text


class ScrapeWatch:
    """Scrapes /metrics over and over, in a thread, for as long as the ``with`` block (the
    fault) lasts. Leaving the block without an exception asserts that there were scrapes,
    that each answered 200, and that none took :data:`SCRAPE_LIMIT` or longer."""

    def __init__(self, exporter: ExporterProcess, pause: float = 0.05) -> None:
        self.exporter = exporter
        self.pause = pause
        self.durations: list[float] = []
        self.failures: list[str] = []
        self.samples: list[Samples] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._scrape, daemon=True)

    def __enter__(self) -> ScrapeWatch:
        self._thread.start()
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        self._stop.set()
        self._thread.join(SCRAPE_LIMIT * 3)
        if kind is None:
            with requests.Session() as session:  # one more, while the fault still lasts
                self._scrape_once(session)
            self.check()

    def check(self) -> None:
        assert not self.failures, self.failures[:5]
        assert len(self.durations) >= 2, f"only {len(self.durations)} scrapes"
        slowest = max(self.durations)
        assert slowest < SCRAPE_LIMIT, (
            f"a scrape took {slowest:.2f}s during the fault ({len(self.durations)} scrapes)")

    def seen(self, name: str, **labels: str) -> list[float | None]:
        """Every value the metric had, scrape by scrape."""
        return [value(samples, name, **labels) for samples in self.samples]

    def _scrape(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                self._scrape_once(session)
                self._stop.wait(self.pause)

    def _scrape_once(self, session: requests.Session) -> None:
        started = time.monotonic()
        try:
            response = session.get(self.exporter.url + "/metrics", timeout=SCRAPE_LIMIT * 2)
        except requests.RequestException as exc:
            self.failures.append(f"scrape failed: {exc}")
            return
        self.durations.append(time.monotonic() - started)
        if response.status_code != 200:
            self.failures.append(f"scrape answered {response.status_code}")
        else:
            self.samples.append(parse_metrics(response.text))


def audit_records(state_dir: Path) -> list[dict[str, Any]]:
    """Every line of ``audit.jsonl``; a line that is not JSON fails the test (a torn or
    doubled write is a lost record). A last line without its newline is still being
    written (or was cut by a kill) and is left out."""
    path = state_dir / "audit.jsonl"
    if not path.exists():
        return []
    records = []
    complete = path.read_text(encoding="utf-8").rpartition("\n")[0]
    for number, line in enumerate(complete.splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"audit.jsonl line {number} is not a record: {line!r}") from None
    return records


def decisions(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == "decision"]


def outcomes(records: list[dict[str, Any]]) -> list[str]:
    return [r["outcome"] for r in decisions(records)]


def finished(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == "finished"]


def assert_every_run_finished(records: list[dict[str, Any]]) -> None:
    """Each started (or dry) run has exactly one ``finished`` record, and nothing else does."""
    started = sorted(r["run_id"] for r in decisions(records)
                     if r["outcome"] in ("started", "dry_run"))
    ended = sorted(r["run_id"] for r in finished(records))
    assert ended == started, f"started runs {started}, finished records {ended}"


def requests_total(samples: Samples, action: str) -> dict[str, float]:
    """``whatsapp_action_requests_total`` of one action, by outcome, without the zeros."""
    totals = {}
    for (name, labels), count in samples.items():
        label = dict(labels)
        if name == "whatsapp_action_requests_total" and label["action"] == action and count:
            totals[label["outcome"]] = count
    return totals


def gc_runs(samples: Samples, kind: str = "message") -> dict[str, float]:
    """``whatsapp_gc_runs_total`` of one kind, by result (all triggers), without the zeros."""
    totals: dict[str, float] = {}
    for (name, labels), count in samples.items():
        label = dict(labels)
        if name == "whatsapp_gc_runs_total" and label["kind"] == kind and count:
            totals[label["result"]] = totals.get(label["result"], 0) + count
    return totals


def wait_finished(state_dir: Path, count: int = 1, timeout: float = 30) -> list[dict[str, Any]]:
    """The ``finished`` records, once there are ``count`` of them."""
    def done() -> list[dict[str, Any]] | None:
        records = finished(audit_records(state_dir))
        return records if len(records) >= count else None

    records: list[dict[str, Any]] = wait_for(done, timeout,
                                             what=f"{count} finished record(s) in the audit log")
    return records


def log_lines(exporter: ExporterProcess, *needles: str) -> list[str]:
    """The exporter's log lines that hold every needle."""
    return [line for line in list(exporter.lines) if all(n in line for n in needles)]
