"""Static checks of the Grafana dashboard and the compose example in deploy/: they load, every
query is well formed and filtered, every metric they name is one the code exports, and the
compose file mounts what the README promises. Fast: no Grafana, Prometheus or Docker runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.config import load_settings
from tests.dashboard_queries import (
    DEFAULT_VARIABLES,
    dashboard_queries,
    load_dashboard,
    panels,
    substitute,
)
from tests.support import ROOT, exported_series_names, unavailable

DEPLOY = ROOT / "deploy"
ALERTS = ROOT / "alerts"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
DS_VARIABLE = "${datasource}"
INSTANCE_MATCHER = 'instance=~"$instance"'
WEBHOOK_URL = "http://wa-exporter:9864/webhook/alertmanager"
# The WA guide's "MB" are MiB here, as in the stand-in's cleanup.sh (tests/images/wa-standin).
WEBAPP_ROTATE_BYTES = 20 * 1024 * 1024
COREAPP_ROTATE_BYTES = 15 * 1024 * 1024

# Grafana's unit ids that fit this exporter's figures; any other string would show as a
# suffix, so a typo ("byte") would pass silently.
GRAFANA_UNITS = {"none", "short", "bytes", "decbytes", "s", "ms", "dtdurations", "percentunit",
                 "percent", "cps", "ops", "dateTimeAsIso", "dateTimeFromNow"}

# An exporter metric, or a recording rule of alerts/ named level:whatsapp_…:operation.
METRIC = re.compile(r"(?<![\w:])((?:[a-z_]+:)?whatsapp_[a-z0-9_]+(?::[a-z0-9_]+)?)(\{[^}]*\})?")
RANGE = re.compile(r"\[([^\]]+)\]")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def targets(dashboard: dict[str, Any]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel, target


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        unavailable("promtool", "not installed (Debian package prometheus)")
    assert path is not None
    return path


# --- the dashboard ------------------------------------------------------------------------------


def test_dashboard_imports_anywhere_through_its_datasource_variable(
        dashboard: dict[str, Any]) -> None:
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] and dashboard["title"] and dashboard["id"] is None
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    instance = variables["instance"]
    assert instance["query"] == "label_values(whatsapp_exporter_build_info, instance)"
    assert instance["multi"] and instance["includeAll"] and instance["allValue"] == ".*"
    assert instance["datasource"]["uid"] == DS_VARIABLE
    # No import-time placeholder (${DS_...}) that file provisioning would leave unresolved,
    # and no Prometheus picked by UID anywhere: every reference is the variable.
    assert "${DS_" not in json.dumps(dashboard) and "__inputs" not in dashboard
    prometheus = {ref.get("uid") for ref in datasource_refs(dashboard)
                  if ref.get("type") == "prometheus"}
    assert prometheus == {DS_VARIABLE}


def datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]
        for value in node.values():
            yield from datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasource_refs(item)


def test_every_panel_has_a_unit_and_a_query(dashboard: dict[str, Any]) -> None:
    found = list(panels(dashboard))
    assert len(found) >= 25
    bad = [p["title"] for p in found
           if p["fieldConfig"]["defaults"].get("unit") not in GRAFANA_UNITS or not p.get("targets")]
    assert not bad, f"panels without a Grafana unit or a target: {bad}"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    """Grafana keys a panel's state and links (viewPanel=ID) by its id."""
    ids = [p["id"] for p in dashboard["panels"]] + [p["id"] for p in panels(dashboard)
                                                      if p not in dashboard["panels"]]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    """Grafana moves overlapping panels about on load; rows added side by side must not."""
    boxes = [(p["title"], p["gridPos"]) for p in dashboard["panels"]]
    clashes = [(a, b) for i, (a, ga) in enumerate(boxes) for b, gb in boxes[i + 1:]
               if ga["x"] < gb["x"] + gb["w"] and gb["x"] < ga["x"] + ga["w"]
               and ga["y"] < gb["y"] + gb["h"] and gb["y"] < ga["y"] + ga["h"]]
    assert not clashes


def test_dashboard_has_the_operators_rows(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["Database", "Logs", "Media volume", "Containers", "Message and media GC",
                    "Log cleanup", "Actions", "Exporter health", "Is GC keeping pace?",
                    "WA client", "Off-peak window and deferred actions"]


def test_every_target_uses_the_datasource_variable_and_filters_on_instance(
        dashboard: dict[str, Any]) -> None:
    bad = []
    for panel, target in targets(dashboard):
        selectors = METRIC.findall(target["expr"])
        assert selectors, f"{panel['title']}: no whatsapp_ metric in {target['expr']!r}"
        if target["datasource"]["uid"] != DS_VARIABLE or panel["datasource"]["uid"] != DS_VARIABLE:
            bad.append((panel["title"], "datasource"))
        bad += [(panel["title"], name) for name, braces in selectors
                if INSTANCE_MATCHER not in braces]
    assert not bad, f"targets without ${{datasource}} or {INSTANCE_MATCHER}: {bad}"


def test_every_range_is_the_rate_interval(dashboard: dict[str, Any]) -> None:
    """``$__rate_interval`` everywhere, so a rate always spans enough scrapes; ``$__range``
    only in instant stat panels that summarise the whole time range."""
    bad = []
    for panel, target in targets(dashboard):
        expr = target["expr"]
        ranges = RANGE.findall(expr)
        if re.search(r"\b(rate|increase|irate|\w+_over_time)\(", expr) and not ranges:
            bad.append((panel["title"], expr))
        for window in ranges:
            if window == "$__rate_interval":
                continue
            if window == "$__range" and panel["type"] == "stat" and target.get("instant"):
                continue
            bad.append((panel["title"], window))
    assert not bad, f"ranges other than [$__rate_interval]: {bad}"




def recording_rules() -> set[str]:
    groups = yaml.safe_load((ALERTS / "wa-exporter.rules.yml").read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def test_every_metric_in_the_dashboard_is_exported_by_the_code(
        dashboard: dict[str, Any]) -> None:
    """... or recorded by our rules (the names with colons)."""
    exported = exported_series_names() | recording_rules()
    assert "whatsapp_media_volume_avail_bytes" in exported  # built from a prefix in volume.py
    assert "whatsapp_gc_runs_total" in exported and "whatsapp_gc_duration_seconds_bucket" in \
        exported
    used = {name for _, t in targets(dashboard) for name, _ in METRIC.findall(t["expr"])}
    used |= {name for v in dashboard["templating"]["list"]
             for name, _ in METRIC.findall(str(v.get("query", "")))}
    assert not used - exported, f"not exported by exporter/: {sorted(used - exported)}"


def panel_for(dashboard: dict[str, Any], selector: str) -> dict[str, Any]:
    matches = [p for p, t in targets(dashboard) if selector in t["expr"]]
    assert len(matches) == 1, f"{len(matches)} panels query {selector!r}"
    return matches[0]


@pytest.mark.parametrize(("selector", "lines"), [
    ("whatsapp_messages_table_rows{", {2_000_000, 10_000_000}),
    ('role="webapp"', {WEBAPP_ROTATE_BYTES}),
    ('role=~"coreapp|master"', {COREAPP_ROTATE_BYTES}),
    ("whatsapp_log_archive_family_files{", {30}),
    ("whatsapp_client_callback_queue_size{", {1000}),
], ids=["messages-rows", "webapp-logs", "coreapp-logs", "archive-files", "callback-queue"])
def test_the_guides_bounds_are_lines_on_their_panels(dashboard: dict[str, Any], selector: str,
                                                     lines: set[int]) -> None:
    panel = panel_for(dashboard, selector)
    defaults = panel["fieldConfig"]["defaults"]
    steps = {s["value"] for s in defaults["thresholds"]["steps"] if s["value"] is not None}
    assert steps == lines
    assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "dashed", "line+area")


def test_dashboard_queries_fill_in_every_variable(dashboard: dict[str, Any]) -> None:
    queries = dashboard_queries(dashboard, {"instance": "wa-exporter:9864"})
    assert len(queries) == sum(1 for _ in targets(dashboard))
    assert not [q for q in queries if "$" in q]
    assert all('instance=~"wa-exporter:9864"' in q for q in queries)
    assert any("[1m]" in q for q in queries)
    with pytest.raises(KeyError, match=r"\$nope"):
        substitute("up{x=~\"$nope\"}", DEFAULT_VARIABLES)


def test_every_query_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool has no "parse this expression": each query becomes a recording rule."""
    tool = promtool()
    rules = [{"record": f"dashboard:panel_{panel['id']}_{target['refId']}",
              "expr": substitute(target["expr"], DEFAULT_VARIABLES)}
             for panel, target in targets(dashboard)]
    rules.append({"record": "dashboard:instance_variable", "expr": "whatsapp_exporter_build_info"})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([tool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_days_until_panels_tell_not_growing_from_rules_not_loaded(
        dashboard: dict[str, Any], tmp_path: Path) -> None:
    """With the rules: the recorded days for a growing table, -1 (shown "not growing") for
    one that does not grow. Without them: nothing, which the panel shows as its noValue
    naming the rules file (so an empty panel says why, as a Prometheus without the rules
    gives)."""
    days = [p for p in panels(dashboard) if p["title"].startswith("Days until")]
    assert len(days) == 2
    for panel in days:
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["mappings"][0]["options"]["-1"]["text"] == "not growing"
        assert "alerts/wa-exporter.rules.yml" in defaults["noValue"]
    series = [{"series": 'whatsapp_messages_table_rows{job="wa-exporter",instance="wa:9864",'
                         f'database="{name}"}}', "values": values}
              for name, values in (("growing", "1000+100x300"), ("shrinking", "900000-100x300"),
                                   ("still", "5000x300"))]
    cases = []
    for panel in days:
        expr = substitute(panel["targets"][0]["expr"], DEFAULT_VARIABLES)
        recorded = expr.split("{")[0]
        cases += [
            {"expr": f"({expr}) - {recorded}", "eval_time": "24h",  # the rule's own figure
             "exp_samples": [{"labels": '{job="wa-exporter",instance="wa:9864",'
                                        'database="growing"}', "value": 0}]},
            {"expr": f"({expr}) == -1", "eval_time": "24h",
             "exp_samples": [{"labels": '{job="wa-exporter",instance="wa:9864",'
                                        f'database="{name}"}}', "value": -1}
                             for name in ("shrinking", "still")]}]
    no_rules = [{"expr": substitute(panel["targets"][0]["expr"], DEFAULT_VARIABLES),
                 "eval_time": "24h", "exp_samples": []} for panel in days]
    for name, rule_files, tests in (("with", [str(ALERTS / "wa-exporter.rules.yml")], cases),
                                    ("without", [], no_rules)):
        path = tmp_path / f"{name}.test.yml"
        path.write_text(yaml.safe_dump({
            "rule_files": rule_files, "evaluation_interval": "5m",
            "tests": [{"interval": "5m", "input_series": series,
                       "promql_expr_test": tests}]}))
        result = subprocess.run([promtool(), "test", "rules", str(path)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, f"{name} the rules:\n{result.stdout}{result.stderr}"


# --- Grafana provisioning -----------------------------------------------------------------------


def test_provisioned_datasource_is_the_compose_prometheus() -> None:
    data = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert data["apiVersion"] == 1
    prometheus = [d for d in data["datasources"] if d["type"] == "prometheus"]
    assert len(prometheus) == 1
    assert prometheus[0]["url"] == "http://prometheus:9090" and prometheus[0]["isDefault"]


def test_dashboard_provider_reads_the_mounted_dashboards_folder(compose: dict[str, Any]) -> None:
    data = yaml.safe_load((PROVISIONING / "dashboards" / "wa-exporter.yml").read_text())
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    grafana = mounts(compose, "grafana")
    assert grafana[provider["options"]["path"]]["source"] == "../dashboards"
    assert grafana["/etc/grafana/provisioning"]["source"] == "./grafana/provisioning"


# --- the compose example ------------------------------------------------------------------------


def mounts(compose: dict[str, Any], service: str) -> dict[str, dict[str, Any]]:
    """A service's volumes by target path (the file uses the long syntax throughout)."""
    volumes = compose["services"][service].get("volumes", [])
    assert all(isinstance(v, dict) for v in volumes), f"{service}: use the long volume syntax"
    return {v["target"]: v for v in volumes}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}, as far as these tests need."""
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in env:
            return env[name]
        assert op != ":?", f"${{{name}}} is required: {arg}"
        return arg

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


def test_compose_runs_the_exporter_beside_an_existing_wa_install(compose: dict[str, Any]) -> None:
    exporter = compose["services"]["wa-exporter"]
    assert exporter["build"]["context"] == ".." and "image" in exporter
    volumes = mounts(compose, "wa-exporter")
    db_env = next(v for v in volumes.values() if "WA_DB_ENV_FILE" in v["source"])
    assert db_env["type"] == "bind" and db_env["read_only"]
    assert f"--db.env-file={db_env['target']}" in exporter["command"]
    media = volumes["/usr/local/wamedia"]
    assert media["type"] == "volume" and media["source"] == "whatsappMedia" and media["read_only"]
    assert compose["volumes"]["whatsappMedia"]["external"] is True
    assert volumes["/var/run/docker.sock"]["source"] == "/var/run/docker.sock"
    assert "DOCKER_GID" in exporter["group_add"][0]
    assert volumes["/var/lib/wa-exporter"]["type"] == "volume"  # state survives re-creation
    external = [n for n, spec in compose["networks"].items() if spec and spec.get("external")]
    assert external and set(external) <= set(exporter["networks"])
    env = {"WA_DB_ENV_FILE": "/srv/biz/db.env", "DOCKER_GID": "999"}
    assert interpolate(compose["networks"][external[0]]["name"], env) == "biz_default"
    assert interpolate(db_env["source"], env) == "/srv/biz/db.env"


def test_compose_runs_prometheus_alertmanager_and_grafana_from_their_images(
        compose: dict[str, Any]) -> None:
    images = {name: s.get("image", "").split(":")[0] for name, s in compose["services"].items()}
    assert images["prometheus"] == "prom/prometheus"
    assert images["alertmanager"] == "prom/alertmanager"
    assert images["grafana"] == "grafana/grafana"
    prometheus = mounts(compose, "prometheus")
    assert prometheus["/etc/prometheus/prometheus.yml"]["source"] == "./prometheus.yml"
    assert prometheus["/etc/prometheus/rules"]["source"] == "../alerts"
    alertmanager = mounts(compose, "alertmanager")
    assert alertmanager["/etc/alertmanager/alertmanager.yml"]["source"] == \
        "../alerts/alertmanager.example.yml"


def test_compose_takes_secrets_from_files_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET|KEY", key):
                assert key.endswith("_FILE") and str(value).startswith("/run/secrets/"), \
                    f"{name}: {key} must point at a secret file"
    assert all(set(s) == {"file"} for s in compose["secrets"].values())
    assert (DEPLOY / ".gitignore").read_text().splitlines()[:2] == [".env", "secrets/*"]


def test_compose_bind_mounts_exist_in_the_repository(compose: dict[str, Any]) -> None:
    sources = [v["source"] for name in compose["services"] for v in mounts(compose, name).values()
               if v["type"] == "bind" and v["source"].startswith(".")]
    sources += [s["file"] for s in compose["secrets"].values()]
    missing = [s for s in sources if not (DEPLOY / s).exists()
               and not s.startswith("./secrets/")]  # the operator creates the secrets
    assert not missing, f"bind-mounted but not in the repository: {missing}"


def test_alertmanager_example_sends_the_token_the_compose_file_mounts(
        compose: dict[str, Any]) -> None:
    config = yaml.safe_load((ALERTS / "alertmanager.example.yml").read_text())
    webhooks = [w for r in config["receivers"] for w in r.get("webhook_configs", [])]
    ours = [w for w in webhooks if w["url"] == WEBHOOK_URL]
    assert ours, f"no receiver posts to {WEBHOOK_URL}"
    alertmanager = secret_files(compose, "alertmanager")
    exporter = secret_files(compose, "wa-exporter")
    exporter_config = yaml.safe_load((DEPLOY / "wa-exporter.yml").read_text())
    token = exporter[exporter_config["webhook"]["bearer_token_file"]]
    for webhook in ours:
        credentials = webhook["http_config"]["authorization"]["credentials_file"]
        assert alertmanager.get(credentials) == token, \
            f"{credentials} in alertmanager is not the exporter's webhook token ({token})"


def secret_files(compose: dict[str, Any], service: str) -> dict[str, str]:
    """Where a service sees its compose secrets: path in the container -> secret name."""
    paths = {}
    for secret in compose["services"][service].get("secrets", []):
        if isinstance(secret, str):
            secret = {"source": secret}
        target = secret.get("target", secret["source"])
        paths[target if target.startswith("/") else f"/run/secrets/{target}"] = secret["source"]
    return paths


def test_prometheus_config_passes_promtool_with_the_rules_it_loads(tmp_path: Path) -> None:
    tool = promtool()
    config = tmp_path / "prometheus.yml"
    shutil.copy(DEPLOY / "prometheus.yml", config)
    (tmp_path / "rules").symlink_to(ALERTS)  # as docker-compose.yml mounts them
    result = subprocess.run([tool, "check", "config", str(config)], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    # The glob loads every rule file in alerts/, and nothing else there (tests, templates).
    (pattern,) = yaml.safe_load(config.read_text())["rule_files"]
    loaded = set(ALERTS.glob(pattern.removeprefix("rules/")))
    rule_files = {p for p in ALERTS.glob("*.yml")
                  if "groups" in (yaml.safe_load(p.read_text()) or {})}
    assert rule_files and loaded == rule_files
    assert f"SUCCESS: {len(rule_files)} rule files found" in result.stdout


def test_exporter_config_example_loads_with_the_compose_environment(
        compose: dict[str, Any], tmp_path: Path) -> None:
    """deploy/wa-exporter.yml with the compose file's WA_WEB_* and secrets, as the container
    would see them: valid, webhook authenticated, and every action an alert names allowed."""
    secrets = {path: tmp_path / name
               for path, name in secret_files(compose, "wa-exporter").items()}
    for path in secrets.values():
        path.write_text("s3cret\n")
    text = (DEPLOY / "wa-exporter.yml").read_text()
    for container_path, local in secrets.items():
        text = text.replace(container_path, str(local))
    config = tmp_path / "wa-exporter.yml"
    config.write_text(text)
    environ = {k: interpolate(str(v), {}) for k, v in
               compose["services"]["wa-exporter"]["environment"].items()}
    environ = {k: str(secrets.get(v, v)) for k, v in environ.items()}
    settings = load_settings(config_file=config, environ={
        **environ, "WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "db"})
    assert settings.webhook.has_auth
    assert settings.wa_api is not None and settings.wa_api.url == "https://waweb:443"
    assert str(settings.actions.state_dir) in mounts(compose, "wa-exporter")
    assert settings.collectors.volume.path == Path("/usr/local/wamedia")
    named = set()
    for rules in ALERTS.glob("*.rules.yml"):
        for group in yaml.safe_load(rules.read_text())["groups"]:
            named |= {r["labels"]["action"] for r in group["rules"]
                      if "action" in r.get("labels", {})}
    assert named <= set(settings.actions.allowed), "alerts name actions the example forbids"


def test_compose_config_is_valid_for_docker_compose() -> None:
    """``docker compose config`` where the plugin is installed; Debian's docker.io has none, and
    the structural tests above cover the file then."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"],
                                        capture_output=True).returncode != 0:
        return
    env = {"PATH": "/usr/bin:/bin", "WA_DB_ENV_FILE": "/srv/biz/db.env", "DOCKER_GID": "999"}
    result = subprocess.run([docker, "compose", "--env-file", "/dev/null", "config", "--quiet"],
                            cwd=DEPLOY, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
