"""One exporter per host behind one Alertmanager: each acts on the alerts it reported
(``actions.instances``), and a cleanup's cross-replica lock is the action's to name."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from exporter.actions.alertmanager import handle
from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import Action, ActionResult, Request, RunContext, UnknownTarget
from exporter.actions.runner import Runner
from exporter.collectors.actions import ActionMetrics
from exporter.config import ActionsSettings
from exporter.sources.locks import FileLocks, Held


class Containers(Action):
    """Cleanup of the containers this host has, as discovery would answer; runs nothing."""

    name = "cleanup"

    def __init__(self, here: set[str], host: str = "engine-a") -> None:
        self.here = here
        self.host = host

    def targets(self, requested: str | None) -> list[str]:
        if requested not in self.here:
            raise UnknownTarget(f"{requested!r} is not a known WA container")
        return [requested]

    def lock_key(self, target: str) -> str:
        return f"cleanup:{self.host}/{target}"

    def run(self, ctx: RunContext) -> ActionResult:
        return ActionResult("success", per_target={t: "success" for t in ctx.targets})


class RecordingLocks(FileLocks):
    """Real file locks that also note the keys asked for."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.keys: list[str] = []

    def try_acquire(self, key: str) -> Held | None:
        self.keys.append(key)
        return super().try_acquire(key)


def runner(tmp_path: Path, action: Action, locks: FileLocks | None = None,
           **settings: object) -> tuple[Runner, CollectorRegistry]:
    registry = CollectorRegistry()
    chosen = ActionsSettings.model_validate({"allowed": ["cleanup"], "schedules": [],
                                             "state_dir": str(tmp_path), "window": "always",
                                             **settings})
    return Runner({"cleanup": action}, chosen, AuditLog(tmp_path / "audit.jsonl"),
                  StateFile(tmp_path / "state.json"), locks or FileLocks(tmp_path / "locks"),
                  ActionMetrics(registry, ["cleanup"])), registry


def notification(*alerts: dict[str, str]) -> bytes:
    return json.dumps({"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "WhatsAppLogArchiveTooManyFiles",
                                        "action": "cleanup", **labels}}
        for labels in alerts]}).encode()


def test_another_hosts_alert_is_skipped_even_for_a_container_unknown_here(
        tmp_path: Path) -> None:
    here, registry = runner(tmp_path, Containers({"wa-waweb-1"}),
                            instances=["wa-host-a:9864"])
    status, answer = handle(notification(
        {"container": "wa-waweb-1", "instance": "wa-host-a:9864"},
        {"container": "wa-waweb-1", "instance": "wa-host-b:9864"},  # same name, on host B
        {"container": "wa-wacore2-1", "instance": "wa-host-b:9864"},  # only on host B
    ), here)
    assert here.wait_idle(5)
    assert status == 200, answer
    outcomes = [(d["outcome"], d.get("targets")) for d in answer["decisions"]]  # type: ignore[union-attr]
    assert outcomes == [("skipped_other_host", None), ("skipped_other_host", None),
                        ("started", ["wa-waweb-1"])]
    assert answer["decisions"][0]["reason"] == (  # type: ignore[index]
        "instance 'wa-host-b:9864' is another exporter; this one is wa-host-a:9864")
    assert registry.get_sample_value("whatsapp_action_requests_total", {
        "action": "cleanup", "outcome": "skipped_other_host"}) == 2
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["instance"] for r in records if r.get("outcome") == "skipped_other_host"] == [
        "wa-host-b:9864", "wa-host-b:9864"]


def test_an_unknown_container_of_this_host_is_still_rejected(tmp_path: Path) -> None:
    here, _ = runner(tmp_path, Containers({"wa-waweb-1"}), instances=["wa-host-a:9864"])
    status, answer = handle(notification(
        {"container": "wa-gone-1", "instance": "wa-host-a:9864"}), here)
    assert status == 422
    assert [d["outcome"] for d in answer["decisions"]] == ["rejected"]  # type: ignore[union-attr]


def test_without_instances_or_an_instance_label_every_alert_is_this_exporters(
        tmp_path: Path) -> None:
    anyone, _ = runner(tmp_path / "anyone", Containers({"wa-waweb-1"}))
    status, answer = handle(notification(
        {"container": "wa-waweb-1", "instance": "wa-host-b:9864"}), anyone)
    assert status == 200 and answer["decisions"][0]["outcome"] == "started"  # type: ignore[index]
    assert anyone.wait_idle(5)
    unlabelled, _ = runner(tmp_path / "unlabelled", Containers({"wa-waweb-1"}),
                           instances=["wa-host-a:9864"])
    status, answer = handle(notification({"container": "wa-waweb-1"}), unlabelled)
    assert status == 200 and answer["decisions"][0]["outcome"] == "started"  # type: ignore[index]
    assert unlabelled.wait_idle(5)


def test_the_cluster_lock_is_taken_under_the_actions_key(tmp_path: Path) -> None:
    locks = RecordingLocks(tmp_path / "locks")
    here, _ = runner(tmp_path, Containers({"wa-waweb-1"}, host="engine-a"), locks)
    decision = here.submit(Request("cleanup", "alert", "wa-waweb-1"))
    assert decision.outcome == "started"
    assert here.wait_idle(5)
    assert locks.keys == ["cleanup:engine-a/wa-waweb-1"]
    # The state file, the audit and the metrics keep naming the container alone.
    assert list(StateFile(tmp_path / "state.json").read()["last_start"]) == [
        "cleanup:wa-waweb-1"]


def test_the_instances_setting_takes_a_list_of_labels(tmp_path: Path) -> None:
    assert ActionsSettings().instances == []
    assert ActionsSettings.model_validate(
        {"instances": ["wa-host-a:9864", "10.0.0.5:9864"]}).instances == [
        "wa-host-a:9864", "10.0.0.5:9864"]
