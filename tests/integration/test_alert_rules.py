"""The alert rules, their promtool unit tests, the runbooks and the Alertmanager example,
checked with the real promtool and amtool and against the metrics the code exports."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from exporter.actions.alertmanager import IGNORE_WINDOW
from exporter.actions.webhook import Webhooks
from exporter.config import ACTION_NAMES, WebhookSettings
from tests.support import ROOT, exported_series_names, unavailable

ALERTS = ROOT / "alerts"
RULES = ALERTS / "wa-exporter.rules.yml"
UNIT_TESTS = sorted((ALERTS / "tests").glob("*.yml"))
RUNBOOKS = ROOT / "docs" / "runbooks.md"
ALERTMANAGER = ALERTS / "alertmanager.example.yml"
METRIC = re.compile(r"\b(whatsapp_[a-z0-9_]+)\b")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(name, "not on PATH (Debian: apt-get install prometheus "
                    "prometheus-alertmanager)")
    assert path is not None
    return path


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def render(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, ALERTS / "render.py", *args)


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_committed_rules_are_a_fresh_render_of_template_and_thresholds() -> None:
    result = render("--check")
    assert result.returncode == 0, result.stderr


def test_promtool_check_rules_is_clean() -> None:
    result = run(tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", RULES)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    noise = [line for line in output.splitlines()
             if line.strip() and not re.fullmatch(r"Checking .*|\s+SUCCESS: \d+ rules found",
                                                  line)]
    assert not noise, output
    rules = sum(len(group["rules"]) for group in yaml.safe_load(RULES.read_text())["groups"])
    assert f"SUCCESS: {rules} rules found" in output


def test_promtool_unit_tests_pass() -> None:
    assert UNIT_TESTS
    result = run(tool("promtool"), "test", "rules", *UNIT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(UNIT_TESTS), result.stdout


def test_every_alert_has_a_firing_and_a_silent_unit_test_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in UNIT_TESTS:
        suite = yaml.safe_load(path.read_text())
        assert suite["rule_files"] == ["../wa-exporter.rules.yml"], path
        for case in suite["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts without a case where they fire"
    assert names - silent == set(), "alerts without a case where they stay silent"
    assert (firing | silent) - names == set(), "unit tests for alerts that do not exist"


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the headings: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", RUNBOOKS.read_text(), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_alert_has_severity_summary_description_and_its_own_runbook_section() -> None:
    base = yaml.safe_load((ALERTS / "thresholds.yml").read_text())["runbook_base_url"]
    anchors = runbook_anchors()
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert annotations.keys() >= {"summary", "description", "runbook_url"}, name
        assert all(annotations[k].strip() for k in ("summary", "description")), name
        url = urlsplit(annotations["runbook_url"])
        assert url._replace(fragment="").geturl() == base, name
        assert url.fragment == name.lower(), f"{name} links to #{url.fragment}"
        assert url.fragment in anchors, f"docs/runbooks.md has no heading {name}"


def test_action_labels_name_actions_the_webhook_knows_and_cleanup_keeps_the_container(
        ) -> None:
    with_action = {rule["alert"]: rule["labels"]["action"] for rule in alerts()
                   if "action" in rule["labels"]}
    # Media GC deletes business data (media unused for 30 days): no shipped rule runs it.
    assert set(with_action.values()) == set(ACTION_NAMES) - {"media_gc"}
    # The disk-full emergency cleans every container at once: their logs share its disk.
    emergencies = {rule["alert"] for rule in alerts() if "window" in rule["labels"]}
    assert emergencies == {"WhatsAppMediaVolumeLowSpace"}
    assert with_action["WhatsAppMediaVolumeLowSpace"] == "cleanup"
    cleanup = {name for name, action in with_action.items() if action == "cleanup"}
    checked: set[str] = set()
    for path in UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["alertname"] in cleanup - emergencies:
                    for expected in check.get("exp_alerts") or []:
                        assert expected["exp_labels"].get("container"), (
                            f"{check['alertname']} fires without a container: cleanup would "
                            "run everywhere")
                        checked.add(check["alertname"])
    assert checked == cleanup - emergencies


def test_a_window_label_says_ignore_the_one_value_the_webhook_takes() -> None:
    labelled = [rule for rule in alerts() if "window" in rule["labels"]]
    assert labelled and all(rule["labels"]["window"] == IGNORE_WINDOW for rule in labelled)


def test_the_webapp_log_cases_cover_every_rule_on_live_log_sizes() -> None:
    """logs.test.yml's 3 h / 27 h case tests WhatsAppLogRotationStuck: no other rule may read
    whatsapp_log_file_size_bytes, or that case would not say "none fires at 3 h"."""
    readers = {rule["alert"] for rule in alerts()
               if "whatsapp_log_file_size_bytes" in rule["expr"]}
    assert readers == {"WhatsAppLogRotationStuck"}


def recorded() -> set[str]:
    """The ``whatsapp_`` names inside the recording rules' names (level:metric:operation)."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {name for group in groups for rule in group["rules"] if "record" in rule
            for name in METRIC.findall(rule["record"])}


def test_every_metric_in_the_rules_is_exported_by_the_code() -> None:
    exported = exported_series_names() | recorded()
    groups = yaml.safe_load(RULES.read_text())["groups"]
    used = {name for group in groups for rule in group["rules"]
            for name in METRIC.findall(str(rule["expr"]))}
    assert used
    # prometheus_client adds _total to a counter's name, and _bucket/_sum/_count to histograms.
    missing = {name for name in used
               if not {name, re.sub(r"_(total|bucket|sum|count)$", "", name)} & exported}
    assert missing == set(), "metrics the rules use but the exporter does not export"


def test_lowered_thresholds_render_rules_that_fire_at_the_lowered_bound(
        tmp_path: Path) -> None:
    overrides = tmp_path / "thresholds.yml"
    overrides.write_text("messages_large_rows: 500\nmessages_large_for: 1m\n")
    rules = tmp_path / "rules.yml"
    result = render("--thresholds", overrides, "--set", "messages_large_for=30s",
                    "--output", rules)
    assert result.returncode == 0, result.stderr
    text = rules.read_text()
    assert "# Overrides: messages_large_rows=500, messages_large_for=30s\n" in text
    assert "whatsapp_messages_table_rows > 500\n        for: 30s" in text
    assert run(tool("promtool"), "check", "rules", rules).returncode == 0
    (tmp_path / "test.yml").write_text(yaml.safe_dump({
        "rule_files": ["rules.yml"],
        "evaluation_interval": "10s",
        "tests": [{
            "interval": "10s",
            "input_series": [
                {"series": 'whatsapp_messages_table_rows{database="wa_small"}',
                 "values": "600x12"},
                {"series": 'whatsapp_messages_table_rows{database="wa_tiny"}',
                 "values": "500x12"}],
            "alert_rule_test": [
                {"eval_time": "20s", "alertname": "WhatsAppMessagesTableLarge",
                 "exp_alerts": []},
                {"eval_time": "30s", "alertname": "WhatsAppMessagesTableLarge",
                 "exp_alerts": [{
                     "exp_labels": {"severity": "warning", "action": "gc",
                                    "database": "wa_small"},
                     "exp_annotations": {
                         "summary": "A WA messages table is large.",
                         "description": "The messages table of database wa_small on  holds "
                                        "600 rows, above the large-table bound of 500 rows.",
                         "runbook_url": "http://localhost:9864/runbooks"
                                        "#whatsappmessagestablelarge"}}]},
            ]}]}))
    result = run(tool("promtool"), "test", "rules", tmp_path / "test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "messages_huge_rows=5"], "unknown threshold 'messages_huge_rows'"),
    (["--set", "messages_large_rows=many"], "messages_large_rows='many' is not a number"),
    (["--set", "messages_large_for=1 hour"], "is not a Prometheus duration"),
    (["--set", 'exporter_job_regex=wa"}'], "may not contain"),
])
def test_render_refuses_bad_overrides(tmp_path: Path, args: list[str], message: str) -> None:
    result = render(*args, "--output", tmp_path / "rules.yml")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "rules.yml").exists()


def test_alertmanager_example_is_valid_and_routes_fixable_alerts_to_the_exporter() -> None:
    amtool = tool("amtool")
    result = run(amtool, "check-config", ALERTMANAGER)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    assert not result.stderr.strip(), result.stderr
    for labels, receivers in (
            (["alertname=WhatsAppCleanupOverdue", "action=cleanup", "container=wa_wacore_1"],
             "wa-exporter,people"),
            (["alertname=WhatsAppMediaVolumeLowSpace", "action=media_gc"], "wa-exporter,people"),
            (["alertname=MyMediaRule", "action=Media-GC"], "wa-exporter,people"),
            (["alertname=WhatsAppDatabaseDown"], "people"),
            (["alertname=Other", "action=reboot"], "people")):
        result = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}",
                     f"--verify.receivers={receivers}", *labels)
        assert result.returncode == 0, f"{labels}: {result.stdout}{result.stderr}"
    config = yaml.safe_load(ALERTMANAGER.read_text())
    # One notification per exporter: with one exporter per host, each acts on its own alerts.
    route = next(r for r in config["route"]["routes"] if r["receiver"] == "wa-exporter")
    assert "instance" in route["group_by"]
    hook = next(r for r in config["receivers"] if r["name"] == "wa-exporter")["webhook_configs"][0]
    # A resolved notification cancels the alert's request deferred to the off-peak window.
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"]["credentials_file"]
    # The URL path is one the exporter serves (the webhooks hand the server their routes).
    routes = Webhooks(WebhookSettings(), runner=None).routes()  # type: ignore[arg-type]
    assert urlsplit(hook["url"]).path in routes
