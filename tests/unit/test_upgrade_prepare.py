"""``--prepare``'s loop with the real runner and an action that lowers a row count the test
holds: when it stops, and why."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.actions.base import Action, ActionResult, RunContext
from exporter.cli import make_parser
from exporter.readiness import DatabaseFacts
from exporter.upgrade.prepare import Preparation
from exporter.upgrade.report import Report
from tests.unit.test_runner import make_runner


class Shrink(Action):
    name = "gc"

    def __init__(self, rows: int, per_run: int, result: str = "success") -> None:
        self.rows, self.per_run, self.result, self.runs = rows, per_run, result, 0

    def run(self, ctx: RunContext) -> ActionResult:
        self.runs += 1
        deleted = min(self.rows, self.per_run)
        ctx.progress("round", round=1, rows_before=self.rows, rows_after=self.rows - deleted,
                     messages_deleted=deleted, result=self.result, completed_by="row_count")
        self.rows -= deleted
        return ActionResult(self.result, {"messages_deleted": deleted})


def run(tmp_path: Path, action: Shrink, max_runs: int = 5, ignore_cooldown: bool = True
        ) -> tuple[str, list[str], int]:
    runner, _ = make_runner(tmp_path, action)
    said: list[str] = []

    def check() -> Report:
        return Report(bound=100, gc_max_age=86400, media_min_avail_ratio=0.1,
                      databases=[DatabaseFacts("waent_a", action.rows)])

    outcome = Preparation(runner, runner.audit.recent, check, said.append,
                          ignore_cooldown=ignore_cooldown, max_runs=max_runs, pause=0).run()
    return outcome.stopped, said, action.runs


def test_runs_until_under_the_bound(tmp_path: Path) -> None:
    stopped, said, runs = run(tmp_path, Shrink(250, 60))
    assert runs == 3 and stopped == "every messages table is under 100 rows"
    assert [s.strip().split(";")[0] for s in said if s.strip().startswith("round")] == [
        "round 1: rows 250 -> 190", "round 2: rows 190 -> 130", "round 3: rows 130 -> 70"]


def test_round_lines_read_like_the_report(tmp_path: Path) -> None:
    _, said, _ = run(tmp_path, Shrink(2_500_000, 1_000_000))
    assert "  round 1: rows 2,500,000 -> 1,500,000; 1,000,000 deleted; success (completed by " \
        "row_count)" in said


def test_nothing_to_do_runs_nothing(tmp_path: Path) -> None:
    assert run(tmp_path, Shrink(99, 60))[2] == 0


def test_stops_when_rounds_stop_helping_or_fail_or_at_the_limit(tmp_path: Path) -> None:
    assert run(tmp_path / "a", Shrink(250, 0))[0].startswith("rounds stopped helping")
    assert run(tmp_path / "b", Shrink(250, 10, "timeout"))[0].startswith(
        "message GC ended timeout")
    stopped, _, runs = run(tmp_path / "c", Shrink(1000, 10), max_runs=2)
    assert runs == 2 and stopped == "stopped after 2 runs"


def test_the_cooldown_holds_without_the_flag(tmp_path: Path) -> None:
    stopped, _, runs = run(tmp_path, Shrink(250, 60), ignore_cooldown=False)
    assert runs == 1 and "skipped_cooldown" in stopped and "--ignore-cooldown" in stopped


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_max_runs_must_be_a_positive_whole_number(value: str) -> None:
    with pytest.raises(SystemExit) as caught:
        make_parser().parse_args(["upgrade-check", "--prepare", "--max-runs", value])
    assert caught.value.code == 2
    assert make_parser().parse_args(["upgrade-check", "--max-runs", "3"]).max_runs == 3
