"""One run's steps, one at a time: claim when cleared, run the action, settle the state file,
release the lock and the target, record the outcome."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from exporter.actions.audit import StateFile
from exporter.actions.base import ActionResult, Request, RunContext
from exporter.actions.decision import Decision
from exporter.actions.run import ActionRun
from exporter.actions.runner import Runner
from tests.unit.test_runner import Clock, Gate, audit, make_runner


class Lock:
    """A held cluster lock that remembers how it was given back."""

    def __init__(self) -> None:
        self.released: float | str | None = None

    def release(self) -> None:
        self.released = "at once"

    def release_after(self, seconds: float) -> None:
        self.released = seconds


class Broken(Gate):
    def run(self, ctx: RunContext) -> ActionResult:
        raise RuntimeError("bug")


class CutShort(BaseException):
    """What no ``except Exception`` catches (the process being torn down)."""


def cleared(runner: Runner, lock: Lock | None = None, dry_run: bool = False) -> ActionRun:
    """The run the runner would make for an alert that asks for gc."""
    outcome = "dry_run" if dry_run else "started"
    decision = Decision("gc", outcome, targets=[""], run_id="r1")
    held = [] if lock is None else [lock]
    return ActionRun(runner, Request("gc", "alert", dry_run=dry_run), decision,
                     [""] if held else [], held)


def state(tmp_path: Path) -> dict[str, Any]:
    return StateFile(tmp_path / "state.json").read()


def test_a_cleared_run_claims_its_target_and_its_steps_settle_release_and_record(
        tmp_path: Path) -> None:
    clock, action, lock = Clock(), Gate(), Lock()
    action.gate.set()
    runner, _ = make_runner(tmp_path, action, clock, cooldown={"gc": "1h"})
    started = clock.now
    run = cleared(runner, lock)
    assert runner.running() == ["gc"]
    assert state(tmp_path)["running"]["r1"]["targets"] == [""]
    assert state(tmp_path)["last_start"] == {"gc": started}  # the cooldown starts here

    clock.now += 10
    result = run.run_action()
    assert result.result == "success" and action.runs[0].run_id == "r1"
    run.settle(result, clock.now)
    assert state(tmp_path)["running"] == {}
    assert state(tmp_path)["last_success"] == {"gc": clock.now}
    assert state(tmp_path)["last_start"] == {"gc": started}
    assert lock.released is None and runner.running() == ["gc"]

    run.release(result)
    assert lock.released == 3590  # other replicas stay out for the rest of the cooldown
    assert runner.running() == []
    run.record_finished(result, clock.now)
    finished = [r for r in audit(tmp_path) if r["event"] == "finished"]
    assert finished == [{"event": "finished", "run_id": "r1", "action": "gc",
                         "trigger": "alert", "result": "success",  # no targets: [""]
                         "duration_seconds": 10.0, "messages_deleted": 3,
                         "ts": finished[0]["ts"]}]


def test_an_action_that_raises_gives_back_the_cooldown_and_the_lock_at_once(
        tmp_path: Path) -> None:
    clock, lock = Clock(), Lock()
    runner, _ = make_runner(tmp_path, Broken(), clock)
    earlier = clock.now - 7200
    StateFile(tmp_path / "state.json").update(lambda d: d["last_start"].update(gc=earlier))
    run = cleared(runner, lock)
    assert state(tmp_path)["last_start"] == {"gc": clock.now}

    result = run()
    assert result.result == "error" and "RuntimeError: bug" in result.details["error"]
    assert state(tmp_path)["last_start"] == {"gc": earlier}  # the previous start, as before
    assert lock.released == "at once" and runner.running() == []
    assert [r["result"] for r in audit(tmp_path) if r["event"] == "finished"] == ["error"]


def test_a_run_cut_short_still_frees_its_lock_and_its_target(tmp_path: Path) -> None:
    class Interrupted(Gate):
        def run(self, ctx: RunContext) -> ActionResult:
            raise CutShort

    lock = Lock()
    runner, _ = make_runner(tmp_path, Interrupted(), cooldown={"gc": "1h"})
    run = cleared(runner, lock)
    with pytest.raises(CutShort):
        run()
    assert lock.released == "at once" and runner.running() == []


def test_a_dry_run_claims_nothing_and_records_its_outcome(tmp_path: Path) -> None:
    action = Gate()
    runner, _ = make_runner(tmp_path, action)
    run = cleared(runner, dry_run=True)
    assert runner.running() == []
    assert state(tmp_path)["running"] == {} and state(tmp_path)["last_start"] == {}

    result = run()
    assert result.result == "dry_run" and action.runs[0].dry_run
    assert state(tmp_path)["last_start"] == {} and state(tmp_path)["last_run"] == {}
    finished = [r for r in audit(tmp_path) if r["event"] == "finished"]
    assert [(r["run_id"], r["result"]) for r in finished] == [("r1", "dry_run")]


def test_records_name_the_containers_of_a_run_never_the_empty_target(tmp_path: Path) -> None:
    """gc and media_gc act on the whole install: their one target is "" (it keys the lock
    and cooldown); an audit record shows no targets for them, a cleanup its containers."""
    runner, _ = make_runner(tmp_path, Gate())

    def in_flight(data: dict[str, Any]) -> None:
        for run_id, action, targets in (("g1", "gc", [""]), ("c1", "cleanup", ["wa-core-1"])):
            data["running"][run_id] = {"action": action, "targets": targets,
                                       "trigger": "alert", "started": 1.0,
                                       "pid": _exited_pid(), "host": socket.gethostname(),
                                       "instance": "an earlier process"}

    runner.state.update(in_flight)
    assert sorted(runner.recover_interrupted()) == ["c1", "g1"]
    records = {r["run_id"]: r for r in audit(tmp_path) if r["event"] == "finished"}
    assert "targets" not in records["g1"] and records["g1"]["result"] == "interrupted"
    assert records["c1"]["targets"] == ["wa-core-1"]
    assert Decision("gc", "started", targets=[""]).as_dict() == {"action": "gc",
                                                                  "outcome": "started"}


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
