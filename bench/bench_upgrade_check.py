"""``wa-exporter upgrade-check`` on the >= 5 M-row tables of bench_messages (kept between
runs), MariaDB and PostgreSQL: the whole command against its two references measured in
the same run — one bare ``COUNT(*)`` on the same table (the exact count the command must
make) and ``wa-exporter check-config`` (starting the program at all).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from bench.bench_messages import PREFIX, _fill
from tests.support import ROOT

REPEAT = 3


def _seconds(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          check=False)
    return time.perf_counter() - started, done.stdout


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "wa-exporter.yml"
        config.write_text(f"collectors: {{volume: {{path: {tmp}}}}}\n"
                          f"actions: {{state_dir: {tmp}/state}}\n")
        for engine_name in ("MYSQL", "PGSQL"):
            url = _fill(engine_name)
            env = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
            env.update({"WA_DB_ENGINE": engine_name, "WA_DB_HOSTNAME": url.host or "",
                        "WA_DB_PORT": str(url.port), "WA_DB_USERNAME": url.username or "",
                        "WA_DB_NAME_PREFIX": PREFIX})
            program = [sys.executable, "-m", "exporter"]
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            check, start, count = [], [], []
            for _ in range(REPEAT):
                started = time.perf_counter()
                with engine.connect() as conn:
                    rows = conn.execute(sa.text("SELECT COUNT(*) FROM messages")).scalar_one()
                count.append(time.perf_counter() - started)
                start.append(_seconds([*program, "check-config", "--config.file",
                                       str(config)], env)[0])
                seconds, out = _seconds([*program, "upgrade-check", "--format", "json",
                                         "--config.file", str(config)], env)
                check.append(seconds)
                counted = {db["name"]: db for db in json.loads(out)["databases"]}
                assert counted["wabench_5m"]["rows"] == rows and counted["wabench_5m"]["exact"]
            engine.dispose()
            r = {"rows": rows, "upgrade_check_s": statistics.median(check),
                 "count_s": statistics.median(count), "check_config_s": statistics.median(start)}
            r["overhead_s"] = r["upgrade_check_s"] - r["count_s"] - r["check_config_s"]
            results[engine_name] = r
            print(f"  {engine_name}: upgrade-check {r['upgrade_check_s']:.2f} s on {rows:,} rows"
                  f" = bare COUNT(*) {r['count_s']:.2f} s + program start (check-config) "
                  f"{r['check_config_s']:.2f} s + {r['overhead_s']:.2f} s (Docker, lock, "
                  f"audit, media); median of {REPEAT}", flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
