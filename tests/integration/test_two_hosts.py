"""One exporter per Docker host, all sharing the WA database: two real Docker engines (the
second started by the test, with an engine ID of its own), stand-in WA containers on each —
some named alike, as compose names them — and one database holding the cross-replica locks.

A container is only unique on its engine: the lock of a cleanup names the engine too, so
same-named containers on two hosts never block each other, while replicas watching the
same engine still share it. Alertmanager (the example configuration, for real) sends every
notification to every exporter; each acts on the alerts it reported (its ``instance``)
and records the others as ``skipped_other_host``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
import requests
import yaml
from docker.models.containers import Container
from prometheus_client import CollectorRegistry

from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import Request
from exporter.actions.cleanup import CleanupAction
from exporter.actions.runner import Runner
from exporter.collectors.actions import ActionMetrics
from exporter.config import (
    ActionsSettings,
    CleanupSettings,
    ContainersSettings,
    DatabaseSettings,
    MessagesSettings,
)
from exporter.sources.database import open_source
from exporter.sources.docker import ContainerDirectory, DockerEngine, client_from_env
from exporter.sources.locks import cluster_lock
from tests.docker_support import (
    ARCHIVE_DIR,
    DockerUnavailable,
    Engine,
    fill_archive,
    list_dir,
    remove_test_containers,
    second_engine,
    start_wa_container,
)
from tests.promstack import alertmanager, wait_until
from tests.support import ROOT, DatabaseServer, new_prefix, run_exporter, unavailable, value

pytestmark = pytest.mark.docker

TOKEN = "two-hosts-webhook-token"


@pytest.fixture(scope="module")
def engine_b(docker_client: docker.DockerClient, standin_image: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Host B's Docker engine; host A's is the machine's own."""
    try:
        with second_engine(tmp_path_factory.mktemp("engine") / "b") as engine:
            assert engine.identity != docker_client.info()["ID"]
            yield engine
    except DockerUnavailable as exc:
        unavailable("a second Docker engine", exc)


@pytest.fixture
def hosts(docker_client: docker.DockerClient, engine_b: Engine, project: str
          ) -> Iterator[dict[str, Container]]:
    """Host A: waweb and wacore; host B: waweb (the same name as A's) and wacore2. Every
    archive holds 35 files, 5 more than cleanup.sh keeps."""
    on_a = {service: start_wa_container(docker_client, role=role, service=service,
                                        project=project)
            for service, role in (("waweb", "webapp"), ("wacore", "coreapp"))}
    on_b = {service: start_wa_container(engine_b.client, role=role, service=service,
                                        project=project, network_mode="none")
            for service, role in (("waweb", "webapp"), ("wacore2", "coreapp"))}
    assert on_a["waweb"].name == on_b["waweb"].name
    containers = {f"a/{k}": c for k, c in on_a.items()} | {f"b/{k}": c for k, c in on_b.items()}
    for container in containers.values():
        fill_archive(container, 35)
    yield containers
    remove_test_containers(engine_b.client, project)


def archive_files(container: Container) -> int:
    return len(list_dir(container, ARCHIVE_DIR))


def directory_on(url: str | None, project: str) -> ContainerDirectory:
    environment = {"DOCKER_HOST": url} if url else {}

    def factory(**kwargs: Any) -> docker.DockerClient:
        return client_from_env(environment=environment, **kwargs)

    return ContainerDirectory(DockerEngine(timeout=30, factory=factory),
                              ContainersSettings(compose_project=project))


@contextlib.contextmanager
def replicas(db_server: DatabaseServer, tmp_path: Path, project: str,
             engines: dict[str, str | None]) -> Iterator[dict[str, Runner]]:
    """A cleanup runner per name, on the engine at that URL (None: the machine's own), each
    with its own state directory and database session, all on one WA database."""
    prefix = new_prefix()
    db_server.create_database(prefix + "main", messages=1).dispose()
    db = DatabaseSettings.model_validate(db_server.env(prefix))
    sources, runners = [], {}
    for name, url in engines.items():
        state_dir = tmp_path / name
        source = open_source(db, MessagesSettings())
        sources.append(source)
        settings = ActionsSettings(allowed=["cleanup"], state_dir=state_dir, window="always")
        action = CleanupAction(directory_on(url, project), CleanupSettings(timeout=60))
        runners[name] = Runner({"cleanup": action}, settings,
                               AuditLog(state_dir / "audit.jsonl"),
                               StateFile(state_dir / "state.json"),
                               cluster_lock(source, state_dir, settings.lock_timeout),
                               ActionMetrics(CollectorRegistry(), ["cleanup"]))
    try:
        yield runners
    finally:
        for runner in runners.values():
            runner.wait_idle(60)
        for source in sources:
            source.close()


def test_same_named_containers_on_two_hosts_do_not_share_a_cleanup_lock(
        db_server: DatabaseServer, engine_b: Engine, hosts: dict[str, Container],
        project: str, tmp_path: Path) -> None:
    name = hosts["a/waweb"].name
    with replicas(db_server, tmp_path, project, {"a": None, "b": engine_b.url}) as runners:
        assert runners["a"].submit(Request("cleanup", "alert", name)).outcome == "started"
        assert runners["a"].wait_idle(60)
        # Host A's cleanup of its waweb holds a cooldown lock in the shared database; host
        # B's waweb is another container, whatever its name.
        decision = runners["b"].submit(Request("cleanup", "alert", name))
        assert decision.outcome == "started", decision
        assert runners["b"].wait_idle(60)
    assert archive_files(hosts["a/waweb"]) == 30
    assert archive_files(hosts["b/waweb"]) == 30
    assert archive_files(hosts["a/wacore"]) == 35  # only the container named


def test_the_daily_cleanup_of_every_container_runs_on_both_hosts(
        db_server: DatabaseServer, engine_b: Engine, hosts: dict[str, Container],
        project: str, tmp_path: Path) -> None:
    with replicas(db_server, tmp_path, project, {"a": None, "b": engine_b.url}) as runners:
        for host in "ab":
            decision = runners[host].submit(Request("cleanup", "schedule"))
            assert decision.outcome == "started", decision
            assert decision.targets == sorted(c.name for key, c in hosts.items()
                                              if key.startswith(host + "/")), decision
            assert runners[host].wait_idle(60)
    assert {key: archive_files(c) for key, c in hosts.items()} == dict.fromkeys(hosts, 30)


def test_replicas_watching_one_engine_still_share_the_lock_of_a_container(
        db_server: DatabaseServer, hosts: dict[str, Container], project: str,
        tmp_path: Path) -> None:
    name = hosts["a/waweb"].name
    with replicas(db_server, tmp_path, project, {"a1": None, "a2": None}) as runners:
        assert runners["a1"].submit(Request("cleanup", "alert", name)).outcome == "started"
        assert runners["a1"].wait_idle(60)
        decision = runners["a2"].submit(Request("cleanup", "alert", name))
        assert decision.outcome == "skipped_cooldown", decision
        assert decision.reason == f"cleanup:{name} ran on another replica within its cooldown"


# --- two exporter processes behind the example Alertmanager configuration -----------------


def alertmanager_config(hooks: list[str], token_file: Path) -> str:
    """Our example with these exporters' URLs, test-time intervals and no e-mail."""
    config: dict[str, Any] = yaml.safe_load(
        (ROOT / "alerts" / "alertmanager.example.yml").read_text())
    for receiver in config["receivers"]:
        if receiver["name"] == "wa-exporter":
            # One webhook_config per exporter, like the example's (its comment says so).
            [example] = receiver["webhook_configs"]
            example["http_config"]["authorization"]["credentials_file"] = str(token_file)
            receiver["webhook_configs"] = [{**example, "url": url + "/webhook/alertmanager"}
                                           for url in hooks]
        else:
            receiver.pop("email_configs", None)  # nothing may leave this machine
    for route in [config["route"], *config["route"].get("routes", [])]:
        route.update({"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"})
    return yaml.safe_dump(config)


def exporter_config(project: str, state: Path, token_file: Path, instance: str) -> str:
    return f"""
collectors:
  messages: {{enabled: false}}
  logs: {{enabled: false}}
  volume: {{enabled: false}}
  volume_scan: {{enabled: false}}
  containers: {{interval: 1s, compose_project: {project}}}
actions:
  allowed: [cleanup]
  window: always  # alerts act at once here (the window's own tests: test_deferred)
  state_dir: {state}
  schedules: []
  instances: ["{instance}"]
webhook:
  bearer_token_file: {token_file}
"""


def fire(am: Any, container: str, instance: str) -> None:
    alert = {"labels": {"alertname": "WhatsAppLogArchiveTooManyFiles", "action": "cleanup",
                        "severity": "warning", "job": "wa-exporter", "instance": instance,
                        "container": container, "role": "webapp"},
             "annotations": {"summary": "Old WA log archives are not being removed."}}
    requests.post(am.url + "/api/v2/alerts", json=[alert], timeout=10).raise_for_status()


def decisions(state: Path) -> list[dict[str, Any]]:
    path = state / "audit.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines())
            if r["event"] == "decision"] if path.exists() else []


def test_alertmanager_sends_to_every_exporter_and_each_cleans_only_its_own_host(
        mysql: DatabaseServer, engine_b: Engine, hosts: dict[str, Container], project: str,
        tmp_path: Path) -> None:
    prefix = new_prefix()
    mysql.create_database(prefix + "main", messages=1).dispose()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    state = {host: tmp_path / f"state-{host}" for host in "ab"}
    instance = {"a": "wa-host-a:9864", "b": "wa-host-b:9864"}
    env_b = {**mysql.env(prefix), "DOCKER_HOST": engine_b.url}
    with run_exporter(env=mysql.env(prefix), tmp_path=tmp_path, config=exporter_config(
            project, state["a"], token_file, instance["a"])) as exporter_a, \
            run_exporter(env=env_b, tmp_path=tmp_path, config=exporter_config(
                project, state["b"], token_file, instance["b"])) as exporter_b, \
            alertmanager(tmp_path / "am", alertmanager_config(
                [exporter_a.url, exporter_b.url], token_file)) as am:
        # Both hosts' waweb (one name) at once, then host B's wacore2 (unknown on host A).
        fire(am, hosts["a/waweb"].name, instance["a"])
        fire(am, hosts["b/waweb"].name, instance["b"])
        wait_until("both hosts' waweb archives are trimmed", lambda: archive_files(
            hosts["a/waweb"]) == 30 and archive_files(hosts["b/waweb"]) == 30, timeout=60)
        fire(am, hosts["b/wacore2"].name, instance["b"])
        wait_until("host B's wacore2 archive is trimmed",
                   lambda: archive_files(hosts["b/wacore2"]) == 30, timeout=60)
        wait_until("host A records host B's alerts", lambda: sum(
            d["outcome"] == "skipped_other_host" for d in decisions(state["a"])) == 2, 30)
        samples = {host: exporter.metrics() for host, exporter in
                   (("a", exporter_a), ("b", exporter_b))}
    assert archive_files(hosts["a/wacore"]) == 35  # no alert named it
    for host, other in (("a", "b"), ("b", "a")):
        made = decisions(state[host])
        started = [d for d in made if d["outcome"] == "started"]
        assert all(d["instance"] == instance[host] for d in started), started
        skipped = [d for d in made if d["outcome"] == "skipped_other_host"]
        assert skipped and all(d["instance"] == instance[other] for d in skipped), made
        assert not [d for d in made if d["outcome"] == "rejected"], made
        assert value(samples[host], "whatsapp_action_requests_total", action="cleanup",
                     outcome="skipped_other_host") == len(skipped)
    assert sorted(d["targets"] for d in decisions(state["b"]) if d["outcome"] == "started") \
        == sorted([[hosts["b/waweb"].name], [hosts["b/wacore2"].name]])
