"""Dependencies that take a request and never finish answering, and a stop asked twice at
once: a Docker engine that accepts and says nothing, a WA API that trickles its answer a byte
at a time, SIGINT and SIGTERM together. Real processes on loopback, no services."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.faults.harness import AUTH, MESSAGES, config, notification
from tests.support import ROOT, ExporterProcess, run_exporter
from tests.wa_standin.server import StandIn


@pytest.fixture
def hung_docker(tmp_path: Path) -> Iterator[str]:
    """``DOCKER_HOST`` for a socket that accepts every connection, reads what it is sent,
    and never answers; closed when the test ends."""
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"unix://{path}"
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_hung_docker_engine_holds_no_webhook_answer_and_no_scrape(
        tmp_path: Path, sqlite_world: tuple[dict[str, str], StandIn], hung_docker: str) -> None:
    """Cleanup asks Docker for its targets, gc does not: five notifications, cleanup and gc
    in turn, sent all at once and then one after another, each answered within 2 s
    (cleanup's rejected: the engine has not answered), and /metrics too, while the
    containers collector waits on the engine as well."""
    env, standin = sqlite_world
    cfg = config(tmp_path, allowed=("cleanup", "gc"), messages=MESSAGES,
                 containers={"interval": "1s", "timeout": "30s"})
    actions = ("cleanup", "gc", "cleanup", "gc", "cleanup")
    with run_exporter(env={**env, "DOCKER_HOST": hung_docker}, config=cfg,
                      tmp_path=tmp_path) as exporter:
        standin.set_callback(exporter.url + "/webhook/wa-callback", AUTH)

        def notify(seq: int) -> tuple[str, int, str, float]:
            action = actions[seq % len(actions)]
            started = time.monotonic()
            response = requests.post(exporter.url + "/webhook/alertmanager", headers=AUTH,
                                     json=notification(action, seq), timeout=10)
            [decision] = response.json()["decisions"]
            return action, response.status_code, decision["outcome"], time.monotonic() - started

        with ThreadPoolExecutor(len(actions)) as pool:  # at once: the webhook's two workers
            answers = list(pool.map(notify, range(len(actions))))
        scrapes = []
        for seq in range(len(actions), 2 * len(actions)):  # then one after another
            answers.append(notify(seq))
            started = time.monotonic()
            assert exporter.get("/metrics", timeout=10).status_code == 200
            scrapes.append(time.monotonic() - started)
        records = [r for r in exporter.get("/actions").json()["records"]
                   if r.get("action") == "cleanup"]
        stopping = exporter.stop()
    assert all(took <= 2.0 for *_, took in answers), answers
    assert max(scrapes) <= 2.0, scrapes
    for action, status, outcome, _ in answers:
        if action == "cleanup":
            assert (status, outcome) == (422, "rejected"), answers
        else:
            assert status == 200 and outcome in ("started", "skipped_running",
                                                  "skipped_cooldown"), answers
    assert [outcome for _, _, outcome, _ in answers].count("started") == 1, answers
    assert records and all("has not answered" in r["reason"] for r in records), records
    assert stopping < 5, f"stopping took {stopping:.1f}s"
    assert "Traceback" not in exporter.log


def test_run_gc_against_a_trickling_wa_api_ends_within_its_deadline(
        tmp_path: Path, sqlite_world: tuple[dict[str, str], StandIn]) -> None:
    """The WA API answers the login with its headers, then a byte every 2 s: no read waits
    the read_timeout of 5 s, yet `run gc` ends, non-zero, within 90 s."""
    env, standin = sqlite_world
    standin.trickle("login", 2.0)
    cfg = config(tmp_path, allowed=("gc",), messages=MESSAGES).replace(
        "read_timeout: 1s", "read_timeout: 5s")
    assert "read_timeout: 5s" in cfg
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "exporter", "run", "gc", "--config.file",
                             str(_write(tmp_path, cfg))], env=_environ(env), cwd=ROOT,
                            capture_output=True, text=True, timeout=90)
    took = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert took < 90
    assert "did not arrive in full within 6s" in result.stdout, result.stdout


@pytest.mark.parametrize("run", range(6))
def test_sigint_and_sigterm_together_stop_the_exporter(tmp_path: Path, run: int) -> None:
    """Ctrl-C in `make demo` and `docker stop` at once: the exporter exits within 10 s,
    every time (it went on running in 2 of 6 tries)."""
    exporter = ExporterProcess([], {"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(tmp_path),
                                    "DOCKER_HOST": "tcp://127.0.0.1:1"})
    try:
        first, second = (signal.SIGINT, signal.SIGTERM)[::1 if run % 2 else -1]
        os.kill(exporter.proc.pid, first)
        os.kill(exporter.proc.pid, second)
        exporter.proc.wait(10)
    finally:
        exporter.stop(signal.SIGKILL)
    assert exporter.proc.returncode == 0, exporter.log


def test_a_second_signal_while_the_exporter_exits_leaves_its_exit_code_alone(
        tmp_path: Path) -> None:
    """SIGINT keeps coming after SIGTERM until the process is gone: one that lands while
    the interpreter tears down (where Python puts its handlers back to the default) must not
    kill it; ``docker stop`` after Ctrl-C would read 130 instead of 0."""
    exporter = ExporterProcess([], {"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(tmp_path),
                                    "DOCKER_HOST": "tcp://127.0.0.1:1"})
    try:
        os.kill(exporter.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while exporter.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(exporter.proc.pid, signal.SIGINT)
            time.sleep(0.0002)
        exporter.proc.wait(1)
    finally:
        exporter.stop(signal.SIGKILL)
    assert exporter.proc.returncode == 0, exporter.log


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def _environ(env: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("WA_")}, **env}
