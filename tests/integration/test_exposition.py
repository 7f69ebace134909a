"""The whole exposition through promtool's lint: every family the code exports, each with
samples, from a real exporter watching MariaDB, stand-in WA containers, a media directory and
the WA API stand-in, after a message GC (its callback forwarded), a media GC and a cleanup
ran.

The families come from the code (``exported_metrics()``), not from a list kept here, so a
family added later is linted too; if this setup does not make it appear, the test says which.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.docker_support import fill_archive, start_wa_container
from tests.integration.test_webhook import AUTH, TOKEN, alert, notification, wa_env
from tests.support import (
    DatabaseServer,
    ExporterProcess,
    exported_metrics,
    new_prefix,
    run_exporter,
    wait_for,
)
from tests.wa_standin.schema import insert_messages
from tests.wa_standin.server import StandIn

pytestmark = [pytest.mark.docker, pytest.mark.mysql]


def families_with_samples(text: str) -> set[str]:
    """Family names as exported_metrics() spells them: counters with ``_total``."""
    found = set()
    for family in text_string_to_metric_families(text):
        if family.samples:
            found.add(family.name + "_total" if family.type == "counter" else family.name)
    return found


def fire(exporter: ExporterProcess, action: str, **labels: str) -> None:
    response = requests.post(exporter.url + "/webhook/alertmanager", timeout=5, headers=AUTH,
                             json=notification(alert(action, **labels)))
    assert response.status_code < 300, response.text


def test_every_exported_family_has_samples_and_passes_promtool_lint(
        mysql: DatabaseServer, client: docker.DockerClient, project: str,
        tmp_path: Path) -> None:
    prefix = new_prefix()
    engine = mysql.create_database(prefix + "main", messages=0)
    insert_messages(engine, 5, read_fraction=1.0)  # message GC deletes them all
    media = tmp_path / "media"
    media.mkdir()
    (media / "a.jpg").write_bytes(b"x" * 100)
    # The webapp mounts the media directory the exporter reads (its mount's source).
    start_wa_container(client, role="webapp", service="waweb", project=project,
                       volumes={str(media): {"bind": "/usr/local/wamedia", "mode": "rw"}})
    core = start_wa_container(client, role="coreapp", service="wacore", project=project)
    fill_archive(core, 3, prefix="coreapp.log")
    token = tmp_path / "token"
    token.write_text(TOKEN)
    config = f"""
collectors:
  messages: {{interval: 1s}}
  containers: {{interval: 1s, compose_project: {project}}}
  logs: {{interval: 1s}}
  volume: {{interval: 1s, path: {media}}}
  volume_scan: {{interval: 1s}}
actions:
  allowed: [gc, media_gc, cleanup]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {tmp_path / "state"}
  schedules: []
webhook:
  bearer_token_file: {token}
"""
    expected = set(exported_metrics())
    with StandIn(mysql.url(prefix + "main")) as wa_api, run_exporter(
            env={**mysql.env(prefix), **wa_env(wa_api)}, config=config,
            tmp_path=tmp_path) as exporter:
        wa_api.set_callback(exporter.url + "/webhook/wa-callback", AUTH)
        exporter.wait_metric("whatsapp_container_up", 1.0, container=core.name, role="coreapp")
        fire(exporter, "gc")
        fire(exporter, "media_gc")
        fire(exporter, "cleanup", container=core.name)

        def missing() -> set[str]:
            return expected - families_with_samples(exporter.get("/metrics").text)

        try:
            wait_for(lambda: not missing(), timeout=30, what="every family in /metrics")
        except AssertionError:
            pytest.fail(f"families without samples in this setup: {sorted(missing())}\n"
                        + exporter.log)
        text = exporter.get("/metrics").text

    result = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                            capture_output=True, timeout=30)
    assert result.returncode == 0 and not result.stdout and not result.stderr, (
        result.stdout.decode() + result.stderr.decode())
