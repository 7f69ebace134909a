"""``make demo`` as a newcomer runs it: the real ``python -m demo`` with its exporter and WA
stand-in as child processes, on a free loopback port and a world of its own in tmp_path."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.processes import stop_process
from tests.promstack import free_port
from tests.support import ROOT, parse_metrics, unavailable, value, wait_for

STORE = "db/wademo_messagestore.db"
ROWS = 60_000


class Demo:
    def __init__(self, world: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo", "--web.listen-address", f"127.0.0.1:{self.port}",
             "--world", str(world)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wa_api_port(self) -> int:
        def announced() -> int | None:
            for line in self.lines:
                match = re.search(r"simulated WA API listens on http://127\.0\.0\.1:(\d+)", line)
                if match:
                    return int(match.group(1))
            return None
        return int(wait_for(announced, 60, what="the WA API address in the demo's output"))

    def rows(self) -> float | None:
        try:
            samples = parse_metrics(requests.get(self.url + "/metrics", timeout=5).text)
        except requests.ConnectionError:
            return None
        return value(samples, "whatsapp_messages_table_rows", database="wademo_messagestore")

    def children(self) -> list[int]:
        """Processes whose parent is the demo, from /proc (no psutil in the demo's venv)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue  # exited while we listed
            if int(fields[1]) == self.proc.pid:
                found.append(int(stat.parent.name))
        return found

    def stop(self) -> None:
        stop_process(self.proc, 30)  # SIGTERM first: the demo stops its children, a kill not


@contextmanager
def running_demo(world: Path) -> Iterator[Demo]:
    demo = Demo(world)
    try:
        yield demo
    finally:
        demo.stop()


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # exited, waiting only to be reaped


@pytest.mark.timeout(180)
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT],
                         ids=lambda s: s.name)
def test_demo_stops_exporter_and_wa_standin_on_stop_signal(tmp_path: Path,
                                                           stop_signal: signal.Signals) -> None:
    with running_demo(tmp_path / "world") as demo:
        wa_port = demo.wa_api_port()
        wait_for(lambda: demo.rows() == ROWS, 60, interval=0.2, what="the demo's metrics")
        children = demo.children()
        assert len(children) == 2, children  # the WA stand-in and the exporter
        demo.proc.send_signal(stop_signal)
        assert demo.proc.wait(30) == 128 + stop_signal
        for pid in children:
            wait_for(lambda pid=pid: gone(pid), 5, what=f"child {pid} to exit")
        assert refuses(demo.port), "the exporter still answers"
        assert refuses(wa_port), "the WA stand-in still answers"
        assert f"demo: {stop_signal.name}: stopping" in "\n".join(demo.lines)


@pytest.mark.timeout(240)
def test_second_demo_starts_from_a_fresh_world(tmp_path: Path) -> None:
    world = tmp_path / "world"
    with running_demo(world) as first:
        wait_for(lambda: first.rows() == ROWS, 60, interval=0.2, what="the first demo's rows")
        first.proc.send_signal(signal.SIGTERM)
        first.proc.wait(30)
    with sqlite3.connect(world / STORE) as conn:  # what a GC in the first demo would leave
        conn.execute("DELETE FROM messages WHERE id % 3 = 0")
    (world / "state").mkdir(exist_ok=True)
    (world / "state" / "leftover").write_text("from the last run")

    with running_demo(world) as second:
        assert wait_for(second.rows, 60, interval=0.2, what="the second demo's rows") == ROWS
        assert not (world / "state" / "leftover").exists()
        assert any("fresh world" in line for line in second.lines), second.lines


@pytest.mark.timeout(180)
def test_demo_prints_cli_commands_that_work_on_its_world(tmp_path: Path) -> None:
    """The commands the demo prints, run as printed from the repository: they reach the
    demo's database and simulated WA API through its db.env, with its settings."""
    with running_demo(tmp_path / "world") as demo:
        wait_for(lambda: demo.rows() == ROWS, 60, interval=0.2, what="the demo's metrics")
        commands = [shlex.split(line) for line in demo.lines if "--db.env-file" in line]
        assert [words[1:3] for words in commands] == [["check-config", "--connect"],
                                                      ["upgrade-check", "--db.env-file"]]
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("WA_")}

        def run(words: list[str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(words, cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=60, check=False)

        connect = run(commands[0])
        assert connect.returncode == 0, connect.stdout + connect.stderr
        assert "✓ database  SQLITE" in connect.stdout and "wademo_messagestore (60,000 rows)" \
            in connect.stdout
        assert "✓ wa_api" in connect.stdout and "logged in as admin" in connect.stdout
        upgrade = run([*commands[1], "--format", "json"])
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        report = json.loads(upgrade.stdout)
        assert [(db["name"], db["rows"]) for db in report["databases"]] == [
            ("wademo_messagestore", ROWS)]
        [remote] = [shlex.split(line) for line in demo.lines if "--exporter.url" in line]
        assert remote[1:3] == ["run", "gc"]
        gc = run(remote)
        assert gc.returncode == 0, gc.stdout + gc.stderr
        result = json.loads(gc.stdout)["result"]
        assert result["result"] == "success" and result["messages_deleted"] > 0
        # Through the running exporter: its GC heard the simulated WA API's callback.
        assert "every node called back" in gc.stderr, gc.stderr


@pytest.mark.timeout(120)
def test_demo_writes_a_prometheus_config_with_the_rules(tmp_path: Path) -> None:
    """No Prometheus runs in the demo; the one it prints how to start scrapes its exporter and
    evaluates the rules of alerts/, which the dashboard's recording-rule panels read."""
    from tests.integration.test_dashboards import promtool

    if shutil.which("prometheus") is None:  # the demo prints the command only where it runs
        unavailable("prometheus", "not installed (Debian package prometheus)")
    world = tmp_path / "world"
    with running_demo(world) as demo:
        config = world / "prometheus.yml"
        wait_for(lambda: any("--web.listen-address 127.0.0.1:9091" in line
                             for line in demo.lines), 60, what="the demo's Prometheus line")
        assert any(f"prometheus --config.file {config}" in line for line in demo.lines)
        checked = subprocess.run([promtool(), "check", "config", str(config)],
                                 capture_output=True, text=True, timeout=60, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "SUCCESS: 1 rule files found" in checked.stdout
        assert f'targets: ["localhost:{demo.port}"]' in config.read_text()
