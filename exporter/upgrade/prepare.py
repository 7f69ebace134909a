"""``upgrade-check --prepare``: message GC until every ``messages`` table is under the large
bound, as the guide advises before an upgrade.

Each GC goes through the one runner (allow-list, cluster lock, cooldown, audit log) as
``trigger=manual``; the cooldown is skipped only when the person asks (``--ignore-cooldown``,
recorded in the audit log). Runs repeat, ``actions.gc.round_pause`` apart, until every
table is under the bound, a run deletes nothing or does not lower the rows (rounds stopped
helping), a run does not succeed or is not started, or ``max_runs`` is reached. Each GC
round (a run holds several above ``actions.gc.large_table_rows``) is printed as it is
recorded in the audit log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.actions.base import SUCCESS
from exporter.actions.runner import REJECTED, STARTED, Request, Runner
from exporter.upgrade.report import Report


@dataclass
class Outcome:
    report: Report
    stopped: str  # why the rounds ended, in words
    rejected: bool = False  # the runner refused gc itself (not allowed, no WA API): config


def large_tables(report: Report) -> list[str]:
    return [db.name for db in report.databases if db.rows is not None
            and not db.ready(report.bound)]


def prepare(runner: Runner, recent: Callable[[], list[dict[str, Any]]],
            check: Callable[[], Report], say: Callable[[str], None], *,
            ignore_cooldown: bool, max_runs: int, pause: float) -> Outcome:
    """``recent`` gives the audit log's latest records, ``check`` a fresh report."""
    report = check()
    rounds = 0
    for run in range(1, max_runs + 1):
        large = large_tables(report)
        if report.databases_error or any(db.rows is None for db in report.databases):
            return Outcome(report, "the tables could not all be counted")
        if not large:
            return Outcome(report, f"every messages table is under {report.bound:,} rows")
        if run > 1:
            time.sleep(pause)
        say(f"message GC run {run}: {', '.join(large)} at or above {report.bound:,} rows")
        before = sum(db.rows or 0 for db in report.databases)
        decision, result = runner.run_now(Request(
            "gc", "manual", ignore_cooldown=ignore_cooldown,
            origin={"user": os.environ.get("USER", ""), "command": "upgrade-check --prepare"}))
        if decision.outcome != STARTED or result is None:
            hint = ("; pass --ignore-cooldown to run again now" if decision.outcome ==
                    "skipped_cooldown" else "")
            return Outcome(report, f"message GC not started: {decision.outcome}: "
                           f"{decision.reason}{hint}", rejected=decision.outcome == REJECTED)
        for record in recent():
            if record.get("event") == "round" and record.get("run_id") == decision.run_id:
                rounds += 1
                say(f"  round {rounds}: rows {record.get('rows_before')} -> "
                    f"{record.get('rows_after')}, {record.get('messages_deleted')} deleted, "
                    f"{record.get('result')} (completed by {record.get('completed_by')})")
        report = check()
        after = sum(db.rows or 0 for db in report.databases)
        if result.result != SUCCESS:
            return Outcome(report, f"message GC ended {result.result}: "
                           f"{result.details.get('error', result.details.get('errors', ''))}")
        helped = bool(result.details.get("messages_deleted")) and after < before
        if not helped and large_tables(report):
            return Outcome(report, "rounds stopped helping: the last run did not lower the rows "
                           "(the guide: mark incoming messages read so they can be cleaned)")
    if large_tables(report):
        return Outcome(report, f"stopped after {max_runs} runs")
    return Outcome(report, f"every messages table is under {report.bound:,} rows")
