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

from exporter.actions.base import ERROR, SUCCESS, UNCONFIRMED, Request
from exporter.actions.decision import REJECTED, SKIPPED_COOLDOWN, SKIPPED_LOCK, STARTED
from exporter.actions.runner import Runner
from exporter.upgrade.report import Report
from exporter.vocabulary import Trigger


@dataclass
class Outcome:
    report: Report
    stopped: str  # why the rounds ended, in words
    rejected: bool = False  # the runner refused gc itself (not allowed, no WA API): config
    # GC could not be asked: the WA API or the database (the cluster lock) out of reach.
    unreachable: bool = False


def large_tables(report: Report) -> list[str]:
    return [db.name for db in report.databases if db.rows is not None
            and not db.ready(report.bound)]


PROGRESS_POLL_SECONDS = 1.0  # how soon a recorded round is printed


class Preparation:
    """The loop of ``--prepare``. ``recent`` gives the audit log's latest records, ``check``
    a fresh report, ``say`` prints a progress line."""

    def __init__(self, runner: Runner, recent: Callable[[], list[dict[str, Any]]],
                 check: Callable[[], Report], say: Callable[[str], None], *,
                 ignore_cooldown: bool, max_runs: int, pause: float) -> None:
        self.runner = runner
        self.recent = recent
        self.check = check
        self.say = say
        self.ignore_cooldown = ignore_cooldown
        self.max_runs = max_runs
        self.pause = pause
        self.rounds = 0

    def run(self) -> Outcome:
        report = self.check()
        for number in range(1, self.max_runs + 1):
            if report.databases_error or any(db.rows is None for db in report.databases):
                return Outcome(report, "the tables could not all be counted")
            large = large_tables(report)
            if not large:
                return Outcome(report, f"every messages table is under {report.bound:,} rows")
            if number > 1:
                time.sleep(self.pause)  # the guide's pause between rounds: actions.gc.round_pause
            self.say(f"message GC run {number}: {', '.join(large)} at or above "
                     f"{report.bound:,} rows")
            before = sum(db.rows or 0 for db in report.databases)
            decision = self.runner.submit(Request(
                "gc", Trigger.MANUAL, ignore_cooldown=self.ignore_cooldown,
                origin={"user": os.environ.get("USER", ""),
                        "command": "upgrade-check --prepare"}))
            if decision.outcome != STARTED or decision.run_id is None:
                hint = ("; pass --ignore-cooldown to run again now"
                        if decision.outcome == SKIPPED_COOLDOWN else "")
                return Outcome(report, f"message GC not started: {decision.outcome}: "
                               f"{decision.reason}{hint}", rejected=decision.outcome == REJECTED,
                               unreachable=decision.outcome == SKIPPED_LOCK)
            finished = self._follow(decision.run_id)
            report = self.check()
            after = sum(db.rows or 0 for db in report.databases)
            if finished.get("result") == UNCONFIRMED:
                return Outcome(report, "message GC ended unconfirmed: no callback can reach "
                               "this command, and the rows did not fall (nothing to delete? "
                               "the guide: mark incoming messages read so they can be "
                               "cleaned)")
            if finished.get("result") != SUCCESS:
                why = finished.get("error") or finished.get("errors") or ""
                return Outcome(report, f"message GC ended {finished.get('result')}: {why}",
                               unreachable=finished.get("result") == ERROR)
            if not (finished.get("messages_deleted") and after < before) \
                    and large_tables(report):
                return Outcome(report, "rounds stopped helping: the last run did not lower the "
                               "rows (the guide: mark incoming messages read so they can be "
                               "cleaned)")
        if large_tables(report):
            return Outcome(report, f"stopped after {self.max_runs} runs")
        return Outcome(report, f"every messages table is under {report.bound:,} rows")

    def _follow(self, run_id: str) -> dict[str, Any]:
        """Print each round of the run as the audit log records it; return its "finished"
        record (written before the runner counts the run as done)."""
        printed: set[int] = set()
        while True:
            idle = self.runner.wait_idle(PROGRESS_POLL_SECONDS)
            for record in self.recent():
                if record.get("run_id") != run_id:
                    continue
                if record.get("event") == "round" and id(record) not in printed:
                    printed.add(id(record))
                    self.rounds += 1
                    self.say(f"  round {self.rounds}: rows {_n(record.get('rows_before'))} -> "
                             f"{_n(record.get('rows_after'))}; "
                             f"{_n(record.get('messages_deleted'))} deleted; "
                             f"{record.get('result')} (completed by "
                             f"{record.get('completed_by') or '-'})")
                elif record.get("event") == "finished":
                    return record
            if idle:  # done, yet no record in memory: only if the audit log lost it
                return {"result": "error", "error": "the run's record was not found"}


def _n(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)
