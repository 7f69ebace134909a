"""The relay of the WA client's own view: the cost of a ``/metrics`` scrape and the exporter's
memory with the relay on, against the same exporter with it off (as before it existed), in
the same run, both against the WA stand-in (multiconnect, three coreapps: the larger
answer) and a SQLite messages table.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from pathlib import Path

from bench.bench_actions import sqlite_env, sqlite_messages
from bench.bench_server_floor import ab, process_status
from tests.support import ONLY_MESSAGES, ROOT, ExporterProcess, parse_metrics, wait_for
from tests.wa_standin.server import StandIn, node_id

SCRAPES = 2000
SCRAPERS = (1, 10)
ROUNDS = int(os.environ.get("BENCH_REPEAT", "3"))
CORES = ["wacore1", "wacore2", "wacore3"]


def _config(relay: bool) -> str:
    """The messages collector and, if ``relay``, the client's own view."""
    return f"collectors:\n{ONLY_MESSAGES}  wa_client: {{enabled: {str(relay).lower()}}}\n"


def _measure(tmp: Path, relay: bool, db_dir: Path, standin: StandIn) -> dict[str, object]:
    config = tmp / f"relay-{relay}.yml"
    config.write_text(_config(relay))
    exporter = ExporterProcess(["--config.file", str(config)], sqlite_env(db_dir, standin),
                               cwd=ROOT)
    try:
        wait_for(lambda: exporter.get("/-/ready").ok, timeout=30, what="ready")
        if relay:
            wait_for(lambda: ("whatsapp_client_db_pending_callbacks",
                              (("node", standin_master()),)) in exporter.metrics(),
                     timeout=30, what="the relayed figures")
        body = exporter.get("/metrics").text
        before = dict(standin.stats()["requests"])
        report: dict[str, object] = {
            f"metrics_{n}": ab(exporter.url + "/metrics", n, SCRAPES) for n in SCRAPERS}
        after = standin.stats()["requests"]
        report.update(process_status(exporter.proc.pid), body_bytes=len(body.encode()),
                      series=len(parse_metrics(body)),
                      relayed_series=sum(1 for name, _ in parse_metrics(body)
                                         if name.startswith("whatsapp_client_")),
                      stats_db_calls_during_scrapes=after.get("stats_db", 0)
                      - before.get("stats_db", 0))
        return report
    finally:
        exporter.stop()


def standin_master() -> str:
    return node_id("wamaster1")


def main() -> None:
    if shutil.which("ab") is None:
        print("  ab (apache2-utils) is missing: skipped", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db_dir = sqlite_messages(tmp)
        runs: dict[str, list[dict[str, object]]] = {"off": [], "on": []}
        with StandIn(multiconnect=CORES) as standin:
            for _ in range(ROUNDS):  # alternated, so drift on the machine hits both alike
                for relay in (False, True):
                    runs["on" if relay else "off"].append(_measure(tmp, relay, db_dir, standin))

    def median(side: str, key: str, field: str | None = None) -> float:
        values = [run[key][field] if field else run[key]  # type: ignore[index]
                  for run in runs[side]]
        return float(statistics.median(values))  # type: ignore[type-var]

    for scrapers in SCRAPERS:
        key = f"metrics_{scrapers}"
        off, on = median("off", key, "p50_ms"), median("on", key, "p50_ms")
        off99, on99 = median("off", key, "p99_ms"), median("on", key, "p99_ms")
        rate_off, rate_on = median("off", key, "per_second"), median("on", key, "per_second")
        print(f"  /metrics, {scrapers} scraper(s), {SCRAPES} scrapes: p50 {off:.2f} -> "
              f"{on:.2f} ms ({on / off:.2f}x), p99 {off99:.2f} -> {on99:.2f} ms "
              f"({on99 / off99:.2f}x), {rate_off:.0f} -> {rate_on:.0f} scrapes/s "
              f"({rate_on / rate_off:.2f}x)", flush=True)
    print(f"  RSS {median('off', 'rss_mb'):.1f} -> {median('on', 'rss_mb'):.1f} MB "
          f"({median('on', 'rss_mb') / median('off', 'rss_mb'):.2f}x); threads "
          f"{median('off', 'threads'):.0f} -> {median('on', 'threads'):.0f}; body "
          f"{median('off', 'body_bytes'):.0f} -> {median('on', 'body_bytes'):.0f} bytes, "
          f"{median('off', 'series'):.0f} -> {median('on', 'series'):.0f} series "
          f"({median('on', 'relayed_series'):.0f} relayed); /v1/stats/db calls during the "
          f"scrapes: {max(int(r['stats_db_calls_during_scrapes']) for r in runs['on'])}"  # type: ignore[call-overload]
          " (goal 0)", flush=True)
    print(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
