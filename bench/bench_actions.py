"""Actions: 200 concurrent webhook notifications for one action (acceptance latency, exactly
one GC started), and cleanup across 10 containers vs the guide's sequential `docker exec` loop.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from bench.bench_server_floor import ab, process_status, start_floor
from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import Request
from exporter.actions.cleanup import CleanupAction
from exporter.actions.runner import Runner
from exporter.collectors.actions import ActionMetrics
from exporter.config import ActionsSettings, CleanupSettings, ContainersSettings
from exporter.sources.docker import ContainerDirectory, DockerEngine
from exporter.sources.locks import FileLocks
from tests.docker_support import (
    build_standin_image,
    ensure_docker,
    remove_test_containers,
    start_wa_container,
)
from tests.support import ROOT, ExporterProcess, wait_for
from tests.wa_standin.schema import create_messages_table, insert_messages
from tests.wa_standin.server import StandIn

NOTIFICATIONS = 200
SENDERS = (20, 200)
SCRAPERS = (1, 20)
SCRAPES = 2000
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
# The last commit whose HTTP server was the standard library's ThreadingHTTPServer: "today",
# for the /metrics and memory comparison. Empty: skip it.
BASELINE_REF = os.environ.get("BENCH_BASELINE_REF", "89fad30")
CONTAINERS = 10
CLEANUP_SECONDS = 2
BODY = json.dumps({"version": "4", "status": "firing", "receiver": "wa", "groupKey": "g",
                   "alerts": [{"status": "firing", "labels": {
                       "alertname": "WhatsAppMessagesTableLarge", "action": "gc"}}]})
AUTH = "Authorization: Bearer bench-token"


def _config(tmp: Path, state: Path) -> str:
    token = tmp / "token"
    token.write_text("bench-token")
    return f"""
collectors:
  containers: {{enabled: false}}
  logs: {{enabled: false}}
  volume: {{enabled: false}}
  volume_scan: {{enabled: false}}
actions:
  allowed: [gc]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {state}
  schedules: []
  gc: {{callback_timeout: 5s, settle_interval: 1s, round_timeout: 30s}}
webhook:
  bearer_token_file: {token}
"""


def _baseline_tree(tmp: Path) -> Path | None:
    """The exporter at BASELINE_REF, unpacked beside the run (``python -m exporter`` there
    imports that tree's package)."""
    if not BASELINE_REF:
        return None
    tree = tmp / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", BASELINE_REF], cwd=ROOT, capture_output=True,
                             check=False)
    if archive.returncode != 0:
        print(f"  baseline {BASELINE_REF}: not in this clone, skipped", flush=True)
        return None
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def sqlite_messages(tmp: Path) -> Path:
    """A directory holding one SQLite WA database, ``wabench_main``, of 2000 messages."""
    db_dir = tmp / "db"
    db_dir.mkdir()
    engine = sa.create_engine(f"sqlite:///{db_dir / 'wabench_main.db'}")
    create_messages_table(engine)
    insert_messages(engine, 2000)
    engine.dispose()
    return db_dir


def sqlite_env(db_dir: Path, standin: StandIn) -> dict[str, str]:
    """The exporter's variables for the SQLite ``wabench_`` databases in ``db_dir`` and the
    stand-in's API."""
    return {"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(db_dir),
            "WA_DB_NAME_PREFIX": "wabench_", "WA_WEB_URL": standin.url,
            "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}


def _measure_exporter(tmp: Path, name: str, tree: Path, db_dir: Path, payload: Path
                      ) -> dict[str, object]:
    """Webhook bursts at each concurrency, then /metrics at each number of scrapers, then
    threads and memory; exactly-once read from the exporter's own counters."""
    config = tmp / f"{name}.yml"
    config.write_text(_config(tmp, tmp / f"{name}-state"))
    with StandIn(f"sqlite:///{db_dir / 'wabench_main.db'}", gc_delay=3) as standin:
        exporter = ExporterProcess(["--config.file", str(config)], sqlite_env(db_dir, standin),
                                   cwd=tree)
        try:
            wait_for(lambda: exporter.get("/-/ready").ok, timeout=30, what="ready")
            report: dict[str, object] = {
                f"webhook_{senders}": [ab(exporter.url + "/webhook/alertmanager", senders,
                                          NOTIFICATIONS, payload, (AUTH,))
                                       for _ in range(REPEAT)]
                for senders in SENDERS}
            standin.wait_until(lambda s: s["message_gc_calls"] >= 1, timeout=10)
            for scrapers in SCRAPERS:
                report[f"metrics_{scrapers}"] = [ab(exporter.url + "/metrics", scrapers,
                                                    SCRAPES) for _ in range(REPEAT)]
            report["process"] = process_status(exporter.proc.pid)
            samples = exporter.metrics()
            report["wa_gc_calls"] = standin.stats()["message_gc_calls"]
        finally:
            exporter.stop()

    def outcome(name: str) -> float:
        return samples.get(("whatsapp_action_requests_total",
                            (("action", "gc"), ("outcome", name))), 0.0)

    report["started"] = outcome("started")
    report["skipped"] = outcome("skipped_running") + outcome("skipped_cooldown")
    return report


def bench_webhook(tmp: Path) -> dict[str, object]:
    """The stdlib floor, today's exporter (BASELINE_REF) and this one, in the same run."""
    db_dir = sqlite_messages(tmp)
    payload = tmp / "notification.json"
    payload.write_text(BODY)
    proc, port = start_floor()
    try:
        report: dict[str, object] = {"floor": {
            f"webhook_{senders}": [ab(f"http://127.0.0.1:{port}/", senders, NOTIFICATIONS,
                                      payload) for _ in range(REPEAT)]
            for senders in SENDERS}}
    finally:
        proc.terminate()
        proc.wait(10)
    baseline = _baseline_tree(tmp)
    if baseline is not None:
        report["baseline"] = _measure_exporter(tmp, "baseline", baseline, db_dir, payload)
    report["current"] = _measure_exporter(tmp, "current", ROOT, db_dir, payload)
    return report


def _median(runs: object, key: str) -> float:
    assert isinstance(runs, list)
    return statistics.median(run[key] for run in runs)


def print_webhook(report: dict[str, object]) -> None:
    floor = report["floor"]
    assert isinstance(floor, dict)
    for name, figures in report.items():
        assert isinstance(figures, dict)
        parts = []
        for senders in SENDERS:
            p99 = _median(figures[f"webhook_{senders}"], "p99_ms")
            ratio = p99 / _median(floor[f"webhook_{senders}"], "p99_ms")
            goal = 20 if senders == 20 else 50
            parts.append(f"webhook {senders} senders p99 {p99:.1f} ms (goal <= {goal}) = "
                         f"{ratio:.2f}x floor")
        for scrapers in SCRAPERS:
            if f"metrics_{scrapers}" in figures:
                parts.append(f"/metrics {scrapers} scrapers p99 "
                             f"{_median(figures[f'metrics_{scrapers}'], 'p99_ms'):.1f} ms")
        if "process" in figures:
            process = figures["process"]
            parts.append(f"{process['threads']:.0f} threads, {process['rss_mb']:.1f} MiB RSS; "
                         f"started {figures['started']:.0f}, WA GC calls "
                         f"{figures['wa_gc_calls']} (goal 1)")
        print(f"  {name}: " + "; ".join(parts), flush=True)


def bench_cleanup(tmp: Path) -> dict[str, float]:
    client = ensure_docker()
    build_standin_image(client)
    project = f"wabench{os.getpid()}"
    try:
        containers = [start_wa_container(client, role="coreapp", service=f"wacore{i}",
                                         project=project,
                                         env={"WA_CLEANUP_SLEEP": str(CLEANUP_SECONDS)})
                      for i in range(1, CONTAINERS + 1)]
        # The guide's cron job: one `docker exec` after another.
        singles = []
        loop_started = time.perf_counter()
        for container in containers:
            started = time.perf_counter()
            subprocess.run(["docker", "exec", container.name, "/opt/whatsapp/bin/cleanup.sh"],
                           check=True, capture_output=True)
            singles.append(time.perf_counter() - started)
        sequential = time.perf_counter() - loop_started

        directory = ContainerDirectory(DockerEngine(timeout=30),
                                       ContainersSettings(compose_project=project))
        directory.discover()
        settings = ActionsSettings(allowed=["cleanup"], state_dir=tmp / "cleanup-state")
        action = CleanupAction(directory, CleanupSettings(parallel=CONTAINERS, timeout=60))
        runner = Runner({"cleanup": action}, settings,
                        AuditLog(tmp / "cleanup-state" / "audit.jsonl"),
                        StateFile(tmp / "cleanup-state" / "state.json"),
                        FileLocks(tmp / "cleanup-state" / "locks"),
                        ActionMetrics(CollectorRegistry(), ["cleanup"]))
        started = time.perf_counter()
        decision, result = runner.run_now(Request("cleanup", "manual"))
        parallel = time.perf_counter() - started
        assert result is not None and result.result == "success", result
        assert len(decision.targets) == CONTAINERS
    finally:
        remove_test_containers(client, project)
    return {"containers": CONTAINERS, "script_seconds": CLEANUP_SECONDS,
            "sequential_loop_s": sequential, "slowest_single_s": max(singles),
            "median_single_s": statistics.median(singles), "ours_parallel_s": parallel,
            "ratio_to_slowest_single": parallel / max(singles),
            "speedup_vs_loop": sequential / parallel}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        webhook = bench_webhook(Path(tmp))
        print_webhook(webhook)
        if os.environ.get("BENCH_SKIP_CLEANUP"):
            print(json.dumps({"webhook": webhook}, indent=2))
            return
        cleanup = bench_cleanup(Path(tmp))
        print(f"  cleanup: {cleanup['containers']} containers, script {CLEANUP_SECONDS} s each; "
              f"sequential docker exec loop {cleanup['sequential_loop_s']:.2f} s, slowest single "
              f"{cleanup['slowest_single_s']:.2f} s, ours {cleanup['ours_parallel_s']:.2f} s = "
              f"{cleanup['ratio_to_slowest_single']:.2f}x the slowest single (goal <= 1.3x), "
              f"{cleanup['speedup_vs_loop']:.1f}x faster than the loop", flush=True)
        print(json.dumps({"webhook": webhook, "cleanup": cleanup}, indent=2))


if __name__ == "__main__":
    main()
