"""The messages collector against the real MariaDB and PostgreSQL servers on this machine."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from exporter.config import DatabaseSettings, MessagesSettings
from exporter.sources.database import RowSource, TableReading, open_source
from tests.support import (
    ONLY_MESSAGES,
    DatabaseServer,
    Samples,
    big_table_without_autovacuum,
    new_prefix,
    run_exporter,
    series,
    value,
    wait_for,
)

FAST = """
collectors:
""" + ONLY_MESSAGES + """  messages:
    interval: 500ms
    timeout: 3s
    query_timeout: 1s
    exact_count_below: {bound}
"""


def test_discovers_prefixed_databases_with_a_messages_table(db_server: DatabaseServer,
                                                            tmp_path: Path) -> None:
    prefix = new_prefix()
    db_server.create_database(prefix + "main", messages=120)
    db_server.create_database(prefix + "empty", messages=0)
    db_server.create_database(prefix + "nomessages", messages=None)  # no messages table
    other = "woy" + prefix[3:] + "main"  # same tail, other prefix
    db_server.create_database(other, messages=5)
    # '_' in the prefix is a literal underscore, not a one-character wildcard.
    lookalike = prefix[:-1] + "Xmain"
    db_server.create_database(lookalike, messages=5)

    with run_exporter(env=db_server.env(prefix), config=FAST.format(bound=1_000_000),
                      tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_db_up", 1.0, database=prefix + "main")
        assert value(samples, "whatsapp_messages_table_rows", database=prefix + "main") == 120
        assert value(samples, "whatsapp_messages_table_rows_exact", database=prefix + "main") == 1
        assert value(samples, "whatsapp_messages_table_rows", database=prefix + "empty") == 0
        assert (value(samples, "whatsapp_messages_table_size_bytes", database=prefix + "main")
                or 0) > 0
        found = {dict(labels)["database"] for labels in series(samples, "whatsapp_db_up")}
        assert found == {prefix + "main", prefix + "empty"}
        assert value(samples, "whatsapp_messages_databases") == 2
        assert value(samples, "whatsapp_exporter_collector_success", collector="messages") == 1


def test_estimates_above_the_bound_and_counts_exactly_below(db_server: DatabaseServer,
                                                            tmp_path: Path) -> None:
    prefix = new_prefix()
    db_server.create_database(prefix + "big", messages=3000)
    db_server.create_database(prefix + "small", messages=10)
    db_server.analyze(prefix + "big")
    db_server.analyze(prefix + "small")

    with run_exporter(env=db_server.env(prefix), config=FAST.format(bound=1000),
                      tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_db_up", 1.0, database=prefix + "big")
        assert value(samples, "whatsapp_messages_table_rows_exact", database=prefix + "big") == 0
        estimate = value(samples, "whatsapp_messages_table_rows", database=prefix + "big")
        assert estimate is not None and 1000 <= estimate <= 6000  # an engine estimate of 3000
        assert value(samples, "whatsapp_messages_table_rows_exact", database=prefix + "small") == 1
        assert value(samples, "whatsapp_messages_table_rows", database=prefix + "small") == 10


def test_new_databases_appear_and_dropped_ones_disappear(db_server: DatabaseServer,
                                                         tmp_path: Path) -> None:
    prefix = new_prefix()
    db_server.create_database(prefix + "first", messages=3)
    with run_exporter(env=db_server.env(prefix), config=FAST.format(bound=1_000_000),
                      tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_messages_table_rows", 3.0, database=prefix + "first")
        db_server.create_database(prefix + "second", messages=7)
        exporter.wait_metric("whatsapp_messages_table_rows", 7.0, database=prefix + "second")
        db_server.drop_database(prefix + "first")
        samples = exporter.wait_metric("whatsapp_db_up", None, database=prefix + "first")
        assert value(samples, "whatsapp_messages_table_rows", database=prefix + "first") is None
        assert value(samples, "whatsapp_db_up", database=prefix + "second") == 1


def _lock_messages(db_server: DatabaseServer, database: str, locked: threading.Event,
                   release: threading.Event) -> None:
    """Hold an exclusive lock on messages until ``release`` is set."""
    with db_server.engine(database).connect() as conn:
        if db_server.engine_name == "MYSQL":
            conn.execute(sa.text("LOCK TABLES messages WRITE"))
        else:
            conn.execute(sa.text("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"))
        locked.set()
        release.wait(30)
        if db_server.engine_name == "MYSQL":
            conn.execute(sa.text("UNLOCK TABLES"))
        conn.rollback()


def test_a_locked_table_times_out_on_the_server_and_spares_the_others(
        db_server: DatabaseServer, tmp_path: Path) -> None:
    prefix = new_prefix()
    db_server.create_database(prefix + "locked", messages=5)
    db_server.create_database(prefix + "free", messages=6)
    locked, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=_lock_messages,
                              args=(db_server, prefix + "locked", locked, release))
    holder.start()
    try:
        assert locked.wait(10)
        with run_exporter(env=db_server.env(prefix), config=FAST.format(bound=1_000_000),
                          tmp_path=tmp_path) as exporter:
            samples = exporter.wait_metric("whatsapp_db_up", 0.0, database=prefix + "locked")
            assert value(samples, "whatsapp_db_up", database=prefix + "free") == 1
            assert value(samples, "whatsapp_messages_table_rows", database=prefix + "free") == 6
            assert value(samples, "whatsapp_exporter_collector_success", collector="messages") == 0
            # The server-side timeout, not the collector's own deadline, ended the query.
            assert "kind=timeout" in exporter.log
            assert "refresh took longer" not in exporter.log
            release.set()
            exporter.wait_metric("whatsapp_db_up", 1.0, database=prefix + "locked")
            started = time.monotonic()
            exporter.wait_metric("whatsapp_exporter_collector_success", 1.0, collector="messages")
            assert time.monotonic() - started < 10
    finally:
        release.set()
        holder.join()


def test_unreachable_database_at_start_is_reported_down_not_fatal(tmp_path: Path) -> None:
    env = {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "127.0.0.1", "WA_DB_PORT": "9",
           "WA_DB_USERNAME": "root", "WA_DB_PASSWORD": "s3cr3t-at-start",
           "WA_DB_NAME_PREFIX": "wa_"}
    with run_exporter(env=env, config=FAST.format(bound=10), tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_db_up", 0.0, database="wa_*")
        assert value(samples, "whatsapp_exporter_collector_success", collector="messages") == 0
        assert exporter.get("/-/ready").status_code == 200
    assert exporter.proc.returncode == 0
    assert "Traceback" not in exporter.log
    assert "s3cr3t-at-start" not in exporter.log


@pytest.mark.parametrize("flag", ["--log.format=json", "--log.format=logfmt"])
def test_log_formats(flag: str, tmp_path: Path) -> None:
    env = {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "127.0.0.1", "WA_DB_PORT": "9"}
    with run_exporter(args=[flag], env=env) as exporter:
        wait_for(lambda: any("collector refresh failed" in line for line in exporter.lines),
                 what="the failure log line")
    listening = next(line for line in exporter.lines if "listening" in line)
    if flag.endswith("json"):
        import json
        assert all(json.loads(line)["level"] for line in exporter.lines)
        assert json.loads(listening)["level"] == "info"
    else:
        assert all(line.startswith("ts=") for line in exporter.lines)
        assert " level=info " in listening


def test_the_mysql_only_idle_timeout_is_ignored_with_a_warning_on_postgresql(
        db_server: DatabaseServer, tmp_path: Path) -> None:
    """The guide: WA_DB_CONNECTION_IDLE_TIMEOUT is for MySQL. A PostgreSQL db.env that carries
    it anyway gets one warning at start; a MySQL one gets none."""
    prefix = new_prefix()
    db_server.create_database(prefix + "main", messages=4)
    env = {**db_server.env(prefix), "WA_DB_CONNECTION_IDLE_TIMEOUT": "180000"}
    with run_exporter(env=env, config=FAST.format(bound=1_000_000),
                      tmp_path=tmp_path) as exporter:
        exporter.wait_metric("whatsapp_messages_table_rows", 4.0, database=prefix + "main")
        warned = [line for line in exporter.lines if "WA_DB_CONNECTION_IDLE_TIMEOUT" in line]
    if db_server.engine_name == "PGSQL":
        assert len(warned) == 1, warned
        assert "level=warn " in warned[0] and "ignored with PGSQL" in warned[0]
    else:
        assert warned == []


def delete_read_rows(engine: sa.Engine) -> int:
    """Delete what a message GC may delete, as the WA client does; the exact count left."""
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM messages WHERE status = 'read'"))
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT COUNT(*) FROM messages")).scalar_one())


def row_source(samples: Samples, database: str) -> str | None:
    [source] = [dict(labels)["source"] for labels in series(
        samples, "whatsapp_messages_table_rows_source") if dict(labels)["database"] == database]
    return source


def test_the_estimate_follows_a_large_delete_without_analyze(db_server: DatabaseServer,
                                                             tmp_path: Path) -> None:
    """Above the exact bound the figure is the engine's estimate, and it is the feedback of
    the GC loop: after 40 % of the rows are deleted, the next refresh must report within 5 %
    of the exact count, with no ANALYZE and (on PostgreSQL) no autovacuum for the table."""
    prefix = new_prefix()
    database = prefix + "big"
    total = 20_000
    engine = big_table_without_autovacuum(db_server, database, total, read_fraction=0.4)
    expected_source = "n_live_tup" if db_server.engine_name == "PGSQL" else "table_rows"
    with run_exporter(env=db_server.env(prefix), config=FAST.format(bound=5000),
                      tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_messages_table_rows_exact", 0.0,
                                       database=database)
        before = value(samples, "whatsapp_messages_table_rows", database=database)
        assert before is not None and abs(before - total) <= 0.05 * total, before
        assert row_source(samples, database) == expected_source
        left = delete_read_rows(engine)
        assert left <= 0.7 * total  # a large share is gone

        def close_to_exact() -> Samples | None:
            samples = exporter.metrics()
            rows = value(samples, "whatsapp_messages_table_rows", database=database)
            return samples if rows is not None and abs(rows - left) <= 0.05 * left else None
        # The statistics flush delay: about 1 s on PostgreSQL, none on MariaDB.
        samples = wait_for(close_to_exact, timeout=15, what=f"rows within 5 % of {left}")
        assert value(samples, "whatsapp_messages_table_rows_exact", database=database) == 0
        assert row_source(samples, database) == expected_source


def read_one(source_settings: tuple[DatabaseSettings, MessagesSettings],
             database: str) -> TableReading:
    """One refresh through a new source (new sessions, so database settings apply)."""
    source = open_source(*source_settings)
    try:
        reading = source.read()
    finally:
        source.close()
    assert not reading.errors, reading.errors
    return reading.tables[database]


def test_postgres_falls_back_to_reltuples_when_its_statistics_are_reset_or_off(
        postgres: DatabaseServer) -> None:
    """n_live_tup is a running total from the last VACUUM/ANALYZE. Reset (as after a crash,
    which loses them) it counts from zero, and with track_counts off it is not kept: the
    figure must then be reltuples, never the absurd 0 or a frozen total."""
    prefix = new_prefix()
    database = prefix + "big"
    engine = big_table_without_autovacuum(postgres, database, 3000, read_fraction=0.5)
    settings = (DatabaseSettings.model_validate(postgres.env(prefix)),
                MessagesSettings(exact_count_below=1000))
    left = delete_read_rows(engine)
    live = wait_for(lambda: (t := read_one(settings, database)).rows == left and t,
                    what="n_live_tup to follow the delete")
    assert live.source is RowSource.N_LIVE_TUP

    with engine.connect() as conn:
        conn.execute(sa.text("SELECT pg_stat_reset_single_table_counters("
                             "'messages'::regclass)"))
        assert conn.execute(sa.text("SELECT n_live_tup FROM pg_stat_user_tables "
                                    "WHERE relname = 'messages'")).scalar_one() == 0
    reset = read_one(settings, database)
    assert (reset.source, reset.rows) == (RowSource.RELTUPLES, 3000)  # the last ANALYZE's

    postgres.analyze(database)  # a VACUUM or ANALYZE puts the live figure back on record
    analyzed = read_one(settings, database)
    assert (analyzed.source, analyzed.rows) == (RowSource.N_LIVE_TUP, left)

    with postgres.admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'ALTER DATABASE "{database}" SET track_counts = off'))
    off = read_one(settings, database)
    assert (off.source, off.rows) == (RowSource.RELTUPLES, left)


def test_postgres_counts_a_table_never_analyzed(postgres: DatabaseServer) -> None:
    """reltuples is -1 until the first VACUUM or ANALYZE: there is nothing to trust."""
    prefix = new_prefix()
    postgres.create_database(prefix + "big", messages=3000)
    settings = (DatabaseSettings.model_validate(postgres.env(prefix)),
                MessagesSettings(exact_count_below=1000))
    reading = read_one(settings, prefix + "big")
    assert (reading.source, reading.rows, reading.exact) == (RowSource.COUNT, 3000, True)


@pytest.mark.parametrize("password", ["pässwörd-é", "snow☃man"], ids=["latin1", "bmp"])
def test_a_mysql_password_with_non_ascii_characters_logs_in(
        mysql: DatabaseServer, tmp_path: Path, password: str) -> None:
    """The mysql CLI sends the password as typed (UTF-8): 'é' must not be refused, '☃' must
    not raise."""
    prefix = new_prefix()
    mysql.create_database(prefix + "main", messages=3)
    user = prefix + "user"
    with mysql.admin.connect() as conn:  # utf8mb4: the server hashes the UTF-8 bytes
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY :password"),
                     {"password": password})
        conn.execute(sa.text(f"GRANT SELECT ON *.* TO '{user}'@'%'"))
    try:
        if shutil.which("mysql"):  # the reference: the CLI logs in with it
            subprocess.run(["mysql", "-h", mysql.host, "-P", str(mysql.port), "-u", user,
                            f"-p{password}", "-e", "SELECT 1"], check=True, capture_output=True)
        env = {**mysql.env(prefix), "WA_DB_USERNAME": user, "WA_DB_PASSWORD": password}
        with run_exporter(env=env, config=FAST.format(bound=1_000_000),
                          tmp_path=tmp_path) as exporter:
            exporter.wait_metric("whatsapp_messages_table_rows", 3.0, database=prefix + "main")
        assert "Traceback" not in exporter.log
        assert password not in exporter.log
    finally:
        with mysql.admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))


def test_a_mysql_database_named_with_a_percent_sign_is_counted(mysql: DatabaseServer,
                                                               tmp_path: Path) -> None:
    """A '%' in the name reaches the COUNT(*) text: it must not be read as a placeholder."""
    prefix = new_prefix()
    database = prefix + "50%off"
    mysql.create_database(database, messages=7)
    with run_exporter(env=mysql.env(prefix), config=FAST.format(bound=1_000_000),
                      tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_messages_table_rows", 7.0, database=database)
        assert value(samples, "whatsapp_db_up", database=database) == 1
        assert value(samples, "whatsapp_messages_table_rows_exact", database=database) == 1
