"""--web.config.file: real TLS, client certificates and bcrypt basic auth on every endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import bcrypt
import pytest
import requests

from tests.certs_ca import Pki, make_pki
from tests.support import ExporterProcess, run_exporter

PASSWORD = "s3cret-for-prometheus"
ENV = {"WA_DB_ENGINE": "SQLITE"}
QUIET = """
collectors:
  containers: {enabled: false}
  logs: {enabled: false}
  volume: {enabled: false}
  volume_scan: {enabled: false}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _web(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "web.yml"
    path.write_text(text)
    return ["--web.config.file", str(path)]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**ENV, "WA_DB_HOSTNAME": str(tmp_path)}


def _https(exp: ExporterProcess) -> str:
    return exp.url.replace("http://", "https://")


def test_tls_serves_https_and_refuses_plain_http(pki: Pki, tmp_path: Path) -> None:
    args = _web(tmp_path, f"tls_server_config:\n  cert_file: {pki.server_cert}\n"
                          f"  key_file: {pki.server_key}\n")
    with run_exporter(args=args, env=_env(tmp_path), config=QUIET, tmp_path=tmp_path) as exp:
        response = requests.get(_https(exp) + "/metrics", verify=pki.ca, timeout=5)
        assert response.status_code == 200 and "whatsapp_exporter_build_info" in response.text
        with pytest.raises(requests.ConnectionError):
            requests.get(exp.url + "/metrics", timeout=5)
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(_https(exp) + "/metrics", timeout=5)  # our CA is not trusted
        # A refused client costs nothing: the server still answers.
        assert requests.get(_https(exp) + "/-/healthy", verify=pki.ca, timeout=5).ok
    assert "Traceback" not in exp.log


def test_client_certificates_are_required_and_verified(pki: Pki, tmp_path: Path) -> None:
    args = _web(tmp_path, f"tls_server_config:\n  cert_file: {pki.server_cert}\n"
                          f"  key_file: {pki.server_key}\n"
                          "  client_auth_type: RequireAndVerifyClientCert\n"
                          f"  client_ca_file: {pki.ca}\n")
    with run_exporter(args=args, env=_env(tmp_path), config=QUIET, tmp_path=tmp_path) as exp:
        ok = requests.get(_https(exp) + "/metrics", verify=pki.ca,
                          cert=(pki.client_cert, pki.client_key), timeout=5)
        assert ok.status_code == 200
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            requests.get(_https(exp) + "/metrics", verify=pki.ca, timeout=5)
        with pytest.raises((requests.exceptions.SSLError, requests.ConnectionError)):
            requests.get(_https(exp) + "/metrics", verify=pki.ca,
                         cert=(pki.stranger_cert, pki.stranger_key), timeout=5)


def test_basic_auth_guards_metrics_actions_and_webhooks(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=8)).decode()
    args = _web(tmp_path, f"basic_auth_users:\n  prometheus: '{hashed}'\n"
                          "http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
    config = QUIET + f"actions:\n  allowed: [media_gc]\n  state_dir: {tmp_path / 'state'}\n"
    env = {**_env(tmp_path), "WA_WEB_URL": "http://127.0.0.1:9", "WA_WEB_USERNAME": "a",
           "WA_WEB_PASSWORD": "b"}
    # The web config's users also guard the webhook, so no webhook token is needed.
    with run_exporter(args=args, env=env, config=config, tmp_path=tmp_path) as exp:
        good, bad = ("prometheus", PASSWORD), ("prometheus", "wrong")
        for path in ("/metrics", "/actions", "/"):
            assert requests.get(exp.url + path, timeout=5).status_code == 401
            assert requests.get(exp.url + path, auth=bad, timeout=5).status_code == 401
            response = requests.get(exp.url + path, auth=good, timeout=5)
            assert response.status_code == 200 and response.headers["X-Frame-Options"] == "deny"
        assert requests.get(exp.url + "/-/healthy", timeout=5).status_code == 200
        note = json.dumps({"version": "4", "status": "resolved", "alerts": [
            {"status": "resolved", "labels": {"alertname": "X", "action": "media_gc"}}]})
        hook = exp.url + "/webhook/alertmanager"
        headers = {"Content-Type": "application/json"}
        assert requests.post(hook, data=note, headers=headers, timeout=5).status_code == 401
        assert requests.post(hook, data=note, headers=headers, auth=good,
                             timeout=5).status_code == 200
    assert PASSWORD not in exp.log


@pytest.mark.parametrize(("text", "words"), [
    ("basic_auth_users:\n  a: plaintext\n", "basic_auth_users.a: not a bcrypt hash"),
    ("tls_server_config:\n  cert_file: /nope.crt\n  key_file: /nope.key\n",
     "cannot load the certificate"),
    ("tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: "
     "RequireAndVerifyClientCert\n", "client_ca_file: not set"),
    ("tls_server_confg: {}\n", "tls_server_confg: unknown key"),
])
def test_bad_web_config_is_one_line(tmp_path: Path, text: str, words: str) -> None:
    import subprocess
    import sys
    path = tmp_path / "web.yml"
    path.write_text(text)
    result = subprocess.run([sys.executable, "-m", "exporter", "--web.config.file", str(path),
                             "--web.listen-address", "127.0.0.1:0"],
                            env={"PATH": "/usr/bin", **_env(tmp_path)}, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert words in result.stderr and len(result.stderr.strip().splitlines()) == 1
