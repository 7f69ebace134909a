"""The cost of the log listing: one ``docker exec`` per WA container per refresh.

Starts ``BENCH_EXEC_CONTAINERS`` (default 10) stand-in containers, each with its live logs and
a full archive of 30 files, then times discovery, one listing per container, and whole
refreshes of the logs collector. The reference, in the same run, is the plainest possible
``docker exec`` (``true``) on the same containers: the listing's own cost is the difference.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import time
from collections.abc import Callable

from exporter.collectors.logs import LogsCollector
from exporter.config import ContainersSettings, LogsSettings
from exporter.sources.docker import ContainerDirectory, DockerEngine, list_logs
from tests.docker_support import (
    build_standin_image,
    ensure_docker,
    fill_archive,
    remove_test_containers,
    start_wa_container,
    write_live_log,
)

CONTAINERS = int(os.environ.get("BENCH_EXEC_CONTAINERS", "10"))
ROUNDS = int(os.environ.get("BENCH_EXEC_ROUNDS", "10"))
ROLES = [("webapp", "waweb"), ("coreapp", "wacore"), ("master", "master")]


def _times(action: Callable[[], object], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def _ms(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 2)}


def main() -> None:
    client = ensure_docker()
    build_standin_image(client)
    project = f"waxbench{secrets.token_hex(3)}"
    try:
        print(f"  starting {CONTAINERS} stand-in containers ...", flush=True)
        for i in range(CONTAINERS):
            role, service = ROLES[i % len(ROLES)]
            container = start_wa_container(client, role=role, service=service, index=i + 1,
                                           project=project)
            write_live_log(container, f"{role}.log", 1_000_000)
            fill_archive(container, 30, prefix=f"{role}.log")
        settings = ContainersSettings(compose_project=project)
        engine = DockerEngine(timeout=60)
        directory = ContainerDirectory(engine, settings)
        found = directory.discover()
        assert len(found) == CONTAINERS, found
        collector = LogsCollector(directory, LogsSettings(timeout=60))
        collector.refresh()  # warm: the client, its connection pool

        def exec_true() -> None:
            for container in found:
                engine.call(lambda api, c=container: api.exec_start(
                    api.exec_create(c.id, ["true"])["Id"]))

        def listings() -> None:
            for container in found:
                entries = list_logs(engine, container, "/var/log/whatsapp")
                assert sum(e.where == "archive" for e in entries) == 30

        discovery = _times(directory.discover, ROUNDS * 5)
        bare = _times(exec_true, ROUNDS)
        listed = _times(listings, ROUNDS)
        refreshes = _times(collector.refresh, ROUNDS)
        engine.close()
    finally:
        remove_test_containers(client, project=project)
        client.close()
    per_listing = [t / CONTAINERS for t in listed]
    per_bare = [t / CONTAINERS for t in bare]
    results = {
        "containers": CONTAINERS, "rounds": ROUNDS, "cpus": len(os.sched_getaffinity(0)),
        "discovery": _ms(discovery),
        "listing_per_container": _ms(per_listing),
        "bare_exec_per_container": _ms(per_bare),
        "listing_over_bare_exec": round(statistics.median(per_listing)
                                        / statistics.median(per_bare), 2),
        "logs_refresh_all_containers": _ms(refreshes),
    }
    print(f"  {CONTAINERS} containers: listing {results['listing_per_container']['median_ms']} ms"
          f" per container (p95 {results['listing_per_container']['p95_ms']} ms), a bare "
          f"`docker exec true` {results['bare_exec_per_container']['median_ms']} ms, ratio "
          f"{results['listing_over_bare_exec']}; whole logs refresh "
          f"{results['logs_refresh_all_containers']['median_ms']} ms; discovery "
          f"{results['discovery']['median_ms']} ms", flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
