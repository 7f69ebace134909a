"""Known secret values go through start, check-config, a failed WA login, a failed database
login and webhook errors; none of them may appear in logs, metrics, answers or output."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import requests
import sqlalchemy as sa

from tests.support import ROOT, DatabaseServer, new_prefix, run_exporter, wait_for
from tests.wa_standin.server import StandIn

DB_PASSWORD = "db-pa55word-7Qx"
WA_PASSWORD = "wa-pa55word-9Lm"
TOKEN = "hook-t0ken-5Rz"
SECRETS = (DB_PASSWORD, WA_PASSWORD, TOKEN)


def _clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked into {where}"


def test_secrets_never_show(mysql: DatabaseServer, tmp_path: Path) -> None:
    prefix = new_prefix()
    mysql.create_database(prefix + "main", messages=3)
    user = prefix.rstrip("_")
    with mysql.admin.connect() as conn:
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{DB_PASSWORD}'"))
        conn.execute(sa.text(f"GRANT ALL ON `{prefix}main`.* TO '{user}'@'%'"))
    try:
        _run_through_failures(mysql, prefix, user, tmp_path)
    finally:
        with mysql.admin.connect() as conn:
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))


def _run_through_failures(mysql: DatabaseServer, prefix: str, user: str, tmp_path: Path) -> None:
    (tmp_path / "db-password").write_text(DB_PASSWORD + "\n")
    (tmp_path / "token").write_text(TOKEN)
    env_file = tmp_path / "db.env"
    env_file.write_text(
        f"WA_DB_ENGINE=MYSQL\nWA_DB_HOSTNAME={mysql.host}\nWA_DB_PORT={mysql.port}\n"
        f"WA_DB_USERNAME={user}\nWA_DB_PASSWORD_FILE={tmp_path / 'db-password'}\n"
        f"WA_DB_NAME_PREFIX={prefix}\nWA_WEB_USERNAME=admin\nWA_WEB_PASSWORD={WA_PASSWORD}\n")
    config = f"""
collectors:
  messages: {{interval: 500ms}}
  containers: {{enabled: false}}
  logs: {{enabled: false}}
  volume: {{enabled: false}}
  volume_scan: {{enabled: false}}
actions:
  allowed: [gc, media_gc]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {tmp_path / 'state'}
  cooldown: {{media_gc: 1s}}
  schedules: []
webhook:
  bearer_token_file: {tmp_path / 'token'}
"""
    config_file = tmp_path / "config.yml"
    config_file.write_text(config)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    note = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "X", "action": "media_gc"}}]}
    with StandIn(mysql.url(prefix + "main")) as wa_api:  # knows admin:secret, not our password
        env = {"WA_WEB_URL": wa_api.url}
        check = subprocess.run([sys.executable, "-m", "exporter", "check-config",
                                "--db.env-file", str(env_file), "--config.file",
                                str(config_file)], env={"PATH": "/usr/bin", **env},
                               capture_output=True, text=True, cwd=ROOT)
        assert check.returncode == 0, check.stderr
        _clean(check.stdout + check.stderr, "check-config output")

        with run_exporter(args=["--db.env-file", str(env_file), "--log.level", "debug"],
                          env=env, config=config, tmp_path=tmp_path) as exp:
            exp.wait_metric("whatsapp_db_up", 1.0, database=prefix + "main")
            answers = [requests.post(exp.url + "/webhook/alertmanager", json=note,
                                     headers=headers, timeout=5)]
            # The WA API refuses the login (wrong password): the run ends in an auth error.
            wait_for(lambda: any(r.get("event") == "finished"
                                 for r in exp.get("/actions").json()["records"]),
                     what="the failed media GC")
            # Now the database refuses the user: its password is wrong from here on.
            with mysql.admin.connect() as conn:
                conn.execute(sa.text(f"ALTER USER '{user}'@'%' IDENTIFIED BY 'changed-elsewhere'"))
                conn.execute(sa.text(f"KILL USER '{user}'"))
            exp.wait_metric("whatsapp_db_up", 0.0, database=prefix + "main")
            wait_for(lambda: requests.post(exp.url + "/webhook/alertmanager", json=note,
                                           headers=headers, timeout=5).json()["decisions"][0]
                     ["outcome"] == "skipped_lock_unavailable", what="the lock to fail")
            answers += [
                requests.post(exp.url + "/webhook/alertmanager", data=b"{bad", headers=headers,
                              timeout=5),
                requests.post(exp.url + "/webhook/alertmanager", json=note, timeout=5,
                              headers={"Authorization": f"Bearer {TOKEN}x"}),
                requests.post(exp.url + "/webhook/wa-callback", data=b"[]", headers=headers,
                              timeout=5),
                exp.get("/actions"), exp.get("/"), exp.get("/metrics"),
            ]
            records = exp.get("/actions").json()["records"]
    finished = [r for r in records if r.get("event") == "finished"]
    assert finished and finished[0]["result"] == "error"
    assert finished[0]["error"]["kind"] == "auth"
    assert any("Access denied" in r.get("reason", "") for r in records)  # the lock's reason
    assert [a.status_code for a in answers[1:4]] == [400, 401, 400]
    for answer in answers:
        _clean(answer.text + json.dumps(dict(answer.headers)), f"the answer to {answer.url}")
    _clean(exp.log, "the exporter's log")
    assert "Access denied" in exp.log  # the DB failure itself is reported
    _clean((tmp_path / "state" / "audit.jsonl").read_text(), "the audit log")


def test_no_shell_anywhere() -> None:
    """No shell=True, os.system or os.popen in the exporter; commands are argument lists."""
    for path in (ROOT / "exporter").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = ast.unparse(node.func)
                assert func not in ("os.system", "os.popen"), f"{path}: {func}"
                for keyword in node.keywords:
                    if keyword.arg == "shell":
                        assert isinstance(keyword.value, ast.Constant) and \
                            keyword.value.value is False, f"{path}:{node.lineno} shell="
