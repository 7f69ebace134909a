"""``upgrade-check --prepare`` against the WA stand-in on the real databases: GC runs through
the runner until every table is under the (lowered) bound, or rounds stop helping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.integration.test_upgrade_check import GC_ACTIONS, config, wa_exporter
from tests.support import ROOT, DatabaseServer, new_prefix
from tests.wa_standin.schema import insert_messages, messages
from tests.wa_standin.server import StandIn

HOUR_COOLDOWN = GC_ACTIONS.replace("cooldown: {gc: 1s}", "cooldown: {gc: 1h}")


def audit(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "state" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def table_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(messages)).scalar_one())


def setup(db: DatabaseServer, read_fraction: float) -> tuple[str, sa.Engine]:
    prefix = new_prefix()
    engine = db.create_database(prefix + "main", messages=0)
    insert_messages(engine, 60, read_fraction=read_fraction, seed=3)
    return prefix, engine


def api_env(db: DatabaseServer, prefix: str, wa: StandIn) -> dict[str, str]:
    return {**db.env(prefix), "WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin",
            "WA_WEB_PASSWORD": "secret"}


def test_prepare_runs_gc_rounds_until_every_table_is_under_the_bound(
        db_server: DatabaseServer, tmp_path: Path) -> None:
    prefix, engine = setup(db_server, read_fraction=1.0)
    with StandIn(db_server.url(prefix + "main"), gc_max_rows_per_round=15) as wa:
        done = wa_exporter(["upgrade-check", "--prepare", "--ignore-cooldown", "--config.file",
                            str(config(tmp_path, HOUR_COOLDOWN))], api_env(db_server, prefix, wa))
        assert done.returncode == 0, done.stdout + done.stderr
        assert wa.stats()["message_gc_calls"] == 3  # 60 -> 45 -> 30 -> 15, under 20
    assert table_rows(engine) == 15
    lines = done.stdout.splitlines()
    rounds = [line.strip() for line in lines if line.strip().startswith("round ")]
    assert [r.split(";")[0] for r in rounds] == ["round 1: rows 60 -> 45",
                                                 "round 2: rows 45 -> 30",
                                                 "round 3: rows 30 -> 15"]
    assert "prepare: every messages table is under 20 rows" in lines
    assert lines[-1].startswith("ready: ")
    started = [r for r in audit(tmp_path) if r.get("outcome") == "started"]
    assert len(started) == 3
    assert all(r["trigger"] == "manual" and r["ignore_cooldown"] is True
               and r["command"] == "upgrade-check --prepare" for r in started)


def test_without_the_flag_the_cooldown_holds_after_one_run(postgres: DatabaseServer,
                                                           tmp_path: Path) -> None:
    prefix, engine = setup(postgres, read_fraction=1.0)
    with StandIn(postgres.url(prefix + "main"), gc_max_rows_per_round=15) as wa:
        done = wa_exporter(["upgrade-check", "--prepare", "--config.file",
                            str(config(tmp_path, HOUR_COOLDOWN))], api_env(postgres, prefix, wa))
        assert wa.stats()["message_gc_calls"] == 1
    assert done.returncode == 1, done.stdout + done.stderr
    assert "message GC not started: skipped_cooldown" in done.stdout
    assert "pass --ignore-cooldown" in done.stdout
    assert table_rows(engine) == 45
    assert done.stdout.splitlines()[-1].startswith("not ready: ")


def test_rounds_that_delete_nothing_stop(mysql: DatabaseServer, tmp_path: Path) -> None:
    prefix, engine = setup(mysql, read_fraction=0.0)  # nothing marked read: nothing to clean
    with StandIn(mysql.url(prefix + "main")) as wa:
        done = wa_exporter(["upgrade-check", "--prepare", "--ignore-cooldown", "--format",
                            "json", "--config.file", str(config(tmp_path, HOUR_COOLDOWN))],
                           api_env(mysql, prefix, wa))
        assert wa.stats()["message_gc_calls"] == 1
    assert done.returncode == 1
    report = json.loads(done.stdout)  # progress goes to stderr with --format json
    assert report["prepare"].startswith("message GC ended unconfirmed")
    assert "round 1: rows 60 -> 60; 0 deleted; unconfirmed" in done.stderr
    assert table_rows(engine) == 60


def test_prepare_without_gc_allowed_is_a_configuration_error(mysql: DatabaseServer,
                                                              tmp_path: Path) -> None:
    prefix, _ = setup(mysql, read_fraction=1.0)
    with StandIn(mysql.url(prefix + "main")) as wa:
        done = wa_exporter(["upgrade-check", "--prepare", "--config.file", str(config(tmp_path))],
                           api_env(mysql, prefix, wa))
        assert wa.stats()["message_gc_calls"] == 0
    assert done.returncode == 2
    assert "message GC not started: rejected" in done.stdout
    assert "--prepare needs gc in actions.allowed" in done.stderr


def test_prepare_with_the_wa_api_unreachable_cannot_check(mysql: DatabaseServer,
                                                           tmp_path: Path) -> None:
    """GC could not even be asked (the run ends in error): exit 3, not "not ready"."""
    from tests.promstack import free_port

    prefix, engine = setup(mysql, read_fraction=1.0)
    env = {**mysql.env(prefix), "WA_WEB_URL": f"http://127.0.0.1:{free_port()}",
           "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}
    done = wa_exporter(["upgrade-check", "--prepare", "--format", "json", "--config.file",
                        str(config(tmp_path, GC_ACTIONS))], env)
    assert done.returncode == 3, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["exit_code"] == 3 and report["prepare"].startswith("message GC ended error")
    assert report["errors"] == [f"--prepare: {report['prepare']}"]
    assert report["complete"] is True and table_rows(engine) == 60  # counted, not cleaned


def test_each_round_is_printed_as_it_is_recorded(postgres: DatabaseServer,
                                                 tmp_path: Path) -> None:
    """One GC run of several rounds (actions.gc.large_table_rows lowered too): round 1 is
    on the screen while the run pauses before round 2."""
    prefix, _ = setup(postgres, read_fraction=1.0)
    rounds_in_one_run = HOUR_COOLDOWN.replace(
        "round_pause: 0.1s", "round_pause: 4s, large_table_rows: 20")
    with StandIn(postgres.url(prefix + "main"), gc_max_rows_per_round=15) as wa:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
        env.update(api_env(postgres, prefix, wa))
        proc = subprocess.Popen(
            [sys.executable, "-m", "exporter", "upgrade-check", "--prepare", "--config.file",
             str(config(tmp_path, rounds_in_one_run))],
            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if line.strip().startswith("round 1:"):
                    assert wa.stats()["message_gc_calls"] == 1  # round 2 not yet asked for
                    break
            rest = proc.stdout.read()
        finally:
            proc.wait(60)
        assert wa.stats()["message_gc_calls"] == 3
    assert proc.returncode == 0
    assert "round 3: rows 30 -> 15" in rest
    assert "message GC run 2" not in rest  # one run did all three rounds
