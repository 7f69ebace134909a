"""The exporter's inbound hooks alone, on a real runner with a gated action: who may call
them, what a notification starts, what a forwarded GC callback answers."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import bcrypt
import pytest
from prometheus_client import CollectorRegistry

from exporter.actions.webhook import Webhooks
from exporter.config import Secret, WebhookSettings
from exporter.server import Server
from exporter.transport import Headers, Request
from exporter.webconfig import WebConfig
from tests.unit.test_runner import Gate, audit, make_runner


def notification(*alerts: dict[str, object]) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "receiver": "wa-exporter",
                       "groupKey": "{}:{}", "alerts": list(alerts)}).encode()


def firing(alertname: str, **labels: str) -> dict[str, object]:
    return {"status": "firing", "labels": {"alertname": alertname, **labels},
            "fingerprint": "f" * 16}


def hooks(tmp_path: Path, action: Gate | None = None, **settings: object) -> Webhooks:
    runner, _ = make_runner(tmp_path, action or Gate())
    return Webhooks(WebhookSettings.model_validate(settings), runner)


def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def test_without_auth_configured_anyone_may_call(tmp_path: Path) -> None:
    assert hooks(tmp_path).authorized({})


def test_bearer_token_must_match(tmp_path: Path) -> None:
    webhooks = hooks(tmp_path, bearer_token="t0ken")
    assert webhooks.authorized({"Authorization": "Bearer t0ken"})
    assert webhooks.authorized({"Authorization": "bearer t0ken "})
    assert not webhooks.authorized({"Authorization": "Bearer t0ke"})
    assert not webhooks.authorized({})
    assert not webhooks.authorized(basic("x:t0ken"))  # a token is not a basic password


def test_no_credentials_never_match_even_an_empty_secret(tmp_path: Path) -> None:
    """Settings refuse an empty secret; were one to get through, an empty header still
    would not match it."""
    runner, _ = make_runner(tmp_path, Gate())
    for settings in ({"bearer_token": Secret("")},
                     {"basic_auth_username": "", "basic_auth_password": Secret("")}):
        webhooks = Webhooks(WebhookSettings.model_construct(**settings), runner)
        for header in ("Bearer ", "Bearer", "Basic ", "Basic " + base64.b64encode(b":").decode()):
            assert not webhooks.authorized({"Authorization": header}), (settings, header)


def test_basic_auth_must_match(tmp_path: Path) -> None:
    webhooks = hooks(tmp_path, basic_auth_username="am", basic_auth_password="pw")
    assert webhooks.authorized(basic("am:pw"))
    assert not webhooks.authorized(basic("am:pW"))
    assert not webhooks.authorized(basic("other:pw"))
    assert not webhooks.authorized({"Authorization": "Basic %%%"})
    assert not webhooks.authorized({"Authorization": "Bearer pw"})


def test_a_firing_alert_with_an_action_label_starts_that_action(tmp_path: Path) -> None:
    action = Gate()
    webhooks = hooks(tmp_path, action)
    status, answer = webhooks.alertmanager(notification(firing("WhatsAppMessagesTableLarge",
                                                               action="gc")))
    assert status == 200
    assert [d["outcome"] for d in answer["decisions"]] == ["started"]
    assert action.entered.wait(5)
    action.gate.set()
    assert webhooks.runner.wait_idle(5)


def test_a_resolved_alert_starts_nothing(tmp_path: Path) -> None:
    action = Gate()
    webhooks = hooks(tmp_path, action)
    resolved = firing("WhatsAppMessagesTableLarge", action="gc") | {"status": "resolved"}
    status, answer = webhooks.alertmanager(notification(resolved))
    assert status == 200
    assert [d["outcome"] for d in answer["decisions"]] == ["skipped_resolved"]
    assert not action.runs


@pytest.mark.parametrize(("body", "status", "says"), [
    (b"{not json", 400, "body is not JSON"),
    (json.dumps({"version": "3", "status": "firing", "alerts": []}).encode(), 422,
     "not an Alertmanager v4 notification"),
    (notification(firing("Whatever", action="reboot")), 422, "unknown action"),
])
def test_bad_notifications_get_a_4xx_and_start_nothing(tmp_path: Path, body: bytes, status: int,
                                                       says: str) -> None:
    action = Gate()
    webhooks = hooks(tmp_path, action)
    answered, answer = webhooks.alertmanager(body)
    assert answered == status
    assert says in json.dumps(answer)
    assert not action.runs
    assert all(record.get("outcome") != "started" for record in
               (audit(tmp_path) if (tmp_path / "audit.jsonl").exists() else []))


def test_gc_callbacks_are_handed_on_or_refused(tmp_path: Path) -> None:
    runner, _ = make_runner(tmp_path, Gate())
    received: list[bytes] = []

    def accept(body: bytes) -> list[str]:
        if not body.startswith(b"{"):
            raise ValueError("callback body is not a JSON object")
        received.append(body)
        return ["no_gc_running"]

    assert Webhooks(WebhookSettings(), runner).wa_callback(b"{}")[0] == 404  # GC not set up
    webhooks = Webhooks(WebhookSettings(), runner, accept)
    assert webhooks.wa_callback(b"{}") == (200, {"status": "ok", "accepted": 1,
                                                 "outcomes": ["no_gc_running"]})
    assert webhooks.wa_callback(b"[]") == (400, {"status": "error",
                                                 "error": "callback body is not a JSON object"})
    assert received == [b"{}"]


def test_bcrypt_checks_and_webhooks_run_in_lanes_of_their_own(tmp_path: Path) -> None:
    """A password only bcrypt can check, and a webhook decision, each go to their own pool
    of workers; a scrape with a remembered password goes to the pages' pool."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    web = WebConfig.model_validate({"basic_auth_users": {"prom": hashed}})
    server = Server("127.0.0.1:0", CollectorRegistry(), lambda: True,
                    webhooks=hooks(tmp_path, bearer_token="t0ken"), web=web)
    try:
        def request(method: str, path: str, **headers: str) -> Request:
            fields = Headers()
            for name, value in headers.items():
                fields.add(name, value)
            return Request(method, path, "", "1.1", fields, "127.0.0.1")

        scrape = request("GET", "/metrics", **basic("prom:pw"))
        assert server.lane(scrape) == "auth"  # not yet checked: bcrypt
        assert server.handle(scrape).status == 200
        assert server.lane(scrape) == "page"  # remembered
        assert server.lane(request("GET", "/metrics", **basic("prom:guess"))) == "auth"
        stranger = request("GET", "/metrics", **basic("stranger:pw"))
        # Not refused from the header: bcrypt against a dummy hash, as for a known user.
        assert server.check(stranger) is None and server.lane(stranger) == "auth"
        assert server.handle(stranger).status == 401
        assert server.check(stranger).status == 401  # now remembered
        assert server.lane(request("POST", "/webhook/alertmanager",
                                   Authorization="Bearer t0ken")) == "hook"
        assert server.lane(request("GET", "/-/healthy")) == "page"
    finally:
        server.stop()


@pytest.mark.parametrize("header", [("Content-Length", "100000"),
                                    ("Transfer-Encoding", "chunked")])
def test_a_get_with_a_body_is_refused_from_its_headers(tmp_path: Path,
                                                       header: tuple[str, str]) -> None:
    """No GET route reads a body: refused before it is read, so a client that drips one
    cannot hold a connection for the whole read timeout."""
    server = Server("127.0.0.1:0", CollectorRegistry(), lambda: True,
                    webhooks=hooks(tmp_path, bearer_token="t0ken"))
    try:
        fields = Headers()
        fields.add(*header)
        refusal = server.check(Request("GET", "/metrics", "", "1.1", fields, "127.0.0.1"))
        assert refusal is not None and refusal.status == 413 and refusal.close
        fields = Headers()
        fields.add("Content-Length", "0")
        assert server.check(Request("GET", "/metrics", "", "1.1", fields, "127.0.0.1")) is None
    finally:
        server.stop()
