"""The collectors' worker threads: an executor whose threads are kept between calls and never
hold up the process's exit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError, wait

import pytest

from exporter.workers import DaemonExecutor
from tests.support import ROOT


def test_calls_run_on_the_same_threads_and_hand_back_results_and_errors() -> None:
    workers = DaemonExecutor(2, "test-work")
    calls = [workers.submit(threading.current_thread) for _ in range(6)]
    calls += [workers.submit(threading.current_thread) for _ in range(6) if calls[-1].result(5)]
    threads = {f.result(5) for f in calls}
    assert len(threads) <= 2
    assert {t.name for t in threads} <= {"test-work-0", "test-work-1"}
    assert all(t.daemon for t in threads)
    failing = workers.submit(int, "not a number")
    with pytest.raises(ValueError):
        failing.result(5)
    workers.shutdown()
    assert not any(t.is_alive() for t in threads)


def test_shutdown_cancels_the_calls_still_waiting_and_refuses_new_ones() -> None:
    workers = DaemonExecutor(1, "test-work")
    entered, gate = threading.Event(), threading.Event()

    def hold() -> bool:
        entered.set()
        return gate.wait(5)

    running = workers.submit(hold)
    assert entered.wait(5)
    waiting = workers.submit(time.monotonic)
    workers.shutdown(wait=False, cancel_futures=True)
    gate.set()
    assert running.result(5) is True
    with pytest.raises(CancelledError):
        waiting.result(5)
    with pytest.raises(RuntimeError):
        workers.submit(time.monotonic)


def test_a_call_stuck_past_its_caller_does_not_hold_up_the_exit() -> None:
    script = textwrap.dedent("""
        import time
        from concurrent.futures import wait
        from exporter.workers import DaemonExecutor

        workers = DaemonExecutor(1, "stuck")
        wait([workers.submit(time.sleep, 60)], timeout=0.1)
        workers.shutdown(wait=False)
    """)
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, timeout=30)
    assert time.monotonic() - started < 10  # a ThreadPoolExecutor would wait the 60 s


def test_an_idle_executor_starts_no_thread() -> None:
    before = threading.active_count()
    workers = DaemonExecutor(4, "test-work")
    assert threading.active_count() == before
    wait([workers.submit(time.monotonic)], 5)
    assert threading.active_count() == before + 4
    workers.shutdown()


def test_execute_runs_calls_without_a_future_and_logs_what_they_raise(
        caplog: pytest.LogCaptureFixture) -> None:
    workers = DaemonExecutor(1, "test-work")
    done = threading.Event()
    seen: list[tuple[str, int]] = []
    workers.execute(int, "not a number")  # raises: logged, and the thread goes on
    workers.execute(lambda *args: seen.append(args), "a", 1)
    workers.execute(done.set)
    assert done.wait(5)
    assert seen == [("a", 1)]
    assert any(r.message == "unexpected error in a worker thread" and r.exc_info
               for r in caplog.records)
    workers.shutdown()
    with pytest.raises(RuntimeError):
        workers.execute(done.set)
