"""messages row counts on a 10 M-row table: our exporter vs the tools an operator could use
instead, in the same run, on MariaDB and PostgreSQL.

- ours: one ``MessagesSource.read()`` with default settings (10 M rows is above the 1 M
  bound, so the engine estimate) and ``/metrics`` latency of the running exporter;
- query-exporter (PyPI, in its own venv under ``~/.cache``) with
  ``SELECT COUNT(*)``, once run at scrape time (no ``interval``) and once on an interval;
- Debian's ``prometheus-mysqld-exporter`` (``--collect.info_schema.tables``) and
  ``prometheus-postgres-exporter`` (``pg_stat_user_tables`` from the package's example
  ``queries.yaml``), each with its default collectors and with the table rows alone.

Everything listens on 127.0.0.1 only; every process started here is stopped on the way
out. The tables are kept between runs (database ``wabench10m`` on each server, filled in
about half a minute). Knobs: ``BENCH_ALT_ROWS`` (10,000,000), ``BENCH_ALT_WINDOW``
(seconds of sequential scrapes per tool, 30), ``BENCH_ALT_COUNT_SCRAPES`` (scrapes of
query-exporter when every scrape runs the COUNT, 20), ``BENCH_ALT_QE_INTERVAL`` (10),
``BENCH_ALT_DATABASE`` (wabench10m), ``BENCH_QE_VENV`` (where query-exporter is installed,
``~/.cache/wa-exporter-bench/qe-venv``), ``BENCH_QE_REQUIREMENT`` (query-exporter==5.0.2).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
import sqlalchemy as sa
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.config import DatabaseSettings, MessagesSettings
from exporter.sources.database import open_source
from tests.processes import stop_process
from tests.support import MYSQL_URL, PG_URL, run_exporter
from tests.wa_standin.schema import create_messages_table

ROWS = int(os.environ.get("BENCH_ALT_ROWS", "10000000"))
# Not "wabench_10m": bench_messages discovers every database starting with "wabench_", and
# a second, larger table there would change its figures.
DATABASE = os.environ.get("BENCH_ALT_DATABASE", "wabench10m")
CHUNK = 1_000_000
WINDOW = float(os.environ.get("BENCH_ALT_WINDOW", "30"))
COUNT_SCRAPES = int(os.environ.get("BENCH_ALT_COUNT_SCRAPES", "20"))
QE_INTERVAL = int(os.environ.get("BENCH_ALT_QE_INTERVAL", "10"))
QE_REQUIREMENT = os.environ.get("BENCH_QE_REQUIREMENT", "query-exporter==5.0.2")
QE_VENV = Path(os.environ.get("BENCH_QE_VENV", Path.home() / ".cache" / "wa-exporter-bench"
                              / "qe-venv"))
MYSQLD_EXPORTER = "prometheus-mysqld-exporter"
POSTGRES_EXPORTER = "prometheus-postgres-exporter"
PG_EXAMPLE_QUERIES = Path("/usr/share/doc/prometheus-postgres-exporter/examples/queries.yaml")
READY_DEADLINE = 90.0


# --- the tables ---------------------------------------------------------------------------


def _fill(engine_name: str, database: str = DATABASE, rows: int = ROWS) -> sa.URL:
    """Create ``database`` with a ``messages`` table of at least ``rows`` rows, kept between
    runs; filled in committed chunks of a million rows, so an interrupted fill resumes."""
    server = sa.make_url(MYSQL_URL if engine_name == "MYSQL" else PG_URL)
    admin = sa.create_engine(server, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if engine_name == "MYSQL":
            conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {database}"))
        elif not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"),
                              {"d": database}).first():
            conn.execute(sa.text(f"CREATE DATABASE {database}"))
    admin.dispose()
    url = server.set(database=database)
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    create_messages_table(engine)
    with engine.connect() as conn:
        have = conn.execute(sa.text("SELECT COUNT(*) FROM messages")).scalar_one()
    if have < rows:
        print(f"  filling {engine_name} {database}.messages: {have:,} -> {rows:,} rows "
              f"(kept for later runs)", flush=True)
        started = time.monotonic()
        while have < rows:
            n = min(CHUNK, rows - have)
            series = (f"seq_1_to_{n}" if engine_name == "MYSQL"
                      else f"generate_series(1, {n}) AS seq(seq)")
            column = f"({'seq' if engine_name == 'MYSQL' else 'seq.seq'} + {have})"
            with engine.begin() as conn:
                conn.execute(sa.text(
                    "INSERT INTO messages (message_id, chat_id, direction, type, status, body, "
                    f"created_at) SELECT CONCAT('wamid.bench', {column}), '15550001111', 'in', "
                    f"'text', CASE WHEN {column} % 2 = 0 THEN 'read' ELSE 'received' END, "
                    f"'hello from the benchmark', 1700000000 + {column} FROM {series}"))
            have += n
            print(f"    {have:,} / {rows:,} rows, {time.monotonic() - started:.0f} s",
                  flush=True)
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE TABLE messages" if engine_name == "MYSQL"
                                 else "ANALYZE messages"))
            conn.commit()
    if engine_name == "PGSQL":
        # as autovacuum leaves a table (this test server runs with autovacuum off); once
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if conn.execute(sa.text(
                    "SELECT last_vacuum IS NULL AND last_autovacuum IS NULL "
                    "FROM pg_stat_user_tables WHERE relname = 'messages'")).scalar_one():
                print(f"  VACUUM ANALYZE {database}.messages", flush=True)
                conn.execute(sa.text("VACUUM ANALYZE messages"))
    engine.dispose()
    return url


def _exact_count(url: sa.URL, repeat: int = 3) -> tuple[int, list[float]]:
    """``SELECT COUNT(*) FROM messages`` on a fresh connection: the query query-exporter runs.
    One untimed run first (caches), then ``repeat`` timed ones."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    times = []
    try:
        with engine.connect() as conn:
            count = conn.execute(sa.text("SELECT COUNT(*) FROM messages")).scalar_one()
            for _ in range(repeat):
                started = time.perf_counter()
                count = conn.execute(sa.text("SELECT COUNT(*) FROM messages")).scalar_one()
                times.append(time.perf_counter() - started)
    finally:
        engine.dispose()
    return int(count), times


# --- database CPU -------------------------------------------------------------------------


def _db_cpu_seconds(engine_name: str) -> float:
    """CPU seconds used so far by the database server: mariadbd; or every postgres process
    plus the children the postmaster has reaped (backends that have exited)."""
    tick = os.sysconf("SC_CLK_TCK")
    procs = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        procs.append((int(pid), comm, int(fields[1]), [int(x) for x in fields[11:15]]))
    names = {"mariadbd", "mysqld"} if engine_name == "MYSQL" else {"postgres"}
    ours = {pid: (ppid, times) for pid, comm, ppid, times in procs if comm in names}
    total = 0
    for ppid, (utime, stime, cutime, cstime) in ours.values():
        total += utime + stime
        if ppid not in ours:  # the postmaster (or mariadbd): add its reaped children
            total += cutime + cstime
    return total / tick


@dataclass
class CpuMeter:
    engine_name: str
    idle_rate: float = 0.0  # database CPU seconds per second with nothing of ours running

    def calibrate(self, seconds: float = 5.0) -> None:
        before, started = _db_cpu_seconds(self.engine_name), time.monotonic()
        time.sleep(seconds)
        self.idle_rate = (_db_cpu_seconds(self.engine_name) - before) / (
            time.monotonic() - started)

    @contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        """Yields a dict that holds ``cpu_s``, the database's CPU seconds above idle."""
        out: dict[str, float] = {}
        before, started = _db_cpu_seconds(self.engine_name), time.monotonic()
        try:
            yield out
        finally:
            elapsed = time.monotonic() - started
            out["cpu_s"] = _db_cpu_seconds(self.engine_name) - before - self.idle_rate * elapsed


# --- processes and HTTP -------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _process(name: str, cmd: list[str], env: dict[str, str] | None = None,
             cwd: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` with its output in a temporary log; always stopped (TERM, then KILL)."""
    with tempfile.TemporaryFile(prefix=f"bench-{name}-") as log:
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield proc
        except BaseException:
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            print(f"  {name} log (last 2000 chars):\n{tail}", file=sys.stderr, flush=True)
            raise
        finally:
            stop_process(proc)


def _wait_http(session: requests.Session, url: str, check: Callable[[str], bool],
               proc: subprocess.Popen[bytes] | None = None, what: str = "") -> str:
    """Poll ``url`` until it answers 200 and ``check(body)``; fail after READY_DEADLINE."""
    deadline = time.monotonic() + READY_DEADLINE
    last = ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready")
        try:
            response = session.get(url, timeout=30)
            if response.status_code == 200 and check(response.text):
                return response.text
            last = f"HTTP {response.status_code}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise RuntimeError(f"{what or url} not ready after {READY_DEADLINE:.0f} s ({last})")


def _scrapes(session: requests.Session, url: str, *, window: float | None = None,
             count: int | None = None) -> list[float]:
    """Sequential ``GET`` over one keep-alive connection, as Prometheus scrapes: for
    ``window`` seconds, or ``count`` times (bounded by 20 minutes)."""
    times: list[float] = []
    end = time.monotonic() + (window if window is not None else 1200)
    while time.monotonic() < end and (count is None or len(times) < count):
        started = time.perf_counter()
        session.get(url, timeout=120).raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def _percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"p50_ms": ordered[len(ordered) // 2] * 1000,
            "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
            "scrapes": len(ordered)}


def _sizes(url: str) -> dict[str, int]:
    """Bytes of one ``/metrics`` answer: the text, and on the wire as Prometheus asks for
    it (gzip accepted); plus the number of samples in it."""
    plain = requests.get(url, headers={"Accept-Encoding": "identity"}, timeout=120)
    with requests.get(url, headers={"Accept-Encoding": "gzip"}, stream=True,
                      timeout=120) as gz:
        wire = len(gz.raw.read(decode_content=False))
    samples = sum(len(f.samples) for f in text_string_to_metric_families(plain.text))
    return {"text_bytes": len(plain.content), "wire_bytes": wire, "samples": samples}


def _own_median(session: requests.Session, url: str, name: str, n: int = 20,
                **labels: str) -> float:
    """Median of a duration the tool reports about its own scrape, over ``n`` scrapes."""
    values = [_sample(session.get(url, timeout=60).text, name, **labels) for _ in range(n)]
    return statistics.median(v for v in values if v is not None)


def _sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# --- the contenders -----------------------------------------------------------------------


@dataclass
class Result:
    tool: str
    rows: float | None
    exact: bool | None
    p50_ms: float
    p99_ms: float
    scrapes: int
    text_bytes: int
    wire_bytes: int
    samples: int
    db_cost: str
    notes: str
    db_cpu_ms_per_scrape: float | None = None


def _settings(url: sa.URL, engine_name: str) -> DatabaseSettings:
    return DatabaseSettings.model_validate({
        "WA_DB_ENGINE": engine_name, "WA_DB_HOSTNAME": url.host, "WA_DB_PORT": url.port,
        "WA_DB_USERNAME": url.username, "WA_DB_NAME_PREFIX": DATABASE})


def _ours(engine_name: str, url: sa.URL, meter: CpuMeter) -> tuple[Result, dict[str, float]]:
    db = _settings(url, engine_name)
    source = open_source(db, MessagesSettings())  # defaults: exact below 1,000,000
    repeat = 200
    try:
        source.read()  # warm: connection, caches
        times = []
        with meter.measure() as cpu:
            for _ in range(repeat):
                started = time.perf_counter()
                reading = source.read()
                times.append(time.perf_counter() - started)
        table = reading.tables[DATABASE]
    finally:
        source.close()
    refresh_ms = statistics.median(times) * 1000
    refresh = {"refresh_ms": refresh_ms, "refresh_p99_ms": _percentiles(times)["p99_ms"],
               "refresh_db_cpu_ms": cpu["cpu_s"] / repeat * 1000, "refreshes": repeat}
    print(f"    ours: refresh {refresh_ms:.2f} ms (median of {repeat}), "
          f"rows {table.rows:,} exact={table.exact}", flush=True)

    env = {"WA_DB_ENGINE": engine_name, "WA_DB_HOSTNAME": url.host or "127.0.0.1",
           "WA_DB_PORT": str(url.port), "WA_DB_USERNAME": url.username or "",
           "WA_DB_NAME_PREFIX": DATABASE}
    with run_exporter(env=env) as exporter:
        session = requests.Session()
        _wait_http(session, exporter.url + "/-/ready", lambda _: True, exporter.proc,
                   "wa-exporter")
        metrics_url = exporter.url + "/metrics"
        _scrapes(session, metrics_url, count=200)  # warm-up
        with meter.measure() as cpu:
            times = _scrapes(session, metrics_url, window=WINDOW)
        text = session.get(metrics_url, timeout=10).text
        sizes = _sizes(metrics_url)
    rows = _sample(text, "whatsapp_messages_table_rows", database=DATABASE)
    exact = _sample(text, "whatsapp_messages_table_rows_exact", database=DATABASE)
    stats = _percentiles(times)
    result = Result(
        "wa-exporter (ours)", rows, bool(exact), stats["p50_ms"], stats["p99_ms"],
        int(stats["scrapes"]), **sizes,
        db_cost=f"one refresh per `interval` (default 1m): {refresh_ms:.2f} ms, one "
                f"catalogue query; a scrape: none",
        notes="engine estimate above `exact_count_below` (1,000,000); `COUNT(*)` below it",
        db_cpu_ms_per_scrape=cpu["cpu_s"] / stats["scrapes"] * 1000)
    return result, refresh


def _qe_install() -> tuple[Path, str]:
    """query-exporter in its own venv (never ours): created on first use, kept after."""
    exe = QE_VENV / "bin" / "query-exporter"
    if not exe.exists():
        print(f"  installing {QE_REQUIREMENT} into {QE_VENV}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(QE_VENV)], check=True)
        subprocess.run([str(QE_VENV / "bin" / "pip"), "install", "--quiet", QE_REQUIREMENT,
                        "pymysql", "psycopg2-binary"], check=True)
    version = subprocess.run([str(exe), "--version"], capture_output=True, text=True,
                             check=True).stdout.strip()
    return exe, version


def _qe_config(engine_name: str, url: sa.URL, interval: int | None) -> str:
    dsn = url.set(drivername="mysql+pymysql" if engine_name == "MYSQL"
                  else "postgresql+psycopg2")
    query: dict[str, object] = {
        "databases": ["wa"], "metrics": ["messages_table_rows"],
        # the column's name must be the metric's name
        "sql": "SELECT COUNT(*) AS messages_table_rows FROM messages"}
    if interval is not None:
        query["interval"] = interval
    return yaml.safe_dump({
        "databases": {"wa": {"dsn": dsn.render_as_string(hide_password=False)}},
        "metrics": {"messages_table_rows": {
            "type": "gauge", "description": "Rows in messages (COUNT(*))"}},
        "queries": {"messages_count": query}}, sort_keys=False)


def _query_exporter(engine_name: str, url: sa.URL, exe: Path, interval: int | None,
                    count_ms: float, meter: CpuMeter, workdir: Path) -> Result:
    config = workdir / f"qe-{engine_name.lower()}-{interval or 'scrape'}.yaml"
    config.write_text(_qe_config(engine_name, url, interval))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with _process("query-exporter", [str(exe), "--config", str(config), "--host",
                                     "127.0.0.1", "--port", str(port)], cwd=workdir) as proc:
        session = requests.Session()
        _wait_http(session, base + "/metrics",
                   lambda text: _sample(text, "messages_table_rows") is not None, proc,
                   "query-exporter")
        with meter.measure() as cpu:
            if interval is None:
                times = _scrapes(session, base + "/metrics", count=COUNT_SCRAPES)
            else:
                times = _scrapes(session, base + "/metrics", window=WINDOW)
        text = session.get(base + "/metrics", timeout=120).text
        sizes = _sizes(base + "/metrics")
    rows = _sample(text, "messages_table_rows")
    runs = _sample(text, "queries_total", query="messages_count", status="success") or 0
    latency_sum = _sample(text, "query_latency_sum", query="messages_count") or 0
    own_ms = latency_sum / runs * 1000 if runs else float("nan")
    stats = _percentiles(times)
    if interval is None:
        mode = "no `interval`: the query runs on every scrape"
        cost = (f"one `COUNT(*)` per scrape: {count_ms:.0f} ms measured directly, "
                f"{own_ms:.0f} ms by its own `query_latency`")
    else:
        mode = (f"`interval: {interval}`: the query runs in the background, {runs:.0f} times "
                f"up to the end of the {WINDOW:.0f} s window")
        cost = (f"one `COUNT(*)` per interval ({interval} s): {count_ms:.0f} ms measured "
                f"directly, {own_ms:.0f} ms by its own `query_latency`; a scrape: none")
    return Result(f"query-exporter, {'per scrape' if interval is None else 'interval'}",
                  rows, True, stats["p50_ms"], stats["p99_ms"], int(stats["scrapes"]),
                  **sizes, db_cost=cost, notes=mode,
                  db_cpu_ms_per_scrape=cpu["cpu_s"] / stats["scrapes"] * 1000)


def _mysqld_exporter(url: sa.URL, meter: CpuMeter, minimal: bool) -> Result:
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    # 0.14 refuses a .my.cnf without a password ("password or ssl-key should be specified"),
    # so the passwordless root of the test server goes in DATA_SOURCE_NAME (removed in 0.15)
    env = {"DATA_SOURCE_NAME": f"{url.username}@({url.host}:{url.port})/"}
    args = [f"--web.listen-address=127.0.0.1:{port}", "--collect.info_schema.tables"]
    if minimal:
        args += ["--no-collect.global_status", "--no-collect.global_variables",
                 "--no-collect.slave_status", "--no-collect.info_schema.innodb_cmp",
                 "--no-collect.info_schema.innodb_cmpmem",
                 "--no-collect.info_schema.query_response_time",
                 f"--collect.info_schema.tables.databases={DATABASE}"]
    with _process("mysqld_exporter", [MYSQLD_EXPORTER, *args], env=env) as proc:
        session = requests.Session()
        _wait_http(session, base + "/metrics", lambda text: _sample(text, "mysql_up") == 1.0,
                   proc, "mysqld_exporter")
        _scrapes(session, base + "/metrics", count=5)
        with meter.measure() as cpu:
            times = _scrapes(session, base + "/metrics", window=WINDOW)
        text = session.get(base + "/metrics", timeout=60).text
        sizes = _sizes(base + "/metrics")
        collectors = [s.labels["collector"] for s in next(
            f for f in text_string_to_metric_families(text)
            if f.name == "mysql_exporter_collector_duration_seconds").samples
            if s.labels["collector"] != "connection"]
        own = {c: _own_median(session, base + "/metrics",
                              "mysql_exporter_collector_duration_seconds", collector=c) * 1000
               for c in collectors}
    rows = _sample(text, "mysql_info_schema_table_rows", schema=DATABASE, table="messages")
    stats = _percentiles(times)
    tables_ms = own["collect.info_schema.tables"]
    return Result(
        f"mysqld_exporter, {'table rows only' if minimal else 'defaults + table rows'}",
        rows, False, stats["p50_ms"], stats["p99_ms"], int(stats["scrapes"]), **sizes,
        db_cost=(f"every scrape: `information_schema.tables` {tables_ms:.1f} ms"
                 + ("" if minimal else f", its {len(own)} collectors together "
                    f"{sum(own.values()):.1f} ms (run in parallel)")
                 + " (its own `collector_duration_seconds`, median of 20 scrapes)"),
        notes=("`--collect.info_schema.tables` with "
               + (f"`.databases={DATABASE}`, every default collector off" if minimal
                  else "every schema (`.databases=*`), plus the default collectors "
                       "(global status and variables, replica status, InnoDB cmp)")),
        db_cpu_ms_per_scrape=cpu["cpu_s"] / stats["scrapes"] * 1000)


def _postgres_exporter(url: sa.URL, meter: CpuMeter, minimal: bool,
                       workdir: Path) -> Result:
    # Debian's 0.11.1 has no pg_stat_user_tables by default: it is in the package's example
    # queries.yaml (--extend.query-path); the rest of that file fails on PostgreSQL 15
    # (pg_stat_statements), so only that query is taken from it
    queries = yaml.safe_load(PG_EXAMPLE_QUERIES.read_text())
    path = workdir / "pg_stat_user_tables.yaml"
    path.write_text(yaml.safe_dump({"pg_stat_user_tables": queries["pg_stat_user_tables"]}))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"DATA_SOURCE_NAME": f"postgresql://{url.username}@{url.host}:{url.port}/"
                               f"{DATABASE}?sslmode=disable"}
    args = [f"--web.listen-address=127.0.0.1:{port}", f"--extend.query-path={path}"]
    if minimal:
        args += ["--disable-default-metrics", "--disable-settings-metrics",
                 "--no-collector.database", "--no-collector.bgwriter"]
    labels = {"datname": DATABASE, "schemaname": "public", "relname": "messages"}
    with _process("postgres_exporter", [POSTGRES_EXPORTER, *args], env=env) as proc:
        session = requests.Session()
        _wait_http(session, base + "/metrics",
                   lambda text: _sample(text, "pg_stat_user_tables_n_live_tup",
                                        **labels) is not None, proc, "postgres_exporter")
        _scrapes(session, base + "/metrics", count=5)
        with meter.measure() as cpu:
            times = _scrapes(session, base + "/metrics", window=WINDOW)
        text = session.get(base + "/metrics", timeout=60).text
        sizes = _sizes(base + "/metrics")
        scrape_ms = _own_median(session, base + "/metrics",
                                "pg_exporter_last_scrape_duration_seconds") * 1000
    rows = _sample(text, "pg_stat_user_tables_n_live_tup", **labels)
    errors = _sample(text, "pg_exporter_last_scrape_error")
    stats = _percentiles(times)
    return Result(
        f"postgres_exporter, {'table rows only' if minimal else 'defaults + table rows'}",
        rows, False, stats["p50_ms"], stats["p99_ms"], int(stats["scrapes"]), **sizes,
        db_cost=(f"every scrape: {scrape_ms:.1f} ms of queries ("
                 + ("`pg_stat_user_tables`" if minimal else "settings, `pg_stat_database`, "
                    "locks, activity, bgwriter, `pg_stat_user_tables`")
                 + "; its own `last_scrape_duration_seconds`, median of 20 scrapes)"),
        notes=("`pg_stat_user_tables_n_live_tup` (statistics collector's live-row estimate), "
               + ("default metrics off" if minimal else "plus the default metrics")
               + ("" if not errors else "; last scrape had errors")),
        db_cpu_ms_per_scrape=cpu["cpu_s"] / stats["scrapes"] * 1000)


# --- the run ------------------------------------------------------------------------------


def _fmt_rows(r: Result, count: int) -> str:
    if r.rows is None:
        return "-"
    off = (r.rows - count) / count * 100
    return f"{r.rows:,.0f}" + (" (= `COUNT(*)`)" if r.rows == count else f" ({off:+.3f} %)")


def _table(engine: str, count: int, count_ms: list[float], results: list[Result]) -> str:
    lines = [f"{engine}: `COUNT(*)` = {count:,}, {statistics.median(count_ms):.0f} ms "
             f"(median of {len(count_ms)}, range {min(count_ms):.0f} to {max(count_ms):.0f} ms)",
             "",
             "| tool | row figure | exact? | `/metrics` p50 / p99 | scrapes | response: text / "
             "gzip | samples | DB CPU per scrape | what a refresh / scrape costs the database"
             " | notes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cpu = ("-" if r.db_cpu_ms_per_scrape is None
               else f"{max(r.db_cpu_ms_per_scrape, 0):.2f} ms")
        kind = "yes, `COUNT(*)`" if r.exact else "no, estimate"
        lines.append(
            f"| {r.tool} | {_fmt_rows(r, count)} | {kind} | "
            f"{r.p50_ms:.2f} / {r.p99_ms:.2f} ms | {r.scrapes} | {r.text_bytes:,} / "
            f"{r.wire_bytes:,} B | {r.samples} | {cpu} | {r.db_cost} | {r.notes} |")
    return "\n".join(lines)


def _versions(qe_version: str) -> dict[str, str]:
    def first_line(cmd: list[str]) -> str:
        if not shutil.which(cmd[0]):
            return "not installed"
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).splitlines()[0].strip()
    return {"query-exporter": qe_version,
            "mysqld_exporter": first_line([MYSQLD_EXPORTER, "--version"]),
            "postgres_exporter": first_line([POSTGRES_EXPORTER, "--version"]),
            "python": sys.version.split()[0]}


def main() -> None:
    started = time.monotonic()
    exe, qe_version = _qe_install()
    versions = _versions(qe_version)
    debian = all(shutil.which(c) for c in (MYSQLD_EXPORTER, POSTGRES_EXPORTER))
    if not debian:
        print(f"  {MYSQLD_EXPORTER} / {POSTGRES_EXPORTER} missing: their rows are skipped; "
              f"`apt-get install -y {MYSQLD_EXPORTER} {POSTGRES_EXPORTER}` (on a systemd host "
              f"this also starts their services on :9104 / :9187)", flush=True)
    print(f"  versions: {versions}", flush=True)
    report: dict[str, object] = {"rows": ROWS, "database": DATABASE, "window_s": WINDOW,
                                 "versions": versions}
    tables = []
    with tempfile.TemporaryDirectory(prefix="bench-alternatives-") as tmp:
        workdir = Path(tmp)
        for engine_name, label in (("MYSQL", "MariaDB"), ("PGSQL", "PostgreSQL")):
            print(f"  {label}:", flush=True)
            url = _fill(engine_name)
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                server = conn.execute(sa.text("SELECT VERSION()")).scalar_one()
            engine.dispose()
            count, count_times = _exact_count(url)
            count_ms = statistics.median(count_times) * 1000
            print(f"    COUNT(*) = {count:,} in {count_ms:.0f} ms (median of "
                  f"{len(count_times)})", flush=True)
            meter = CpuMeter(engine_name)
            meter.calibrate()
            print(f"    database idle CPU: {meter.idle_rate * 1000:.1f} ms/s", flush=True)
            results = []
            ours, refresh = _ours(engine_name, url, meter)
            results.append(ours)
            print(f"    {ours.tool}: p50 {ours.p50_ms:.2f} ms, p99 {ours.p99_ms:.2f} ms",
                  flush=True)
            for interval in (None, QE_INTERVAL):
                r = _query_exporter(engine_name, url, exe, interval, count_ms, meter,
                                    workdir)
                results.append(r)
                print(f"    {r.tool}: p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms "
                      f"over {r.scrapes} scrapes", flush=True)
            if debian:
                for minimal in (False, True):
                    r = (_mysqld_exporter(url, meter, minimal) if engine_name == "MYSQL"
                         else _postgres_exporter(url, meter, minimal, workdir))
                    results.append(r)
                    print(f"    {r.tool}: p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, "
                          f"{r.text_bytes:,} B", flush=True)
            tables.append(_table(label, count, [t * 1000 for t in count_times], results))
            report[engine_name] = {"server": server, "count": count,
                                   "count_ms": [t * 1000 for t in count_times],
                                   "idle_db_cpu_ms_per_s": meter.idle_rate * 1000,
                                   "ours_refresh": refresh,
                                   "results": [asdict(r) for r in results]}
    runtime = time.monotonic() - started
    report["runtime_s"] = runtime
    print()
    print("\n\n".join(tables))
    print(f"\nruntime {runtime:.0f} s")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
