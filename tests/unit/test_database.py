"""Database source and messages collector logic that needs no server: ignored settings, lock
keepalive intervals, which row estimate to trust, the exposition of its source."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from exporter.collectors.messages import MessagesCollector
from exporter.config import DatabaseSettings, MessagesSettings
from exporter.sources.database import (
    MessagesSource,
    RowSource,
    ServerReading,
    TableReading,
    checked_out,
    pooled_engine,
    postgres_estimate,
    warn_ignored_settings,
)
from exporter.sources.locks import keepalive_interval


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
    engine = pooled_engine("sqlite", {}, checkout_timeout=1)
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
