"""Actions: 200 concurrent webhook notifications for one action (acceptance latency, exactly
one GC started), and cleanup across 10 containers vs the guide's sequential `docker exec` loop.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.cleanup import CleanupAction
from exporter.actions.runner import Request, Runner
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
from tests.support import run_exporter
from tests.wa_standin.schema import create_messages_table, insert_messages
from tests.wa_standin.server import StandIn

NOTIFICATIONS = 200
SENDERS = int(os.environ.get("BENCH_SENDERS", "20"))
CONTAINERS = 10
CLEANUP_SECONDS = 2


def bench_webhook(tmp: Path) -> dict[str, float]:
    db_dir = tmp / "db"
    db_dir.mkdir()
    engine = sa.create_engine(f"sqlite:///{db_dir / 'wabench_main.db'}")
    create_messages_table(engine)
    insert_messages(engine, 2000)
    engine.dispose()
    token = tmp / "token"
    token.write_text("bench-token")
    config = f"""
collectors:
  containers: {{enabled: false}}
  logs: {{enabled: false}}
  volume: {{enabled: false}}
  volume_scan: {{enabled: false}}
actions:
  allowed: [gc]
  state_dir: {tmp / 'state'}
  schedules: []
  gc: {{callback_timeout: 5s, settle_interval: 1s, round_timeout: 30s}}
webhook:
  bearer_token_file: {token}
"""
    body = json.dumps({"version": "4", "status": "firing", "receiver": "wa", "groupKey": "g",
                       "alerts": [{"status": "firing", "labels": {
                           "alertname": "WhatsAppMessagesTableLarge", "action": "gc"}}]})
    headers = {"Authorization": "Bearer bench-token"}
    with StandIn(f"sqlite:///{db_dir / 'wabench_main.db'}", gc_delay=3) as standin:
        env = {"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(db_dir),
               "WA_DB_NAME_PREFIX": "wabench_", "WA_WEB_URL": standin.url,
               "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}
        with run_exporter(env=env, config=config, tmp_path=tmp) as exporter:
            # ab (apache2-utils) is the client: a C program, so the 2 cores go to the server.
            # Keep-alive, as Alertmanager's HTTP client does.
            payload = tmp / "notification.json"
            payload.write_text(body)
            output = subprocess.run(
                ["ab", "-q", "-k", "-n", str(NOTIFICATIONS), "-c", str(SENDERS),
                 "-p", str(payload), "-T", "application/json",
                 "-H", headers["Authorization"].join(("Authorization: ", "")),
                 exporter.url + "/webhook/alertmanager"],
                capture_output=True, text=True, check=False)
            if output.returncode != 0:
                raise SystemExit(f"ab failed: {output.stderr.strip()}")
            output = output.stdout
            standin.wait_until(lambda s: s["message_gc_calls"] >= 1, timeout=10)
            samples = exporter.metrics()
            gc_calls = standin.stats()["message_gc_calls"]
    percent = dict(re.findall(r"^\s+(\d+)%\s+(\d+)", output, re.MULTILINE))
    rate = float(re.search(r"Requests per second:\s+([\d.]+)", output).group(1))
    # ab counts differing body lengths as "failed"; only non-2xx answers are failures here.
    non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", output)
    failed = int(non_2xx.group(1)) if non_2xx else 0

    def outcome(name: str) -> float:
        return samples.get(("whatsapp_action_requests_total",
                            (("action", "gc"), ("outcome", name))), 0.0)

    return {"notifications": NOTIFICATIONS, "senders": SENDERS, "failed_requests": failed,
            "p50_ms": float(percent["50"]), "p99_ms": float(percent["99"]),
            "per_second": rate, "started": outcome("started"),
            "skipped_running": outcome("skipped_running"),
            "skipped_cooldown": outcome("skipped_cooldown"), "wa_gc_calls": gc_calls}


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
        print(f"  webhook: {webhook['notifications']} notifications, {webhook['senders']} "
              f"concurrent, at {webhook['per_second']:.0f}/s; acceptance p50 "
              f"{webhook['p50_ms']:.0f} ms, p99 {webhook['p99_ms']:.0f} ms (goal <= 20 ms; ab "
              f"reports whole ms); non-2xx {webhook['failed_requests']}; "
              f"started {webhook['started']}, WA GC calls {webhook['wa_gc_calls']} (goal 1); "
              f"skipped_running {webhook['skipped_running']}, "
              f"skipped_cooldown {webhook['skipped_cooldown']}", flush=True)
        if os.environ.get("BENCH_SKIP_CLEANUP"):
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
