"""``wa-exporter check-config --connect`` against the real parts: MariaDB, PostgreSQL, the Docker
engine, the WA API stand-in and the filesystem. Each ✗ names its cause and its fix, no secret
is printed, and any ✗ exits 1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from tests.docker_support import start_wa_container
from tests.promstack import free_port
from tests.support import ONLY_MESSAGES, ROOT, DatabaseServer, new_prefix
from tests.wa_standin.server import StandIn

WRONG_PASSWORD = "not-the-password-7x9"
NOTHING_ELSE = "collectors:\n  messages:\n    enabled: false\n" + ONLY_MESSAGES


def check(env: dict[str, str], config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.yml"
    path.write_text(config)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("WA_", "DOCKER_"))}
    return subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--connect", "--config.file",
         str(path)], env={**base, **env}, capture_output=True, text=True, cwd=ROOT, timeout=120)


def line(result: subprocess.CompletedProcess[str], name: str) -> str:
    """The check's line and, for a ✗, its fix line."""
    lines = result.stdout.splitlines()
    for index, text in enumerate(lines):
        if text[2:].startswith(f"{name} "):
            following = lines[index + 1] if index + 1 < len(lines) else ""
            return text + ("\n" + following if following.lstrip().startswith("fix:") else "")
    raise AssertionError(f"no {name} check in:\n{result.stdout}\n{result.stderr}")


def test_database_found_lists_the_wa_databases(db_server: DatabaseServer,
                                               tmp_path: Path) -> None:
    prefix = new_prefix()
    db_server.create_database(prefix + "messagestore", messages=3)
    db_server.create_database(prefix + "contacts", messages=None)
    result = check(db_server.env(prefix), "collectors:\n" + ONLY_MESSAGES, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    database = line(result, "database")
    assert database.startswith("✓ database")
    assert f"{prefix}messagestore (3 rows)" in database
    assert f"{prefix}contacts" not in database
    assert line(result, "docker").startswith("- docker")
    assert line(result, "media").startswith("- media")


def test_an_empty_prefix_is_warned_about_naming_the_databases_it_matched(
        mysql: DatabaseServer, tmp_path: Path) -> None:
    # Sorts first, so the listing (capped at 20 names) shows it on a shared server.
    name = "0" + new_prefix() + "messagestore"
    mysql.create_database(name, messages=2)
    env = {**mysql.env(""), "WA_DB_NAME_PREFIX": ""}
    result = check(env, "collectors:\n" + ONLY_MESSAGES, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr  # a warning, not a failure
    database = line(result, "database")
    assert database.startswith("! database")
    assert "WA_DB_NAME_PREFIX is empty, so every database with a messages table counts as a " \
           f"WA database: {name}" in database
    plain = subprocess.run([sys.executable, "-m", "exporter", "check-config", "--config.file",
                            str(tmp_path / "config.yml")], env={**os.environ, **env},
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert plain.returncode == 0
    assert "wa-exporter: warning: WA_DB_NAME_PREFIX is empty, so every database with a " \
           "messages table counts as a WA database; check-config --connect names them" \
           in plain.stderr


def test_wrong_mariadb_password_is_a_cross_with_its_fix_and_no_password(
        mysql: DatabaseServer, tmp_path: Path) -> None:
    env = {**mysql.env(new_prefix()), "WA_DB_PASSWORD": WRONG_PASSWORD}
    result = check(env, "collectors:\n" + ONLY_MESSAGES, tmp_path)
    assert result.returncode == 1
    database = line(result, "database")
    assert database.startswith("✗ database") and "Access denied" in database
    assert "fix: check WA_DB_USERNAME and WA_DB_PASSWORD" in database
    assert WRONG_PASSWORD not in result.stdout + result.stderr


def test_unknown_postgres_user_is_a_cross_with_its_fix(postgres: DatabaseServer,
                                                       tmp_path: Path) -> None:
    # The test server trusts every local login, so a wrong password cannot fail there;
    # a user that does not exist fails the same way a refused login does.
    env = {**postgres.env(new_prefix()), "WA_DB_USERNAME": "wax_nobody"}
    result = check(env, "collectors:\n" + ONLY_MESSAGES, tmp_path)
    assert result.returncode == 1
    database = line(result, "database")
    assert database.startswith("✗ database") and 'role "wax_nobody" does not exist' in database
    # The user is wrong, not the address: the fix says so (it used to send you to the port).
    assert "fix: WA_DB_USERNAME names no role on this PostgreSQL server" in database
    assert "WA_DB_HOSTNAME" not in database


def test_missing_postgres_maintenance_database_points_at_its_setting(
        postgres: DatabaseServer, tmp_path: Path) -> None:
    config = "collectors:\n  messages:\n    maintenance_database: wax_no_such_db\n" \
        + ONLY_MESSAGES
    result = check(postgres.env(new_prefix()), config, tmp_path)
    assert result.returncode == 1
    database = line(result, "database")
    assert 'database "wax_no_such_db" does not exist' in database
    assert "fix: set collectors.messages.maintenance_database" in database


def test_wrong_database_port_is_a_cross_naming_host_and_port(db_server: DatabaseServer,
                                                             tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    result = check(db_server.env(new_prefix(), port=port), "collectors:\n" + ONLY_MESSAGES,
                   tmp_path)
    assert result.returncode == 1
    database = line(result, "database")
    assert database.startswith(f"✗ database  {db_server.engine_name} at 127.0.0.1:{port}")
    assert "fix: check WA_DB_HOSTNAME and WA_DB_PORT" in database


def test_prefix_matching_nothing_names_prefix_and_visible_databases(
        db_server: DatabaseServer, tmp_path: Path) -> None:
    prefix = new_prefix()
    db_server.create_database(prefix + "messagestore", messages=0)
    result = check(db_server.env("wax_nomatch_"), "collectors:\n" + ONLY_MESSAGES, tmp_path)
    assert result.returncode == 1
    database = line(result, "database")
    assert "WA_DB_NAME_PREFIX='wax_nomatch_'" in database
    assert f"{prefix}messagestore" in database  # among the databases this login sees
    assert "fix: set WA_DB_NAME_PREFIX" in database


@pytest.mark.docker
def test_docker_engine_not_answering_is_a_cross_with_its_fix(tmp_path: Path) -> None:
    config = NOTHING_ELSE.replace("  containers:\n    enabled: false\n", "")
    result = check({"DOCKER_HOST": "unix:///nonexistent/docker.sock"}, config, tmp_path)
    assert result.returncode == 1
    engine = line(result, "docker")
    assert engine.startswith("✗ docker") and "unix:///nonexistent/docker.sock" in engine
    assert "fix: start the Docker engine, or point DOCKER_HOST at it" in engine


@pytest.mark.docker
def test_docker_lists_the_wa_containers_and_their_roles(
        docker_client: docker.DockerClient, standin_image: str, compose_project: str,
        tmp_path: Path) -> None:
    webapp = start_wa_container(docker_client, role="webapp", service="waweb",
                                project=compose_project)
    coreapp = start_wa_container(docker_client, role="coreapp", service="wacore",
                                 project=compose_project)
    config = NOTHING_ELSE.replace("  containers:\n    enabled: false\n",
                                  f"  containers:\n    compose_project: {compose_project}\n")
    result = check({}, config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    engine = line(result, "docker")
    assert engine.startswith("✓ docker")
    assert f"{webapp.name} (webapp, running)" in engine
    assert f"{coreapp.name} (coreapp, running)" in engine


def test_wa_api_login_without_gc_and_a_bad_login(tmp_path: Path) -> None:
    with StandIn(users={"admin": "secret"}) as wa:
        env = {"WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}
        good = check(env, NOTHING_ELSE, tmp_path)
        assert good.returncode == 0, good.stdout + good.stderr
        assert line(good, "wa_api").startswith(f"✓ wa_api    {wa.url}: logged in as admin")
        bad = check({**env, "WA_WEB_PASSWORD": WRONG_PASSWORD}, NOTHING_ELSE, tmp_path)
        stats = wa.stats()
    assert bad.returncode == 1
    api = line(bad, "wa_api")
    assert api.startswith("✗ wa_api") and "HTTP 401" in api
    assert "fix: check WA_WEB_USERNAME and WA_WEB_PASSWORD" in api
    assert WRONG_PASSWORD not in bad.stdout + bad.stderr
    assert stats["message_gc_calls"] == 0 and stats["media_gc_calls"] == 0


def test_the_clients_message_gc_off_with_no_gc_schedule_here_is_said(tmp_path: Path) -> None:
    with StandIn() as wa:
        env = {"WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}
        on = check(env, NOTHING_ELSE, tmp_path)
        wa.set_application_settings(garbagecollector_enable={"media": False, "messages": False})
        off = check(env, NOTHING_ELSE, tmp_path)
        stats = wa.stats()
    assert on.returncode == 0 and off.returncode == 0, off.stdout + off.stderr
    assert line(on, "wa_client") == ("✓ wa_client /v1/stats/app: 5 families relayed; the "
                                     "client's own message GC is on; no schedule here runs "
                                     "message GC")
    warned = line(off, "wa_client")
    assert warned.startswith("! wa_client") and "nothing deletes old messages" in warned
    assert "fix: allow gc in actions.allowed" in warned  # a gc schedule: unit-tested
    assert stats["requests"].get("stats_db", 0) == 0  # never read just to check


def test_wa_api_not_configured_while_gc_is_allowed_is_a_cross(tmp_path: Path) -> None:
    config = NOTHING_ELSE + f"actions:\n  allowed: [media_gc]\n  state_dir: {tmp_path}\n"
    result = check({}, config, tmp_path)
    assert result.returncode == 1
    api = line(result, "wa_api")
    assert "'media_gc' is allowed but the WA API is not configured" in api
    assert "fix: set WA_WEB_URL, WA_WEB_USERNAME and WA_WEB_PASSWORD" in api


def test_media_path_missing_is_a_cross_and_present_is_a_tick(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-media"
    config = NOTHING_ELSE.replace("  volume:\n    enabled: false\n",
                                  f"  volume:\n    path: {missing}\n")
    result = check({}, config, tmp_path)
    assert result.returncode == 1
    media = line(result, "media")
    assert media.startswith(f"✗ media     {missing} does not exist")
    assert "fix: mount the WA media volume" in media and "collectors.volume.path" in media

    missing.mkdir()
    result = check({}, config, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert line(result, "media").startswith(f"✓ media     {missing}: ")
    # Binary units, as upgrade-check prints the same volume: "76.8 GiB of 252.0 GiB available"
    shown = re.search(r": ([\d.]+) GiB of ([\d.]+) GiB available", line(result, "media"))
    assert shown, line(result, "media")
    stats = os.statvfs(missing)
    assert float(shown.group(2)) == round(stats.f_blocks * stats.f_frsize / 2**30, 1)
    assert abs(float(shown.group(1)) - stats.f_bavail * stats.f_frsize / 2**30) < 0.5
