"""The Alertmanager webhook on the real exporter, acting on the WA API stand-in."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import (
    DatabaseServer,
    ExporterProcess,
    new_prefix,
    run_exporter,
    series,
    wait_for,
)
from tests.wa_standin.server import StandIn

TOKEN = "hook-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def notification(*alerts: dict, status: str = "firing") -> dict:
    return {"version": "4", "status": status, "receiver": "wa-exporter", "groupKey": "{}:{}",
            "truncatedAlerts": 0, "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://am", "alerts": list(alerts)}


def alert(action: str | None = "media_gc", status: str = "firing", **labels: str) -> dict:
    all_labels = {"alertname": "WhatsAppMediaVolumeFull", **labels}
    if action is not None:
        all_labels["action"] = action
    return {"status": status, "labels": all_labels, "annotations": {},
            "startsAt": "2026-11-26T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prom", "fingerprint": "abc123"}


def config(tmp_path: Path, extra: str = "") -> str:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    return f"""
collectors:
  messages: {{enabled: false}}
  containers: {{enabled: false}}
  logs: {{enabled: false}}
  volume: {{enabled: false}}
  volume_scan: {{enabled: false}}
actions:
  allowed: [media_gc]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {tmp_path / "state"}
  schedules: []
webhook:
  bearer_token_file: {token}
{extra}"""


@pytest.fixture
def wa_api() -> Iterator[StandIn]:
    with StandIn() as standin:
        yield standin


def wa_env(standin: StandIn) -> dict[str, str]:
    return {"WA_WEB_URL": standin.url, "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}


def post(exporter: ExporterProcess, body: object, headers: dict | None = None,
         raw: bytes | None = None) -> requests.Response:
    data = raw if raw is not None else json.dumps(body).encode()
    return requests.post(exporter.url + "/webhook/alertmanager", data=data, timeout=5,
                         headers={"Content-Type": "application/json", **(headers or AUTH)})


def audit(tmp_path: Path) -> list[dict]:
    path = tmp_path / "state" / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def started_runs(tmp_path: Path) -> int:
    return sum(1 for r in audit(tmp_path) if r.get("outcome") == "started")


def test_firing_alert_starts_the_action_and_answers_fast(wa_api: StandIn, tmp_path: Path) -> None:
    with run_exporter(env=wa_env(wa_api), config=config(tmp_path), tmp_path=tmp_path) as exp:
        wa_api.set_callback(exp.url + "/webhook/wa-callback", AUTH)  # media GC's completion
        started = time.monotonic()
        response = post(exp, notification(alert()))
        elapsed = time.monotonic() - started
        assert response.status_code == 200, response.text
        decisions = response.json()["decisions"]
        assert [d["outcome"] for d in decisions] == ["started"]
        assert elapsed < 0.5
        assert wa_api.wait_until(lambda s: s["media_gc_calls"] >= 1, timeout=10)
        wait_for(lambda: any(r["event"] == "finished" for r in audit(tmp_path)),
                 what="the finished record")
        # Same alert again: inside the cooldown.
        again = post(exp, notification(alert()))
        assert again.json()["decisions"][0]["outcome"] == "skipped_cooldown"
        records = [r for r in exp.get("/actions").json()["records"]
                   if r["event"] in ("decision", "finished")]
        assert [(r["event"], r.get("outcome", r.get("result"))) for r in records] == [
            ("decision", "started"), ("finished", "success"), ("decision", "skipped_cooldown")]
        samples = exp.metrics()
    assert samples[("whatsapp_action_requests_total",
                    (("action", "media_gc"), ("outcome", "started")))] == 1
    assert samples[("whatsapp_gc_runs_total", (("kind", "media"), ("result", "success"),
                                               ("trigger", "alert")))] == 1
    assert wa_api.stats()["media_gc_calls"] == 1


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"Authorization": "Bearer wrong"}, 401),
    ({"Authorization": "Basic YWRtaW46c2VjcmV0"}, 401)])
def test_unauthenticated_calls_are_refused(wa_api: StandIn, tmp_path: Path, headers: dict,
                                           status: int) -> None:
    with run_exporter(env=wa_env(wa_api), config=config(tmp_path), tmp_path=tmp_path) as exp:
        assert post(exp, notification(alert()), headers=headers or {"X": "y"}).status_code == status
    assert started_runs(tmp_path) == 0 and wa_api.stats()["media_gc_calls"] == 0


def test_bad_input_gets_4xx_and_starts_nothing(wa_api: StandIn, tmp_path: Path) -> None:
    with run_exporter(env=wa_env(wa_api), config=config(tmp_path), tmp_path=tmp_path) as exp:
        assert post(exp, None, raw=b"{not json").status_code == 400
        assert post(exp, {"version": "3", "alerts": []}).status_code == 422
        assert post(exp, None, raw=b"x" * (1024 * 1024 + 1)).status_code == 413
        wrong_type = requests.post(exp.url + "/webhook/alertmanager", data=b"a=b", timeout=5,
                                   headers={**AUTH, "Content-Type": "text/plain"})
        assert wrong_type.status_code == 415
        unknown = post(exp, notification(alert(action="reboot")))
        assert unknown.status_code == 422 and "unknown action" in unknown.text
        not_allowed = post(exp, notification(alert(action="cleanup")))
        assert not_allowed.status_code == 422 and "not allowed" in not_allowed.text
        # One bad alert spoils the notification: the good one does not start either.
        mixed = post(exp, notification(alert(), alert(action="reboot")))
        assert mixed.status_code == 422
        resolved = post(exp, notification(alert(status="resolved"), status="resolved"))
        assert resolved.status_code == 200
        assert resolved.json()["decisions"][0]["outcome"] == "skipped_resolved"
        assert exp.get("/-/healthy").status_code == 200
    assert started_runs(tmp_path) == 0 and wa_api.stats()["media_gc_calls"] == 0


labels = st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4)
junk_alert = st.fixed_dictionaries({"status": st.sampled_from(["firing", "resolved", "", 3]),
                                    "labels": st.one_of(labels, st.text(), st.none())})
junk = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: json.dumps(v).encode(),
              st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(
                               st.text(max_size=8), c, max_size=4), max_leaves=12)),
    st.builds(lambda version, alerts: json.dumps({"version": version, "status": "firing",
                                                  "alerts": alerts}).encode(),
              st.sampled_from(["4", "3", 4, None]), st.lists(junk_alert, max_size=3)),
)


def test_malformed_payloads_property(wa_api: StandIn, tmp_path: Path) -> None:
    with run_exporter(env=wa_env(wa_api), config=config(tmp_path), tmp_path=tmp_path) as exp:
        @settings(max_examples=150, deadline=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(body=junk)
        def check(body: bytes) -> None:
            response = post(exp, None, raw=body)
            if response.status_code == 200:
                # Only a valid v4 notification whose alerts are all resolved may pass.
                assert all(d["outcome"] == "skipped_resolved"
                           for d in response.json()["decisions"]), body
            else:
                assert 400 <= response.status_code < 500, (response.status_code, body)

        check()
        assert exp.get("/-/healthy").status_code == 200
    assert started_runs(tmp_path) == 0 and wa_api.stats()["media_gc_calls"] == 0


def test_refuses_to_start_a_webhook_without_auth(wa_api: StandIn, tmp_path: Path) -> None:
    path = tmp_path / "noauth.yml"
    path.write_text(config(tmp_path).split("webhook:")[0])
    import subprocess
    import sys
    env = {"PATH": "/usr/bin", **wa_env(wa_api)}
    result = subprocess.run([sys.executable, "-m", "exporter", "--config.file", str(path),
                             "--web.listen-address", "127.0.0.1:0"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "webhook: no authentication configured" in result.stderr
    with run_exporter(args=["--webhook.no-auth"], env=wa_env(wa_api),
                      config=config(tmp_path).split("webhook:")[0], tmp_path=tmp_path) as exp:
        assert post(exp, notification(alert()), headers={"X": "y"}).status_code == 200


@pytest.mark.mysql
def test_killed_mid_gc_leaves_an_interrupted_record_and_no_duplicate(
        mysql: DatabaseServer, tmp_path: Path) -> None:
    prefix = new_prefix()
    mysql.create_database(prefix + "main", messages=200)
    url = mysql.url(prefix + "main")
    env = {**mysql.env(prefix)}
    cfg = config(tmp_path).replace("allowed: [media_gc]", "allowed: [gc]")
    with StandIn(url, gc_delay=30) as standin:
        env.update(wa_env(standin))
        with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exp:
            response = post(exp, notification(alert(action="gc")))
            assert response.json()["decisions"][0]["outcome"] == "started"
            assert standin.wait_until(lambda s: s["message_gc_calls"] >= 1, timeout=15)
            exp.stop(signal.SIGKILL)
        with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exp:
            again = post(exp, notification(alert(action="gc")))
            assert again.json()["decisions"][0]["outcome"] == "skipped_cooldown"
    finished = [r for r in audit(tmp_path) if r["event"] == "finished"]
    assert len(finished) == 1 and finished[0]["result"] == "interrupted"
    assert started_runs(tmp_path) == 1


@pytest.mark.parametrize("coreapps", [(), ("wacore1", "wacore2")], ids=["single", "multiconnect"])
def test_gc_completes_by_the_forwarded_callback(db_server: DatabaseServer, tmp_path: Path,
                                                coreapps: tuple[str, ...]) -> None:
    """Alert -> webhook -> WA GC -> the WA client's callback forwarded to us -> metrics, the
    deletions counted under the database (from the row counts) and each node's callback."""
    prefix = new_prefix()
    engine = db_server.create_database(prefix + "main", messages=300)
    with engine.connect() as conn:
        import sqlalchemy as sa
        read = conn.execute(sa.text("SELECT COUNT(*) FROM messages WHERE status = 'read'")
                            ).scalar_one()
    cfg = config(tmp_path).replace("allowed: [media_gc]", "allowed: [gc]")
    with StandIn(db_server.url(prefix + "main"), gc_delay=0.2, multiconnect=coreapps) as standin:
        env = {**db_server.env(prefix), **wa_env(standin)}
        with run_exporter(env=env, config=cfg, tmp_path=tmp_path) as exp:
            standin.set_callback(exp.url + "/webhook/wa-callback", AUTH)
            assert post(exp, notification(alert(action="gc"))).status_code == 200
            finished = wait_for(lambda: [r for r in audit(tmp_path)
                                         if r["event"] == "finished"], timeout=30,
                                what="the GC run to finish")
            # The metrics follow the "finished" record: the runner writes it first.
            samples = exp.wait_metric("whatsapp_gc_runs_total", 1.0, kind="message",
                                      result="success", trigger="alert")
    assert finished[0]["result"] == "success"
    assert finished[0]["messages_deleted"] == read
    assert finished[0]["rows_after"] == 300 - read
    rounds = [r for r in audit(tmp_path) if r["event"] == "round"]
    assert rounds[0]["completed_by"] == "callback"
    deleted = {dict(labels)["node"]: v for labels, v in
               series(samples, "whatsapp_gc_messages_deleted_total").items()
               if dict(labels)["database"] == prefix + "main"}
    nodes = [node["node"] or "" for node in finished[0]["nodes"]]
    assert sorted(deleted) == sorted(nodes) and len(nodes) == max(1, len(coreapps))
    assert sum(deleted.values()) == read
    assert samples[("whatsapp_gc_rows_after_last_success",
                    (("database", prefix + "main"),))] == 300 - read
    assert samples[("whatsapp_gc_runs_total", (("kind", "message"), ("result", "success"),
                                               ("trigger", "alert")))] == 1
    assert samples[("whatsapp_gc_last_success_timestamp_seconds", (("kind", "message"),))] > 0


def test_callback_endpoint_needs_auth_and_valid_json(wa_api: StandIn, tmp_path: Path) -> None:
    cfg = config(tmp_path).replace("allowed: [media_gc]", "allowed: [media_gc]")
    with run_exporter(env=wa_env(wa_api), config=cfg, tmp_path=tmp_path) as exp:
        url = exp.url + "/webhook/wa-callback"
        body = {"services": [{"message": {"gc": {"messages_deleted": 5, "status": "complete"}}}]}
        assert requests.post(url, json=body, timeout=5).status_code == 401
        assert requests.post(url, json=body, headers=AUTH, timeout=5).status_code == 200
        bad = requests.post(url, json={"services": "x"}, headers=AUTH, timeout=5)
        assert bad.status_code == 400


def raw_exchange(exp: ExporterProcess, request: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes no HTTP library would send; what the server answered before closing."""
    import socket
    host, port = exp.address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_hostile_bodies_and_headers_get_4xx_and_start_nothing(wa_api: StandIn,
                                                              tmp_path: Path) -> None:
    with run_exporter(env=wa_env(wa_api), config=config(tmp_path), tmp_path=tmp_path) as exp:
        deep = post(exp, None, raw=b"[" * 100_000 + b"]" * 100_000)
        assert deep.status_code == 400 and "nested too deeply" in deep.text
        digits = json.dumps(notification(alert())).replace('"truncatedAlerts": 0',
                                                          '"truncatedAlerts": ' + "9" * 5000)
        huge = post(exp, None, raw=digits.encode())
        assert huge.status_code == 400, huge.text
        for hook in ("alertmanager", "wa-callback"):
            head = (f"POST /webhook/{hook} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
                    "\r\nContent-Type: application/json\r\n")
            for lengths in ("Content-Length: 2\r\nContent-Length: 2\r\n",
                            "Content-Length: \u0662\r\n", "Content-Length: 2 2\r\n"):
                answer = raw_exchange(exp, (head + lengths + "\r\n{}").encode())
                assert answer.startswith(b"HTTP/1.1 400 "), (lengths, answer[:100])
        callback = requests.post(exp.url + "/webhook/wa-callback", headers=AUTH, timeout=5,
                                 data=b'{"services":' * 50_000)
        assert callback.status_code == 400
        actions = exp.get("/actions?limit=" + "7" * 5000)
        assert actions.status_code == 400 and "limit" in actions.text
        assert exp.get("/actions?limit=5").status_code == 200
        assert exp.get("/-/healthy").status_code == 200
    assert started_runs(tmp_path) == 0 and wa_api.stats()["media_gc_calls"] == 0
    assert "Traceback" not in exp.log and "level=error" not in exp.log


def test_webhook_paths_answer_get_and_head_at_once(wa_api: StandIn, tmp_path: Path) -> None:
    with run_exporter(env=wa_env(wa_api), config=config(tmp_path), tmp_path=tmp_path) as exp:
        for method in ("GET", "HEAD"):
            for hook in ("alertmanager", "wa-callback"):
                url = f"{exp.url}/webhook/{hook}"
                assert requests.request(method, url, timeout=2).status_code == 401
                assert requests.request(method, url, headers=AUTH, timeout=2).status_code == 405


def test_a_rejected_notification_names_every_alert(wa_api: StandIn, tmp_path: Path) -> None:
    good = alert(alertname="GoodOne")
    good["fingerprint"] = "f-good"
    twin = alert(alertname="GoodTwin")
    twin["fingerprint"] = "f-twin"
    bad = alert(action="reboot", alertname="BadOne")
    bad["fingerprint"] = "f-bad"
    with run_exporter(env=wa_env(wa_api), config=config(tmp_path), tmp_path=tmp_path) as exp:
        response = post(exp, notification(good, twin, bad))
    assert response.status_code == 422
    answered = {(d["alertname"], d["fingerprint"], d["outcome"])
                for d in response.json()["decisions"]}
    assert answered == {("GoodOne", "f-good", "rejected"), ("GoodTwin", "f-twin", "rejected"),
                        ("BadOne", "f-bad", "rejected")}
    reasons = {d["alertname"]: d["reason"] for d in response.json()["decisions"]}
    assert "BadOne" in reasons["GoodOne"] and "unknown action" in reasons["BadOne"]
    logged = {(r["alertname"], r["fingerprint"]) for r in audit(tmp_path)}
    assert logged == {("GoodOne", "f-good"), ("GoodTwin", "f-twin"), ("BadOne", "f-bad")}
    assert started_runs(tmp_path) == 0


def test_huge_labels_cannot_flood_the_audit_log(wa_api: StandIn, tmp_path: Path) -> None:
    big = "x" * 1_000_000
    with run_exporter(env=wa_env(wa_api), config=config(tmp_path), tmp_path=tmp_path) as exp:
        assert post(exp, notification(alert(status="resolved"), status="resolved")
                    ).status_code == 200
        # 12 notifications, each copying a 1 MB label into its decision and reason.
        for sent in [alert(action="reboot", alertname=big), alert(action=big),
                     alert(action="cleanup", container=big)] * 4:
            response = post(exp, notification(sent))
            assert response.status_code == 422, response.status_code
            assert len(response.content) < 4096
    records = audit(tmp_path)
    assert not (tmp_path / "state" / "audit.jsonl.1").exists()
    assert records[0]["outcome"] == "skipped_resolved" and len(records) == 13
    text = (tmp_path / "state" / "audit.jsonl").read_text()
    assert len(text) < 13 * 2048 and "[cut 999800 characters]" in text
