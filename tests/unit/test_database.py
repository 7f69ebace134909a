"""Database source and messages collector logic that needs no server: ignored settings, lock
keepalive intervals, which row estimate to trust, the exposition of its source, the pooled
engine and the MySQL connections' TLS context."""

from __future__ import annotations

import logging
import sqlite3
import ssl
from typing import Any

import certifi
import pytest
import sqlalchemy as sa

from exporter.collectors.messages import MessagesCollector
from exporter.config import DatabaseSettings, MessagesSettings
from exporter.sources.database import (
    MessagesSource,
    RowSource,
    ServerReading,
    TableReading,
    warn_ignored_settings,
)
from exporter.sources.database.base import checked_out, pooled_engine
from exporter.sources.database.mysql import pymysql_connection
from exporter.sources.database.postgres import postgres_estimate
from exporter.sources.locks import keepalive_interval
from tests.unit.fakes import FixedReadings


def settings(engine: str, **extra: str) -> DatabaseSettings:
    return DatabaseSettings.model_validate({"WA_DB_ENGINE": engine, "WA_DB_HOSTNAME": "db",
                                            **extra})


@pytest.mark.parametrize(("engine", "warned"), [("PGSQL", True), ("MYSQL", False)])
def test_the_mysql_only_idle_timeout_is_reported_ignored_on_postgresql(
        engine: str, warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        warn_ignored_settings(settings(engine, WA_DB_CONNECTION_IDLE_TIMEOUT="2000"))
        warn_ignored_settings(settings(engine))
    lines = [r.message for r in caplog.records]
    assert lines == (["WA_DB_CONNECTION_IDLE_TIMEOUT is MySQL only: ignored with PGSQL; the "
                      "cluster lock session follows the server's idle_session_timeout"]
                     if warned else [])


@pytest.mark.parametrize(("idle_timeout", "interval"), [
    (None, 60.0),  # no idle timeout known: still every minute, for firewalls and NAT
    (2.0, 1.0), (4.0, 2.0), (180.0, 60.0)])
def test_a_lock_session_is_pinged_at_half_its_idle_timeout_and_at_least_each_minute(
        idle_timeout: float | None, interval: float) -> None:
    assert keepalive_interval(idle_timeout) == interval


@pytest.mark.parametrize(("reltuples", "live", "anchored", "track_counts", "expected"), [
    # After a VACUUM or ANALYZE, the statistics follow every commit: n_live_tup.
    (10_000_012, 7_968_676, True, True, (7_968_676, RowSource.N_LIVE_TUP)),
    (-1, 500, True, True, (500, RowSource.N_LIVE_TUP)),
    # Reset or lost (a crash) since: n_live_tup counts from zero, reltuples is kept.
    (10_000_012, 0, False, True, (10_000_012, RowSource.RELTUPLES)),
    # track_counts off: n_live_tup is frozen.
    (10_000_012, 9_000_000, True, False, (10_000_012, RowSource.RELTUPLES)),
    # Never vacuumed nor analyzed: nothing to trust, count.
    (-1, 0, False, True, (None, RowSource.COUNT)),
])
def test_postgres_picks_the_live_estimate_and_falls_back_when_it_cannot_be_trusted(
        reltuples: int, live: int, anchored: bool, track_counts: bool,
        expected: tuple[int | None, RowSource]) -> None:
    assert postgres_estimate(reltuples, live, anchored, track_counts) == expected


class OneReading(MessagesSource):
    """A source that returns a fixed reading: the collector alone, without a server."""

    def __init__(self, reading: ServerReading) -> None:
        super().__init__(settings("MYSQL"), MessagesSettings())
        self.reading = reading

    def read(self) -> ServerReading:
        return self.reading


def test_the_collector_says_which_source_gave_each_figure() -> None:
    reading = ServerReading(tables={
        "wa_a": TableReading("wa_a", 7_968_676, 4096, RowSource.N_LIVE_TUP),
        "wa_b": TableReading("wa_b", 12, 1024, RowSource.COUNT)})
    families = MessagesCollector(OneReading(reading), MessagesSettings()).refresh()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in families for s in family.samples}
    assert samples[("whatsapp_messages_table_rows_source",
                    (("database", "wa_a"), ("source", "n_live_tup")))] == 1
    assert samples[("whatsapp_messages_table_rows_exact", (("database", "wa_a"),))] == 0
    assert samples[("whatsapp_messages_table_rows", (("database", "wa_a"),))] == 7_968_676
    assert samples[("whatsapp_messages_table_rows_source",
                    (("database", "wa_b"), ("source", "count")))] == 1
    assert samples[("whatsapp_messages_table_rows_exact", (("database", "wa_b"),))] == 1


def dbapi_connection_of(conn: sa.Connection) -> object:
    return conn.connection.dbapi_connection


def test_the_pooled_connection_is_kept_between_refreshes_and_dropped_after_an_error() -> None:
    engine = pooled_engine(sa.URL.create("sqlite"), {}, checkout_timeout=1)
    try:
        with checked_out(engine) as conn:
            first = dbapi_connection_of(conn)
        with checked_out(engine) as conn:
            assert dbapi_connection_of(conn) is first  # kept: no new handshake per refresh
        with pytest.raises(sa.exc.OperationalError), checked_out(engine) as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table"))
        with checked_out(engine) as conn:
            assert dbapi_connection_of(conn) is not first  # never reused after an error
    finally:
        engine.dispose()


def test_a_new_pooled_connection_is_prepared_once_before_its_first_use() -> None:
    """Session limits (statement timeouts) are set on each new connection, not per use."""
    engine = pooled_engine(sa.URL.create("sqlite"), {}, checkout_timeout=1)
    prepared: list[object] = []
    try:
        for _ in range(3):
            with checked_out(engine, lambda c: prepared.append(dbapi_connection_of(c))):
                pass
        assert len(prepared) == 1
        with pytest.raises(sa.exc.OperationalError), \
                checked_out(engine, lambda c: prepared.append(dbapi_connection_of(c))) as conn:
            conn.execute(sa.text("SELECT * FROM no_such_table"))
        with checked_out(engine, lambda c: prepared.append(dbapi_connection_of(c))):
            pass
        assert len(prepared) == 2 and prepared[0] is not prepared[1]  # the new one, again
    finally:
        engine.dispose()


def test_the_pooled_engine_makes_its_connections_with_the_connect_it_is_given() -> None:
    made: list[dict[str, Any]] = []

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        made.append(kwargs)
        return sqlite3.connect(*args, **kwargs)

    engine = pooled_engine(sa.URL.create("sqlite"), {"timeout": 3}, checkout_timeout=1,
                           dbapi_connect=connect)
    try:
        with checked_out(engine) as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        assert len(made) == 1
        assert made[0]["timeout"] == 3  # connect_args still reach the driver
    finally:
        engine.dispose()


def test_mysql_connections_without_tls_settings_share_one_tls_context() -> None:
    """PyMySQL 1.2 builds a default context (the system CA store in it, ~1 MB) for every
    connection without TLS settings, to try TLS if the server offers it; ours share one,
    the same but for the CA store that it never reads. Connections with TLS settings keep
    contexts of their own, PyMySQL's."""
    pymysql = pytest.importorskip("pymysql")
    theirs = pymysql.connect(host="db", defer_connect=True)
    if getattr(theirs, "ctx", None) is None:
        pytest.skip("this PyMySQL makes no TLS context without TLS settings")
    connection = pymysql_connection()
    plain = [connection(host="db", defer_connect=True) for _ in range(3)]
    own = [connection(host="db", defer_connect=True, ssl_ca=certifi.where()) for _ in range(2)]
    assert all(conn.ctx is plain[0].ctx for conn in plain)
    assert own[0].ctx is not own[1].ctx
    assert plain[0].ctx not in (own[0].ctx, own[1].ctx)
    # Still PyMySQL's preferred mode (TLS if offered), with the context it makes itself...
    assert [(conn.ssl, conn._ssl_required) for conn in plain] == [(True, False)] * 3
    assert [(conn.ssl, conn._ssl_required) for conn in own] == [(True, True)] * 2
    for attribute in ("verify_mode", "check_hostname", "verify_flags", "options",
                      "minimum_version", "maximum_version", "protocol", "keylog_filename",
                      "post_handshake_auth", "security_level"):
        assert getattr(plain[0].ctx, attribute) == getattr(theirs.ctx, attribute), attribute
    assert plain[0].ctx.get_ciphers() == theirs.ctx.get_ciphers()
    # ...but for the CA store, which a context that verifies nothing never reads.
    assert theirs.ctx.verify_mode == ssl.CERT_NONE and not theirs.ctx.check_hostname
    assert plain[0].ctx.cert_store_stats()["x509_ca"] == 0


def test_an_empty_prefix_is_logged_naming_each_database_it_matched_once(
        caplog: pytest.LogCaptureFixture) -> None:
    def reading(*names: str) -> ServerReading:
        return ServerReading(tables={n: TableReading(n, 1, 1, RowSource.COUNT) for n in names})

    readings = FixedReadings(reading("wa_main", "crm"), reading("wa_main", "crm"),
                             reading("wa_main", "crm", "shop"), prefix="")
    collector = MessagesCollector(readings, MessagesSettings())
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            collector.refresh()
    said = [r.err for r in caplog.records if r.getMessage() == "WA_DB_NAME_PREFIX is empty"]
    assert said == [
        "WA_DB_NAME_PREFIX is empty, so every database with a messages table counts as a WA "
        "database: crm, wa_main; fix: set WA_DB_NAME_PREFIX as in the WA client's db.env if any "
        "of these is not the WA client's",
        "WA_DB_NAME_PREFIX is empty, so every database with a messages table counts as a WA "
        "database: crm, shop, wa_main; fix: set WA_DB_NAME_PREFIX as in the WA client's db.env "
        "if any of these is not the WA client's"]
