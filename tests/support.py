"""Shared test plumbing: real database servers, the real exporter process, scraping, waiting."""

from __future__ import annotations

import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

MYSQL_URL = os.environ.get("WAX_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")
PG_URL = os.environ.get("WAX_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


# YAML lines under ``collectors:`` that switch off all but the messages collector.
ONLY_MESSAGES = """\
  containers:
    enabled: false
  logs:
    enabled: false
  volume:
    enabled: false
  volume_scan:
    enabled: false
"""


def unavailable(what: str, why: object) -> None:
    """A missing service fails the run in CI and skips the test on a developer's machine."""
    message = f"{what} is not reachable: {why}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def new_prefix() -> str:
    return f"wax_{secrets.token_hex(3)}_"


@dataclass
class DatabaseServer:
    """A real server on this machine; databases made here are dropped when the test ends."""

    engine_name: str  # MYSQL or PGSQL
    admin: sa.Engine
    host: str
    port: int
    username: str
    created: list[str] = field(default_factory=list)

    def url(self, database: str) -> str:
        driver = "mysql+pymysql" if self.engine_name == "MYSQL" else "postgresql+psycopg2"
        return f"{driver}://{self.username}@{self.host}:{self.port}/{database}"

    def engine(self, database: str) -> sa.Engine:
        return sa.create_engine(self.url(database), poolclass=sa.pool.NullPool)

    def create_database(self, name: str, *, messages: int | None = 0) -> sa.Engine:
        """Create ``name``; unless ``messages`` is None, with a messages table of that many rows."""
        from tests.wa_standin.schema import create_messages_table, insert_messages

        with self.admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            quoted = self.admin.dialect.identifier_preparer.quote(name)
            # Not text(): it doubles a '%' in the name for PyMySQL, which then sends it doubled.
            conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
        self.created.append(name)
        engine = self.engine(name)
        if messages is not None:
            create_messages_table(engine)
            if messages:
                insert_messages(engine, messages)
        return engine

    def drop_database(self, name: str) -> None:
        quoted = self.admin.dialect.identifier_preparer.quote(name)
        force = " WITH (FORCE)" if self.engine_name == "PGSQL" else ""
        with self.admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {quoted}{force}")
        if name in self.created:
            self.created.remove(name)

    def analyze(self, database: str) -> None:
        """Refresh the engine's row estimate for ``messages``."""
        with self.engine(database).connect() as conn:
            conn.execute(sa.text("ANALYZE TABLE messages" if self.engine_name == "MYSQL"
                                 else "ANALYZE messages"))
            conn.commit()

    def env(self, prefix: str, host: str | None = None, port: int | None = None) -> dict[str, str]:
        return {"WA_DB_ENGINE": self.engine_name, "WA_DB_HOSTNAME": host or self.host,
                "WA_DB_PORT": str(port or self.port), "WA_DB_USERNAME": self.username,
                "WA_DB_NAME_PREFIX": prefix}

    def cleanup(self) -> None:
        for name in list(self.created):
            self.drop_database(name)
        self.admin.dispose()


def connect_server(engine_name: str) -> DatabaseServer:
    url = sa.make_url(MYSQL_URL if engine_name == "MYSQL" else PG_URL)
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        unavailable(f"{engine_name} at {url.host}:{url.port}", exc.orig)
    return DatabaseServer(engine_name, admin, url.host or "127.0.0.1", url.port or 0,
                          url.username or "")


def big_table_without_autovacuum(server: DatabaseServer, database: str, rows: int,
                                 read_fraction: float) -> sa.Engine:
    """A messages table of ``rows`` rows, about ``read_fraction`` of them read, that nothing
    analyzes behind the test's back: no autovacuum on PostgreSQL, no background statistics
    recalculation on MariaDB/MySQL (which, after a large delete, replaces InnoDB's running
    row count with a new sample up to ~6 % off, at a moment of its choosing). Analyzed once
    now, as any table was at some time (PostgreSQL counts a never-analyzed table exactly)."""
    from tests.wa_standin.schema import create_messages_table, insert_messages

    engine = server.create_database(database, messages=None)
    create_messages_table(engine)
    off = {"PGSQL": "ALTER TABLE messages SET (autovacuum_enabled = false)",
           "MYSQL": "ALTER TABLE messages STATS_AUTO_RECALC = 0"}
    with engine.begin() as conn:
        conn.execute(sa.text(off[server.engine_name]))
    insert_messages(engine, rows, read_fraction=read_fraction)
    server.analyze(database)
    return engine


LISTENING = re.compile(r'msg=listening address=(\S+)|"msg": "listening", "address": "([^"]+)"')

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def series(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


class ExporterProcess:
    """The real ``wa-exporter`` command in a subprocess, listening on a free loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path | None = None,
                 open_files: int | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
        full_env.update(env)

        def limit_open_files() -> None:  # in the child, before exec
            if open_files is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "--web.listen-address", "127.0.0.1:0", *args],
            env=full_env, cwd=cwd or ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=limit_open_files if open_files is not None else None)
        self.lines: list[str] = []
        self._listening = threading.Event()
        self.address = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._listening.wait(20):
            self.stop()
            raise AssertionError("exporter did not start:\n" + self.log)
        self.url = f"http://{self.address}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            match = LISTENING.search(line)
            if match:
                self.address = match.group(1) or match.group(2)
                self._listening.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def get(self, path: str, timeout: float = 5.0) -> requests.Response:
        return requests.get(self.url + path, timeout=timeout)

    def metrics(self) -> Samples:
        response = self.get("/metrics")
        response.raise_for_status()
        return parse_metrics(response.text)

    def wait_metric(self, name: str, expected: float | None, timeout: float = 15.0,
                    **labels: str) -> Samples:
        def check() -> Samples | None:
            samples = self.metrics()
            return samples if value(samples, name, **labels) == expected else None
        return wait_for(check, timeout, what=f"{name}{labels} == {expected}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> float:
        """Signal the process; return how long it took to exit."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
        return time.monotonic() - started


@contextmanager
def run_exporter(args: list[str] | None = None, env: dict[str, str] | None = None,
                 config: str | None = None, tmp_path: Path | None = None,
                 open_files: int | None = None) -> Iterator[ExporterProcess]:
    args = list(args or [])
    if config is not None:
        assert tmp_path is not None
        path = tmp_path / f"config-{secrets.token_hex(3)}.yml"
        path.write_text(config)
        args += ["--config.file", str(path)]
    process = ExporterProcess(args, env or {}, open_files=open_files)
    try:
        yield process
    finally:
        process.stop()


def exported_metrics() -> dict[str, str]:
    """Every metric family the exporter's code can expose, read from its source, with its
    type: the first argument of each call that is (or builds from string constants) a
    ``whatsapp_`` name. Counters are named with ``_total``, as exposed."""
    import ast

    families: dict[str, str] = {}
    for path in (ROOT / "exporter").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {node.targets[0].id: node.value.value for node in ast.walk(tree)
                     if isinstance(node, ast.Assign) and len(node.targets) == 1
                     and isinstance(node.targets[0], ast.Name)
                     and isinstance(node.value, ast.Constant)
                     and isinstance(node.value.value, str)}

        def text(node: ast.expr, constants: dict[str, str] = constants) -> str | None:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                return node.value
            if isinstance(node, ast.Name):
                return constants.get(node.id)
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                left, right = text(node.left), text(node.right)
                return left + right if left is not None and right is not None else None
            return None

        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.args):
            name = text(call.args[0])
            if name is None or not re.fullmatch(r"whatsapp_[a-z0-9_]+", name):
                continue
            func = ast.unparse(call.func)
            if "Counter" in func:
                families[name.removesuffix("_total") + "_total"] = "counter"
            elif "Histogram" in func:
                families[name] = "histogram"
            elif "Summary" in func:
                families[name] = "summary"
            else:
                families[name] = "gauge"
    return families


def exported_series_names() -> set[str]:
    """The names of the series themselves: histograms as ``_bucket``, ``_sum``, ``_count``,
    summaries as ``_sum``, ``_count``."""
    names: set[str] = set()
    for name, kind in exported_metrics().items():
        if kind == "histogram":
            names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif kind == "summary":
            names.update(name + suffix for suffix in ("_sum", "_count"))
        else:
            names.add(name)
    return names
