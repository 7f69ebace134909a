"""What each WA container has at the media path, read from the real Docker engine: stand-in
containers started with the media volume read-write, read-only, a bind mount instead, and
none; the exporter's metrics, promtool's lint, and the alerts on real Prometheus."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
import yaml
from docker.errors import NotFound

from tests.docker_support import remove_test_containers, start_wa_container
from tests.integration.test_containers import config
from tests.promstack import alerts, prometheus, wait_until
from tests.support import ROOT, run_exporter, series

pytestmark = pytest.mark.docker

MEDIA = "/usr/local/wamedia"


@pytest.fixture
def install(client: docker.DockerClient, project: str, tmp_path: Path
            ) -> Iterator[dict[str, docker.models.containers.Container]]:
    """A WA install whose wiring is wrong in every way the guide warns about."""
    volume = f"{project}_whatsappMedia"
    bound = tmp_path / "media-on-the-host"
    bound.mkdir()
    rw = {volume: {"bind": MEDIA, "mode": "rw"}}
    try:
        yield {
            "waweb": start_wa_container(client, role="webapp", service="waweb",
                                        project=project, volumes=rw),
            "wacore1": start_wa_container(client, role="coreapp", service="wacore1",
                                          project=project, volumes=rw),
            "wacore2": start_wa_container(client, role="coreapp", service="wacore2",
                                          project=project,
                                          volumes={volume: {"bind": MEDIA, "mode": "ro"}}),
            "wacore3": start_wa_container(client, role="coreapp", service="wacore3",
                                          project=project),
            # Read-write, but another source: media it stores the others cannot serve.
            "wacore4": start_wa_container(client, role="coreapp", service="wacore4",
                                          project=project,
                                          volumes={str(bound): {"bind": MEDIA + "/",
                                                                "mode": "rw"}}),
            # The guide asks nothing of masters.
            "master1": start_wa_container(client, role="master", service="master1",
                                          project=project),
        }
    finally:
        remove_test_containers(client, project)
        with contextlib.suppress(NotFound):
            client.volumes.get(volume).remove()


def test_each_containers_media_mount_is_reported_with_its_mode_and_source(
        install: dict, project: str, tmp_path: Path) -> None:
    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
        samples = exporter.wait_metric("whatsapp_exporter_collector_success", 1.0,
                                       collector="containers")
        text = exporter.get("/metrics").text
    modes = {dict(labels)["container"]: dict(labels)["mode"]
             for labels, v in series(samples, "whatsapp_container_media_mount").items()
             if v == 1}
    assert modes == {install["waweb"].name: "rw", install["wacore1"].name: "rw",
                     install["wacore2"].name: "ro", install["wacore3"].name: "none",
                     install["wacore4"].name: "rw", install["master1"].name: "none"}
    # A state set: every container has all three modes, so none is a series, not a gap.
    assert len(series(samples, "whatsapp_container_media_mount")) == 3 * len(install)
    sources = {dict(labels)["container"]: (dict(labels)["type"], dict(labels)["source"])
               for labels in series(samples, "whatsapp_container_media_mount_info")}
    volume = f"{project}_whatsappMedia"
    assert sources == {install["waweb"].name: ("volume", volume),
                       install["wacore1"].name: ("volume", volume),
                       install["wacore2"].name: ("volume", volume),
                       install["wacore4"].name: ("bind", str(tmp_path / "media-on-the-host"))}
    roles = {dict(labels)["container"]: dict(labels)["role"]
             for labels in series(samples, "whatsapp_container_media_mount_info")}
    assert roles[install["wacore2"].name] == "coreapp"
    lint = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30)
    complaints = (lint.stdout + lint.stderr).decode()
    assert "whatsapp_container_media" not in complaints, complaints


def test_a_mount_changed_by_recreating_the_container_is_followed(
        client: docker.DockerClient, project: str, tmp_path: Path) -> None:
    volume = f"{project}_whatsappMedia"
    web = start_wa_container(client, role="webapp", service="waweb", project=project)
    try:
        with run_exporter(config=config(project), tmp_path=tmp_path) as exporter:
            exporter.wait_metric("whatsapp_container_media_mount", 1.0, container=web.name,
                                 role="webapp", mode="none")
            web.remove(force=True)
            web = start_wa_container(client, role="webapp", service="waweb", project=project,
                                     volumes={volume: {"bind": MEDIA, "mode": "rw"}})
            samples = exporter.wait_metric("whatsapp_container_media_mount", 1.0,
                                           container=web.name, role="webapp", mode="rw")
            assert series(samples, "whatsapp_container_media_mount_info") == {
                (("container", web.name), ("role", "webapp"), ("source", volume),
                 ("type", "volume")): 1.0}
    finally:
        remove_test_containers(client, project)
        with contextlib.suppress(NotFound):
            client.volumes.get(volume).remove()


def _rules(tmp_path: Path) -> Path:
    out = tmp_path / "rules.yml"
    subprocess.run([sys.executable, str(ROOT / "alerts" / "render.py"), "-o", str(out),
                    "--set", "media_mount_for=1s"], check=True, capture_output=True)
    return out


def test_the_alerts_fire_on_real_prometheus_for_exactly_the_miswired_containers(
        install: dict, project: str, tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed")
    with run_exporter(config=config(project), tmp_path=tmp_path) as exporter, \
            prometheus(tmp_path / "prom", yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(_rules(tmp_path))],
                "scrape_configs": [{"job_name": "wa-exporter", "static_configs": [
                    {"targets": [exporter.address]}]}]})) as prom:
        not_writable = wait_until("WhatsAppMediaVolumeNotWritable fires", lambda: len(
            found := alerts(prom, "WhatsAppMediaVolumeNotWritable")) == 2 and found, 30)
        split = wait_until("WhatsAppMediaVolumeSourcesDiffer fires", lambda: alerts(
            prom, "WhatsAppMediaVolumeSourcesDiffer"), 30)
    assert {(a["labels"]["container"], a["labels"]["mode"]) for a in not_writable} == {
        (install["wacore2"].name, "ro"), (install["wacore3"].name, "none")}
    assert len(split) == 1 and split[0]["labels"]["instance"] == exporter.address
    assert "2 different sources" in split[0]["annotations"]["description"]
