"""``wa-exporter upgrade-check`` on the real MariaDB and PostgreSQL, the real Docker engine and
the WA stand-in, with the large-table bound lowered to a few rows (the same code path as the
guide's 2 million)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import docker
import pytest
import sqlalchemy as sa

from exporter.config import load_settings
from exporter.sources.database import open_source
from exporter.sources.locks import cluster_lock
from tests.docker_support import remove_test_containers, start_wa_container
from tests.support import ROOT, DatabaseServer, new_prefix, run_exporter, value
from tests.tcp_proxy import TcpProxy
from tests.wa_standin.schema import messages
from tests.wa_standin.server import StandIn

BOUND = 20
# Under actions: message GC allowed, fast rounds; the CLI has no callback route, so a round
# completes when the row count settles.
GC_ACTIONS = """  allowed: [gc]
  cooldown: {gc: 1s}
  gc: {callback_timeout: 1s, settle_interval: 0.2s, round_timeout: 5s, round_pause: 0.1s}"""


def config(tmp_path: Path, actions: str = "", project: str = "wax-none") -> Path:
    """A config file: the bound lowered, no WA container expected unless ``project``."""
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    path = tmp_path / "wa-exporter.yml"
    path.write_text(f"""
collectors:
  containers: {{compose_project: {project}}}
  volume: {{path: {media}}}
actions:
  state_dir: {tmp_path / 'state'}
{actions}
upgrade:
  large_table_rows: {BOUND}
""")
    return path


def wa_exporter(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WA_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "exporter", *args], env=full, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def check(env: dict[str, str], cfg: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = wa_exporter(["upgrade-check", "--format", "json", "--config.file", str(cfg),
                        *extra], env)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {db["name"]: db for db in report["databases"]}


def test_tables_above_the_bound_are_not_ready_below_it_ready(
        db_server: DatabaseServer, tmp_path: Path) -> None:
    prefix = new_prefix()
    big = db_server.create_database(prefix + "big", messages=BOUND + 10)
    db_server.create_database(prefix + "small", messages=BOUND - 15)
    env = db_server.env(prefix)
    code, report = check(env, config(tmp_path))
    assert code == 1, report
    dbs = by_name(report)
    assert dbs[prefix + "big"] == {"name": prefix + "big", "rows": BOUND + 10, "exact": True,
                                   "error": "", "ready": False}
    assert dbs[prefix + "small"]["rows"] == BOUND - 15 and dbs[prefix + "small"]["ready"]
    assert report["verdict"].startswith("not ready: ") and prefix + "big" in report["verdict"]
    assert report["gc"]["running"] is False

    with big.begin() as conn:  # the bound itself is still large: "above 2 million" is > 2 M
        conn.execute(messages.delete().where(messages.c.id > BOUND))
    code, report = check(env, config(tmp_path))
    assert code == 1 and by_name(report)[prefix + "big"]["rows"] == BOUND

    with big.begin() as conn:
        conn.execute(messages.delete().where(messages.c.id > BOUND - 1))
    code, report = check(env, config(tmp_path))
    assert code == 0, report
    assert report["ready"] and report["verdict"].startswith("ready")

    text = wa_exporter(["upgrade-check", "--config.file", str(config(tmp_path))], env)
    assert text.returncode == 0
    lines = text.stdout.splitlines()
    assert lines[0].split()[:4] == ["WHAT", "NAME", "STATE", "DETAIL"]
    assert any(line.startswith("database") and prefix + "big" in line
               and f"rows {BOUND - 1:,} of {BOUND:,}" in line for line in lines)
    assert lines[-1].startswith("ready: ")


def test_a_gc_holding_the_cluster_lock_elsewhere_is_running(db_server: DatabaseServer,
                                                            tmp_path: Path) -> None:
    prefix = new_prefix()
    db_server.create_database(prefix + "main", messages=3)
    env = db_server.env(prefix)
    cfg = config(tmp_path)
    settings = load_settings(config_file=cfg, environ=env)
    assert settings.database is not None
    source = open_source(settings.database, settings.collectors.messages)
    other_replica = cluster_lock(source, tmp_path, 3.0)
    held = other_replica.try_acquire("gc")
    assert held is not None
    try:
        code, report = check(env, cfg)
        assert code == 1 and report["gc"]["running"] is True
        assert "a message GC is running" in report["verdict"]
    finally:
        held.release()
        source.close()
    code, report = check(env, cfg)
    assert code == 0 and report["gc"]["running"] is False


def test_the_last_gc_from_the_state_file_and_audit_log(postgres: DatabaseServer,
                                                       tmp_path: Path) -> None:
    """A GC that ended in error (run through `wa-exporter run gc`) blocks; a later success
    clears it."""
    prefix = new_prefix()
    database = prefix + "main"
    postgres.create_database(database, messages=10)
    cfg = config(tmp_path, GC_ACTIONS)
    with StandIn(postgres.url(database)) as wa:
        env = {**postgres.env(prefix), "WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin",
               "WA_WEB_PASSWORD": "secret"}
        code, report = check(env, cfg)
        assert report["gc"]["last_success"] is None and report["gc"]["failing"] is False
        assert any("no successful message GC" in w for w in report["warnings"])

        wa.fail_next("message_gc", count=10)  # more than the client's retries
        assert wa_exporter(["run", "gc", "--config.file", str(cfg)], env).returncode == 1
        code, report = check(env, cfg)
        assert code == 1 and report["gc"]["failing"] and report["gc"]["last_result"] == "error"
        assert report["last_actions"]["gc"]["result"] == "error"
        assert "the last message GC ended error" in report["verdict"]

        wa.clear_faults()
        done = wa_exporter(["run", "gc", "--config.file", str(cfg)], env)
        assert done.returncode == 0, done.stdout + done.stderr
        code, report = check(env, cfg)
        assert code == 0, report
        assert report["gc"]["last_result"] == "success" and report["gc"]["last_success"]
        assert not any("no successful message GC" in w for w in report["warnings"])


@pytest.mark.docker
def test_containers_with_role_image_and_version(mysql: DatabaseServer, tmp_path: Path,
                                                client: docker.DockerClient,
                                                project: str, standin_image: str) -> None:
    # Meta tagged each release; the stand-in is tagged the same way for this test.
    image = client.images.get(standin_image)
    image.tag("docker.whatsapp.biz/web", "v2.53.2")
    image.tag("docker.whatsapp.biz/coreapp", "v2.53.2")
    prefix = new_prefix()
    mysql.create_database(prefix + "main", messages=1)
    try:
        start_wa_container(client, role="webapp", service="waweb", project=project,
                           image="docker.whatsapp.biz/web:v2.53.2")
        core = start_wa_container(client, role="coreapp", service="wacore", project=project,
                                  image="docker.whatsapp.biz/coreapp:v2.53.2")
        core.stop(timeout=5)
        code, report = check(mysql.env(prefix), config(tmp_path, project=project))
        assert code == 0, report  # a stopped container is a warning, not a blocker
        found = {c["role"]: c for c in report["containers"]}
        assert found["webapp"]["running"] is True and found["webapp"]["version"] == "v2.53.2"
        assert found["webapp"]["image"] == "docker.whatsapp.biz/web:v2.53.2"
        assert found["coreapp"]["running"] is False
        assert any(f"{core.name} (coreapp) is not running" in w for w in report["warnings"])
        assert report["media"]["size_bytes"] > 0 and report["media"]["error"] == ""
    finally:
        remove_test_containers(client, project)
        for tag in ("docker.whatsapp.biz/web:v2.53.2", "docker.whatsapp.biz/coreapp:v2.53.2"):
            client.images.remove(tag, noprune=True)


def test_bad_configuration_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yml"
    cfg.write_text("upgrade: {large_table_rows: many}\n")
    done = wa_exporter(["upgrade-check", "--config.file", str(cfg)],
                       {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "127.0.0.1"})
    assert done.returncode == 2
    assert "upgrade.large_table_rows" in done.stderr


@pytest.mark.parametrize("args", [
    ["--config.file", "{bad}"],  # the YAML: refused before the command runs
    ["--max-runs", "0"],  # a flag's value: refused by the parser
    ["--silence", "2h"],  # a flag without the one it needs (--alertmanager.url)
])
def test_json_on_a_usage_or_config_error_is_one_document_with_exit_2(
        args: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("upgrade: {large_table_rows: many}\n")
    done = wa_exporter(["upgrade-check", "--format", "json",
                        *(a.format(bad=bad) for a in args)],
                       {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "127.0.0.1"})
    assert done.returncode == 2, done.stderr
    document = json.loads(done.stdout)  # the whole of stdout: one document, nothing else
    assert document["exit_code"] == 2 and document["ready"] is False
    assert document["errors"] and document["verdict"] == document["errors"][0]
    assert document["errors"][0].split(":")[0] in ("config error", "usage error")
    assert document["errors"][0].split(": ", 1)[1] in done.stderr  # said on stderr too


def test_exit_codes_tell_a_large_table_from_an_unreachable_database(
        mysql: DatabaseServer, tmp_path: Path) -> None:
    """The same install: 1 while a table is over the bound (GC first), 3 once the database
    cannot be reached (the check is broken), 0 when the table is under it again."""
    prefix = new_prefix()
    table = mysql.create_database(prefix + "main", messages=BOUND + 5)
    proxy = TcpProxy((mysql.host, mysql.port))
    env = mysql.env(prefix, host="127.0.0.1", port=proxy.port)
    cfg = config(tmp_path)
    try:
        code, report = check(env, cfg)
        assert code == 1 and report["exit_code"] == 1 and report["complete"] is True
        assert report["verdict"].startswith("not ready: ")

        proxy.cut()
        code, report = check(env, cfg)
        assert code == 3 and report["exit_code"] == 3 and report["complete"] is False
        assert report["verdict"].startswith("cannot check: the WA databases could not be read")
        assert proxy.refused > 0

        proxy.forward()
        with table.begin() as conn:
            conn.execute(sa.delete(messages))
        code, report = check(env, cfg)
        assert code == 0 and report["exit_code"] == 0 and report["errors"] == []
    finally:
        proxy.close()


def test_readiness_metric_per_database(mysql: DatabaseServer, tmp_path: Path) -> None:
    prefix = new_prefix()
    big = mysql.create_database(prefix + "big", messages=BOUND + 5)
    mysql.create_database(prefix + "small", messages=2)
    cfg = f"""
collectors:
  messages: {{interval: 0.2s}}
  containers: {{enabled: false}}
  logs: {{enabled: false}}
  volume: {{enabled: false}}
  volume_scan: {{enabled: false}}
actions:
  state_dir: {tmp_path / 'state'}
upgrade: {{large_table_rows: {BOUND}}}
"""
    with run_exporter(env=mysql.env(prefix), config=cfg, tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_upgrade_ready", 0.0, database=prefix + "big")
        assert value(samples, "whatsapp_upgrade_ready", database=prefix + "small") == 1.0
        assert value(samples, "whatsapp_upgrade_large_table_rows") == BOUND
        with big.begin() as conn:
            conn.execute(sa.delete(messages))
        exporter.wait_metric("whatsapp_upgrade_ready", 1.0, database=prefix + "big")


def test_unreachable_database_and_docker_are_reported_not_raised(tmp_path: Path) -> None:
    from tests.promstack import free_port

    closed = str(free_port())  # nothing listens there
    env = {"WA_DB_ENGINE": "PGSQL", "WA_DB_HOSTNAME": "127.0.0.1", "WA_DB_PORT": closed,
           "WA_DB_USERNAME": "postgres", "WA_DB_PASSWORD": "hunter2-db-secret",
           "WA_DB_NAME_PREFIX": "wax_", "DOCKER_HOST": f"tcp://127.0.0.1:{closed}"}
    done = wa_exporter(["upgrade-check", "--format", "json", "--config.file",
                        str(config(tmp_path))], env)
    assert done.returncode == 3, done.stderr  # cannot check, not "not ready"
    report = json.loads(done.stdout)
    assert report["databases_error"] and report["gc"]["running"] is None
    assert "is unreachable" in report["containers_error"]
    assert report["verdict"].startswith("cannot check: the WA databases could not be read")
    assert "hunter2-db-secret" not in done.stdout + done.stderr


def test_pending_callbacks_and_messages_in_the_wa_client_are_warned(postgres: DatabaseServer,
                                                                     tmp_path: Path) -> None:
    """The stand-in's documented /v1/stats/db: 7 callbacks and 3 messages pending."""
    prefix = new_prefix()
    postgres.create_database(prefix + "main", messages=BOUND - 10)
    with StandIn() as wa:
        env = {**postgres.env(prefix), "WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin",
               "WA_WEB_PASSWORD": "secret"}
        code, report = check(env, config(tmp_path))
        wa.set_client_stat("db", "db_pending_callbacks", 0)
        wa.set_client_stat("db", "db_pending_messages", 0)
        wa.set_client_stat("app", "callback_queue_size", 0)
        wa.set_application_settings(garbagecollector_enable={"media": False, "messages": False})
        done = wa_exporter(["upgrade-check", "--config.file", str(config(tmp_path))], env)
        calls = wa.stats()["requests"]
    assert code == 0, report  # a warning, not a blocker
    assert report["client"] == {"pending_callbacks": 7.0, "pending_messages": 3.0,
                                "callback_queue": 450.0, "message_gc_off": False,
                                "gc_scheduled": False, "error": ""}
    assert "7 callbacks are pending in the WA database: an upgrade restarts the coreapps; " \
        "let them drain first" in report["warnings"]
    assert any(w.startswith("3 messages are pending") for w in report["warnings"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning: the WA client's own message GC is off and no schedule here runs message " \
        "GC: nothing deletes old messages" in done.stdout
    assert not [line for line in done.stdout.splitlines()
                if line.startswith("warning:") and "pending" in line]  # drained
    assert calls["stats_db"] == 2  # one read per run
