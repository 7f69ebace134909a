"""The landing page, rendered by real headless Chromium; the screenshot is kept as an artifact."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import requests

from tests.support import ROOT, run_exporter, unavailable, wait_for

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    unavailable("chromium", "not installed (Debian package chromium)")
    raise AssertionError("unreachable")


def test_landing_page_shows_endpoints_collectors_and_actions(tmp_path: Path) -> None:
    chromium = _chromium()
    token = tmp_path / "token"
    token.write_text("t0k")
    config = f"""
collectors:
  containers: {{enabled: false}}
  logs: {{enabled: false}}
  volume: {{path: /nonexistent/wamedia}}
  volume_scan: {{enabled: false}}
actions:
  allowed: [media_gc]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {tmp_path / 'state'}
  schedules: []
webhook:
  bearer_token_file: {token}
"""
    env = {"WA_DB_ENGINE": "SQLITE", "WA_DB_HOSTNAME": str(tmp_path),
           "WA_WEB_URL": "http://127.0.0.1:9", "WA_WEB_USERNAME": "a", "WA_WEB_PASSWORD": "b"}
    with run_exporter(env=env, config=config, tmp_path=tmp_path) as exp:
        wait_for(lambda: exp.get("/-/ready").status_code == 200, what="ready")
        body = ('{"version":"4","status":"firing","alerts":[{"status":"firing","labels":'
                '{"alertname":"WhatsAppMediaVolumeLowSpace","action":"media_gc"}}]}')
        requests.post(exp.url + "/webhook/alertmanager", data=body, timeout=5, headers={
            "Authorization": "Bearer t0k", "Content-Type": "application/json"})
        wait_for(lambda: "finished" in exp.get("/actions").text, what="the action's record")
        profile = tmp_path / "profile"
        dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                              "--dump-dom", exp.url + "/"], capture_output=True, text=True,
                             timeout=60)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "landing-page.png"
        shot.unlink(missing_ok=True)
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                        "--window-size=1100,900", f"--screenshot={shot}", exp.url + "/"],
                       capture_output=True, timeout=60)
    html = dom.stdout
    assert "<h1>wa-exporter" in html
    for link in ("/metrics", "/-/healthy", "/-/ready", "/actions"):
        assert f'href="{link}"' in html
    assert "<code>messages</code>" in html and "<code>volume</code>" in html
    assert "/nonexistent/wamedia" in html  # the failing collector's last error is shown
    assert "media_gc" in html and ">started<" in html
    assert ">error<" in html and "127.0.0.1:9" in html  # why the run failed: nothing listens
    # No external assets: no scripts, stylesheets, images or fonts from anywhere.
    assert "<script" not in html and "<link" not in html and "src=" not in html
    assert "@import" not in html and "url(" not in html
    assert shot.exists() and shot.stat().st_size > 10_000
