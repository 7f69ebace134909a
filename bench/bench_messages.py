"""messages on a >= 5 M-row table, MariaDB and PostgreSQL: refresh cost (estimate vs exact
``COUNT(*)``) and ``/metrics`` latency of the running exporter.

The tables are kept between runs (databases ``wabench_5m`` on each server) because filling
them takes a minute; ``BENCH_ROWS`` changes the size.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time

import requests
import sqlalchemy as sa

from exporter.config import DatabaseSettings, MessagesSettings
from exporter.sources.database import open_source
from tests.support import MYSQL_URL, PG_URL, run_exporter
from tests.wa_standin.schema import create_messages_table

ROWS = int(os.environ.get("BENCH_ROWS", "5000000"))
DATABASE = "wabench_5m"
PREFIX = "wabench_"
# The GC-feedback half: a table of its own, filled afresh each run, 20 % of it deleted.
DELETE_ROWS = int(os.environ.get("BENCH_DELETE_ROWS", "2000000"))
DELETE_DATABASE = "wabench_gc"


def _server(engine_name: str) -> sa.URL:
    return sa.make_url(MYSQL_URL if engine_name == "MYSQL" else PG_URL)


def _fill(engine_name: str, database: str = DATABASE, rows: int = ROWS) -> sa.URL:
    server = _server(engine_name)
    admin = sa.create_engine(server, poolclass=sa.pool.NullPool,
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if engine_name == "MYSQL":
            conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {database}"))
        elif not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"),
                              {"d": database}).first():
            conn.execute(sa.text(f"CREATE DATABASE {database}"))
    url = server.set(database=database)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    create_messages_table(engine)
    if engine_name == "PGSQL":  # as on a server run with autovacuum = off
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE messages SET (autovacuum_enabled = false)"))
    with engine.begin() as conn:
        have = conn.execute(sa.text("SELECT COUNT(*) FROM messages")).scalar_one()
        if have < rows:
            print(f"  filling {engine_name} {database}.messages: {have:,} -> {rows:,} rows",
                  flush=True)
            series = (f"seq_1_to_{rows - have}" if engine_name == "MYSQL"
                      else f"generate_series(1, {rows - have}) AS seq(seq)")
            column = "seq" if engine_name == "MYSQL" else "seq.seq"
            conn.execute(sa.text(
                "INSERT INTO messages (message_id, chat_id, direction, type, status, body, "
                f"created_at) SELECT CONCAT('wamid.bench', {column}), '15550001111', 'in', "
                f"'text', CASE WHEN {column} % 2 = 0 THEN 'read' ELSE 'received' END, "
                f"'hello from the benchmark', 1700000000 + {column} FROM {series}"))
    with engine.connect() as conn:
        conn.execute(sa.text("ANALYZE TABLE messages" if engine_name == "MYSQL"
                             else "ANALYZE messages"))
        conn.commit()
    return url


def _settings(url: sa.URL, engine_name: str) -> DatabaseSettings:
    return DatabaseSettings.model_validate({
        "WA_DB_ENGINE": engine_name, "WA_DB_HOSTNAME": url.host, "WA_DB_PORT": url.port,
        "WA_DB_USERNAME": url.username, "WA_DB_NAME_PREFIX": PREFIX})


def _refresh_cost(db: DatabaseSettings, bound: int, repeat: int) -> tuple[float, bool]:
    source = open_source(db, MessagesSettings(exact_count_below=bound, timeout=120,
                                              query_timeout=120))
    try:
        source.read()  # warm: connection, caches
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            reading = source.read()
            times.append(time.perf_counter() - started)
        exact = reading.tables[DATABASE].exact
        return statistics.median(times), exact
    finally:
        source.close()


def _latency(db: DatabaseSettings, engine_name: str, requests_total: int = 3000
             ) -> dict[str, float]:
    env = {"WA_DB_ENGINE": engine_name, "WA_DB_HOSTNAME": db.hostname,
           "WA_DB_PORT": str(db.port), "WA_DB_USERNAME": db.username,
           "WA_DB_NAME_PREFIX": PREFIX}
    with run_exporter(env=env) as exporter:
        session = requests.Session()
        deadline = time.monotonic() + 120
        while session.get(exporter.url + "/-/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "exporter never became ready"
            time.sleep(0.1)
        times: list[float] = []
        lock = threading.Lock()

        def client(n: int) -> None:
            own = requests.Session()
            for _ in range(n):
                started = time.perf_counter()
                own.get(exporter.url + "/metrics", timeout=5).raise_for_status()
                elapsed = time.perf_counter() - started
                with lock:
                    times.append(elapsed)

        client(200)  # warm-up
        times.clear()
        client(requests_total)  # one scraper, as Prometheus is
        single = sorted(times)
        times.clear()
        threads = [threading.Thread(target=client, args=(requests_total // 4,)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    times.sort()
    return {"p50_ms": single[len(single) // 2] * 1000,
            "p99_ms": single[int(len(single) * 0.99)] * 1000, "requests": len(single),
            "p50_ms_4_clients": times[len(times) // 2] * 1000,
            "p99_ms_4_clients": times[int(len(times) * 0.99)] * 1000}


def _estimate_after_delete(engine_name: str) -> dict[str, object]:
    """Delete 20 % of a table read by estimate (no ANALYZE, no autovacuum after), then read
    the figure right away and a few times more; the exact count of the same moment is the
    reference, and ``reltuples`` (PostgreSQL) is what the figure was before n_live_tup."""
    url = _fill(engine_name, DELETE_DATABASE, DELETE_ROWS)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    source = open_source(_settings(url, engine_name),
                         MessagesSettings(exact_count_below=0, timeout=120, query_timeout=120))
    try:
        before = source.read().tables[DELETE_DATABASE]
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.text("DELETE FROM messages WHERE id % 5 = 0"))
        delete_s = time.perf_counter() - started
        started = time.perf_counter()
        with engine.connect() as conn:
            exact = int(conn.execute(sa.text("SELECT COUNT(*) FROM messages")).scalar_one())
            reltuples = (int(conn.execute(sa.text(
                "SELECT reltuples::bigint FROM pg_class WHERE oid = 'messages'::regclass")
                ).scalar_one()) if engine_name == "PGSQL" else None)
        count_s = time.perf_counter() - started
        after = []
        for wait in (0.0, 1.0, 2.0, 5.0):  # seconds after the DELETE committed
            pause = wait - (time.perf_counter() - started - count_s)
            if pause > 0:
                time.sleep(pause)
            table = source.read().tables[DELETE_DATABASE]
            after.append({"seconds": round(wait, 1), "estimate": table.rows,
                          "source": str(table.source),
                          "error_percent": 100 * (table.rows - exact) / exact})
    finally:
        source.close()
        with sa.create_engine(_server(engine_name), poolclass=sa.pool.NullPool,
                              isolation_level="AUTOCOMMIT").connect() as conn:
            force = " WITH (FORCE)" if engine_name == "PGSQL" else ""
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {DELETE_DATABASE}{force}"))
    first = after[0]
    print(f"  {engine_name}: after a 20 % delete of {DELETE_ROWS:,} rows, exact {exact:,} "
          f"(COUNT(*) {count_s * 1000:.0f} ms); estimate at once {first['estimate']:,} "
          f"({first['source']}, {first['error_percent']:+.2f} %)" + (
              "" if reltuples is None else
              f"; reltuples {reltuples:,} ({100 * (reltuples - exact) / exact:+.2f} %)"),
          flush=True)
    return {"rows_before": before.rows, "source_before": str(before.source),
            "delete_ms": delete_s * 1000, "exact_after": exact, "exact_count_ms": count_s * 1000,
            "reltuples_after": reltuples, "estimates_after": after}


def main() -> None:
    results: dict[str, dict[str, object]] = {}
    for engine_name in ("MYSQL", "PGSQL"):
        gc = _estimate_after_delete(engine_name)
        url = _fill(engine_name)
        db = _settings(url, engine_name)
        exact_s, exact_flag = _refresh_cost(db, bound=10**12, repeat=3)
        estimate_s, estimate_flag = _refresh_cost(db, bound=0, repeat=20)
        assert exact_flag and not estimate_flag
        latency = _latency(db, engine_name)
        results[engine_name] = {
            "estimate_after_delete": gc, "rows": ROWS, "exact_refresh_ms": exact_s * 1000,
            "estimate_refresh_ms": estimate_s * 1000, "ratio_estimate_to_exact":
            estimate_s / exact_s, **latency}
        r = results[engine_name]
        print(f"  {engine_name}: refresh exact {r['exact_refresh_ms']:.1f} ms, estimate "
              f"{r['estimate_refresh_ms']:.2f} ms, ratio 1/{1 / r['ratio_estimate_to_exact']:.0f}"
              f" (goal <= 1/100); /metrics p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms "
              f"over {r['requests']} sequential requests (goal p99 <= 5 ms); 4 concurrent "
              f"clients: p50 {r['p50_ms_4_clients']:.2f} ms, p99 {r['p99_ms_4_clients']:.2f} ms",
              flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
