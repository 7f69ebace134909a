"""Every alert's runbook_url, as the committed rules carry it, opens its own section on the
exporter's /runbooks page: followed against the real exporter process."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from tests.support import ROOT, run_exporter

NO_COLLECTORS = """\
collectors:
  messages: {enabled: false}
  containers: {enabled: false}
  logs: {enabled: false}
  volume: {enabled: false}
  volume_scan: {enabled: false}
"""


def test_every_alerts_runbook_url_opens_its_section_on_the_exporter(tmp_path: Path) -> None:
    groups = yaml.safe_load((ROOT / "alerts" / "wa-exporter.rules.yml").read_text())["groups"]
    rules = [rule for group in groups for rule in group["rules"] if "alert" in rule]
    assert rules
    with run_exporter(config=NO_COLLECTORS, tmp_path=tmp_path) as exporter:
        for rule in rules:
            url = urlsplit(rule["annotations"]["runbook_url"])
            # The default base is the exporter itself, as the compose file publishes it.
            assert (url.scheme, url.netloc) == ("http", "localhost:9864"), rule["alert"]
            response = exporter.get(url.path)
            assert response.status_code == 200, (rule["alert"], url.path)
            assert response.headers["Content-Type"].startswith("text/html")
            section = re.search(rf'<h([1-6]) id="{re.escape(url.fragment)}">(.*?)</h\1>',
                                response.text)
            assert section is not None, f"{rule['alert']}: no #{url.fragment} on {url.path}"
            assert section.group(2) == rule["alert"]
