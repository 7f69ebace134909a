"""The soak's memory anchor: query-exporter, run beside the exporter on the same WA
database's ``messages`` table, scraped at the same cadence, its RSS sampled the same way.

query-exporter also reads the database through SQLAlchemy, so "our peak RSS is at most
its peak RSS in the same run" is a bound that moves with the interpreter, SQLAlchemy and
the machine, where a fixed number of megabytes did not. It runs ``SELECT COUNT(*)`` on an
``interval`` (``BENCH_ALT_QE_INTERVAL``, 10 s), so every scrape reads its cache, as our
collectors' scrapes do. The installation, its configuration and the 10 M-row fill are
those of ``bench/bench_alternatives.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
import sqlalchemy as sa

from bench.bench_alternatives import (
    QE_INTERVAL,
    _fill,
    _free_port,
    _process,
    _qe_config,
    _qe_install,
    _sample,
    _wait_http,
)

# A table this size is counted by the engine's estimate in ours and by COUNT(*) in theirs.
ROWS = int(os.environ.get("SOAK_ROWS", "10000000"))
METRIC = "messages_table_rows"  # the gauge _qe_config defines


@dataclass(frozen=True)
class ReferenceExporter:
    """A running query-exporter: its pid, its ``/metrics`` and its version."""

    pid: int
    metrics_url: str
    version: str
    interval_s: int


def fill_messages(engine_name: str, database: str) -> sa.URL:
    """``messages`` in ``database`` (which exists) filled to ``ROWS`` rows; its URL."""
    return _fill(engine_name, database=database, rows=ROWS)


@contextmanager
def query_exporter(engine_name: str, url: sa.URL, workdir: Path) -> Iterator[ReferenceExporter]:
    """query-exporter on ``url``'s ``messages``, on loopback, until its first count is cached;
    stopped (TERM, then KILL) on the way out."""
    exe, version = _qe_install()
    config = workdir / "query-exporter.yaml"
    config.write_text(_qe_config(engine_name, url, QE_INTERVAL))
    port = _free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    with _process("query-exporter", [str(exe), "--config", str(config), "--host", "127.0.0.1",
                                     "--port", str(port)], cwd=workdir) as proc:
        with requests.Session() as session:
            _wait_http(session, metrics_url, lambda text: _sample(text, METRIC) is not None,
                       proc, "query-exporter")
        yield ReferenceExporter(proc.pid, metrics_url, version, QE_INTERVAL)
