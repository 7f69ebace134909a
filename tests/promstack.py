"""Debian's real Prometheus and Alertmanager, run on loopback ports for the end-to-end tests."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.processes import stop_process
from tests.support import unavailable, wait_for

PROMETHEUS = "prometheus"
ALERTMANAGER = "prometheus-alertmanager"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def _run(name: str, argv: list[str], url: str, ready_path: str, log: Path,
         auth: tuple[str, str] | None = None) -> Iterator[Service]:
    if shutil.which(argv[0]) is None:
        unavailable(argv[0], "not installed (Debian packages prometheus, "
                    "prometheus-alertmanager)")
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    service = Service(name, url, proc, log)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited:\n{service.tail()}")
            try:
                return requests.get(url + ready_path, timeout=1, auth=auth).status_code == 200
            except requests.RequestException:
                return False
        wait_for(ready, timeout=30, what=f"{name} to be ready")
        yield service
    finally:
        stop_process(proc)


@contextmanager
def prometheus(workdir: Path, config: str) -> Iterator[Service]:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(config)
    port = free_port()
    argv = [PROMETHEUS, f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"]
    with _run("prometheus", argv, f"http://127.0.0.1:{port}", "/-/ready",
              workdir / "prometheus.log") as service:
        yield service


@contextmanager
def alertmanager(workdir: Path, config: str, web_config: str | None = None,
                 auth: tuple[str, str] | None = None) -> Iterator[Service]:
    """``web_config``: Alertmanager's --web.config.file (e.g. basic_auth_users), and ``auth``
    the credentials that pass it."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(config)
    port = free_port()
    argv = [ALERTMANAGER, f"--config.file={workdir / 'alertmanager.yml'}",
            f"--storage.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address="]
    if web_config is not None:
        (workdir / "web.yml").write_text(web_config)
        argv.append(f"--web.config.file={workdir / 'web.yml'}")
    with _run("alertmanager", argv, f"http://127.0.0.1:{port}", "/-/ready",
              workdir / "alertmanager.log", auth) as service:
        yield service


def query(prom: Service, expr: str) -> list[dict[str, Any]]:
    response = requests.get(prom.url + "/api/v1/query", params={"query": expr}, timeout=10)
    response.raise_for_status()
    return list(response.json()["data"]["result"])


def alerts(prom: Service, name: str, state: str = "firing") -> list[dict[str, Any]]:
    response = requests.get(prom.url + "/api/v1/alerts", timeout=10)
    response.raise_for_status()
    return [a for a in response.json()["data"]["alerts"]
            if a["labels"].get("alertname") == name and a["state"] == state]


def am_alerts(am: Service, name: str) -> list[dict[str, Any]]:
    response = requests.get(am.url + "/api/v2/alerts", params={"filter": f'alertname="{name}"'},
                            timeout=10)
    response.raise_for_status()
    return list(response.json())


def wait_until(what: str, predicate: Any, timeout: float) -> Any:
    started = time.monotonic()
    result = wait_for(predicate, timeout=timeout, interval=0.5, what=what)
    print(f"  {what}: {time.monotonic() - started:.1f}s")
    return result
