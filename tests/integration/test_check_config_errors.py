"""``wa-exporter check-config`` on a configuration with several mistakes, run as the operator
runs it: every mistake is named in one run, one line each with its key and its fix, no
secret is printed, and the exit code is 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

SECRET = "pa55-w0rd-7f3c9e"
THREE_MISTAKES = ("collectors:\n  messages:\n    interval: banana\n"
                  "actions:\n  allowed: [nuke]\n"
                  "wa_api:\n  connect_timeout: -1s\n")


def wa_exporter(tmp_path: Path, *args: str, config: str, **variables: str
                ) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "wa-exporter.yml"
    path.write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WA_", "DOCKER_"))}
    return subprocess.run([sys.executable, "-m", "exporter", *args, "--config.file", str(path)],
                          env={**env, **variables}, capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


@pytest.mark.parametrize("args", [("check-config",), ("check-config", "--connect")],
                         ids=["check-config", "connect"])
def test_three_mistakes_are_named_in_one_run(tmp_path: Path, args: tuple[str, ...]) -> None:
    result = wa_exporter(tmp_path, *args, config=THREE_MISTAKES, WA_DB_ENGINE="SQLITE",
                         WA_DB_HOSTNAME=str(tmp_path), WA_DB_PASSWORD=SECRET)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""  # nothing checked, nothing connected to
    lines = result.stderr.splitlines()
    assert [line.split(": ", 3)[2].split("=")[0] for line in lines] == [
        "collectors.messages.interval", "actions.allowed.0", "wa_api.connect_timeout"]
    for line in lines:
        assert line.startswith("wa-exporter: config error: ") and "; fix: " in line, line
    assert "Traceback" not in result.stderr and SECRET not in result.stderr


def test_mistakes_in_the_file_the_database_and_the_wa_api_variables_together(
        tmp_path: Path) -> None:
    db_env = tmp_path / "db.env"
    db_env.write_text(f"WA_DB_ENGINE=MYSQL\nWA_DB_HOSTNAME=db\nWA_DB_PORT=70000\n"
                      f"WA_DB_PASSWORD={SECRET}\n")
    empty = tmp_path / "web-password"
    empty.write_text("\n")
    result = wa_exporter(tmp_path, "check-config", "--db.env-file", str(db_env),
                         config=THREE_MISTAKES, WA_WEB_URL="ftp://wa:9090",
                         WA_WEB_USERNAME="admin", WA_WEB_PASSWORD_FILE=str(empty))
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"wa-exporter: config error: WA_WEB_PASSWORD_FILE: '{empty}' is empty; fix: write the "
        "secret into it",
        "wa-exporter: config error: collectors.messages.interval='banana': is not a duration; "
        "fix: use seconds or a duration such as 500ms, 30s, 5m, 1h",
        "wa-exporter: config error: actions.allowed.0='nuke': is not an action; fix: use one "
        "of gc, media_gc, cleanup (media-gc is media_gc)",
        "wa-exporter: config error: wa_api.connect_timeout='-1s': is not a duration; fix: use "
        "seconds or a duration such as 500ms, 30s, 5m, 1h",
        "wa-exporter: config error: WA_DB_PORT='70000': input should be less than or equal to "
        "65535; fix: set WA_DB_PORT to a TCP port between 1 and 65535 (MySQL 3306, PostgreSQL "
        "5432)",
        "wa-exporter: config error: WA_WEB_URL='ftp://wa:9090': is not an http(s) URL; fix: "
        "set WA_WEB_URL to the webapp's address, e.g. https://127.0.0.1:9090",
    ]
    assert SECRET not in result.stdout + result.stderr


def test_upgrade_check_json_lists_every_mistake(tmp_path: Path) -> None:
    result = wa_exporter(tmp_path, "upgrade-check", "--format", "json", config=THREE_MISTAKES,
                         WA_DB_ENGINE="SQLITE", WA_DB_HOSTNAME=str(tmp_path))
    assert result.returncode == 2, result.stderr
    document = json.loads(result.stdout)
    assert [error.split(": ")[1].split("=")[0] for error in document["errors"]] == [
        "collectors.messages.interval", "actions.allowed.0", "wa_api.connect_timeout"]
    assert document["verdict"] == document["errors"][0]
    assert len(result.stderr.splitlines()) == 3
