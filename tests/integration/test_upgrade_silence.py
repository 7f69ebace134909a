"""The maintenance silence against Debian's real Alertmanager, behind basic auth: created
through API v2 for this instance's WA alerts only, and ended with --unsilence."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import requests

from tests.integration.test_upgrade_check import config, wa_exporter
from tests.promstack import alertmanager
from tests.support import DatabaseServer, new_prefix, wait_for

USER, PASSWORD = "ops", "am-s3cret-passw0rd"
AUTH = (USER, PASSWORD)
INSTANCE = "wa-host-1:9864"
RECEIVER = "route: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n"


def push_alerts(url: str) -> None:
    alerts = [{"labels": {"alertname": name, "instance": instance, "severity": "warning"}}
              for name, instance in (("WhatsAppContainerDown", INSTANCE),
                                     ("WhatsAppDatabaseDown", INSTANCE),
                                     ("WhatsAppContainerDown", "wa-host-2:9864"),
                                     ("NodeFilesystemAlmostFull", INSTANCE))]
    requests.post(url + "/api/v2/alerts", json=alerts, auth=AUTH, timeout=5).raise_for_status()


def alert_states(url: str) -> dict[tuple[str, str], str]:
    response = requests.get(url + "/api/v2/alerts", auth=AUTH, timeout=5)
    response.raise_for_status()
    return {(a["labels"]["alertname"], a["labels"]["instance"]): a["status"]["state"]
            for a in response.json()}


@pytest.fixture
def am(tmp_path: Path) -> Any:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    with alertmanager(tmp_path / "am", RECEIVER,
                      web_config=f"basic_auth_users:\n  {USER}: {hashed}\n", auth=AUTH) as am:
        yield am


def test_silence_mutes_this_instances_wa_alerts_until_unsilenced(
        mysql: DatabaseServer, tmp_path: Path, am: Any) -> None:
    prefix = new_prefix()
    mysql.create_database(prefix + "main", messages=3)
    env = mysql.env(prefix)
    password_file = tmp_path / "am-password"
    password_file.write_text(PASSWORD + "\n")
    am_flags = ["--alertmanager.url", am.url, "--alertmanager.basic-auth.username", USER,
                "--alertmanager.basic-auth.password-file", str(password_file)]
    push_alerts(am.url)
    wait_for(lambda: len(alert_states(am.url)) == 4, what="the alerts in Alertmanager")
    cfg = config(tmp_path)

    before = dt.datetime.now(dt.UTC)
    done = wa_exporter(["upgrade-check", "--format", "json", "--config.file", str(cfg),
                        "--silence", "90m", "--silence.instance", INSTANCE, *am_flags], env)
    assert done.returncode == 0, done.stderr
    silence_id = json.loads(done.stdout)["silence"]["id"]
    assert PASSWORD not in done.stdout + done.stderr

    got = requests.get(f"{am.url}/api/v2/silence/{silence_id}", auth=AUTH, timeout=5).json()
    assert got["status"]["state"] == "active"
    assert sorted((m["name"], m["value"], m["isRegex"]) for m in got["matchers"]) == [
        ("alertname", "WhatsApp.+", True), ("instance", INSTANCE, False)]
    ends = dt.datetime.fromisoformat(got["endsAt"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=89) < ends - before < dt.timedelta(minutes=91)
    states = wait_for(lambda: (s := alert_states(am.url))[
        ("WhatsAppContainerDown", INSTANCE)] == "suppressed" and s, what="suppression")
    assert states == {("WhatsAppContainerDown", INSTANCE): "suppressed",
                      ("WhatsAppDatabaseDown", INSTANCE): "suppressed",
                      ("WhatsAppContainerDown", "wa-host-2:9864"): "active",
                      ("NodeFilesystemAlmostFull", INSTANCE): "active"}

    text = wa_exporter(["upgrade-check", "--config.file", str(cfg), "--unsilence", silence_id,
                        *am_flags], env)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0] == f"silence {silence_id} expired"
    got = requests.get(f"{am.url}/api/v2/silence/{silence_id}", auth=AUTH, timeout=5).json()
    assert got["status"]["state"] == "expired"
    wait_for(lambda: alert_states(am.url)[("WhatsAppContainerDown", INSTANCE)] == "active",
             what="the alert active again")


def test_wrong_credentials_are_a_clear_error_without_the_secret(
        mysql: DatabaseServer, tmp_path: Path, am: Any) -> None:
    prefix = new_prefix()
    mysql.create_database(prefix + "main", messages=3)
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-passw0rd")
    done = wa_exporter(["upgrade-check", "--config.file", str(config(tmp_path)), "--silence",
                        "1h", "--alertmanager.url", am.url,
                        "--alertmanager.basic-auth.username", USER,
                        "--alertmanager.basic-auth.password-file", str(wrong)], mysql.env(prefix))
    assert done.returncode == 3  # the silence asked for could not be made: cannot check
    assert "refused the credentials (HTTP 401)" in done.stderr
    assert "not-the-passw0rd" not in done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("ready: ")  # the report still comes
    silences = requests.get(am.url + "/api/v2/silences", auth=AUTH, timeout=5).json()
    assert silences == []


@pytest.mark.parametrize(("flags", "message"), [
    (["--silence", "2h"], "need --alertmanager.url"),
    (["--silence", "soon", "--alertmanager.url", "http://127.0.0.1:9"],
     "argument --silence: 'soon' is not a duration"),
    (["--unsilence", "x", "--alertmanager.url", "http://127.0.0.1:9",
      "--alertmanager.basic-auth.username", "ops"], "go together"),
])
def test_bad_silence_flags_exit_2(tmp_path: Path, flags: list[str], message: str) -> None:
    done = wa_exporter(["upgrade-check", "--config.file", str(config(tmp_path)), *flags],
                       {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "127.0.0.1"})
    assert done.returncode == 2 and message in done.stderr
