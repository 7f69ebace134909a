"""The WA client's own view, relayed: each collector alone on Meta's documented answers (as
the stand-in serves them, parsed without a socket), compared with fixture expositions; the
relay rule on families nobody documented; the refresh after a message GC; the settings."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.actions.base import ActionResult, Request
from exporter.app import AfterMessageGc
from exporter.collectors.base import Collector, Refresher, SnapshotCollector
from exporter.collectors.relay import relay, relay_name
from exporter.collectors.wa_client import (
    Claims,
    ClientSettingsCollector,
    ClientStatsCollector,
    app_families,
    db_families,
)
from exporter.config import ConfigError, WaApiSettings, WaStatsAppSettings, load_settings
from exporter.config.collectors import RarelyReadSettings, WaStatsDbSettings
from exporter.errors import SourceError
from exporter.sources.wa_api import WaApiClient, WaResponseError
from exporter.sources.wa_stats import (
    ClientSettings,
    StatsReading,
    WaClientView,
    parse_application_settings,
    parse_stats,
)
from tests.unit.expositions import assert_matches_fixture, exposition, refreshed
from tests.wa_standin.client_stats import documented_app, documented_application, documented_db
from tests.wa_standin.server import StandIn, node_id

NODES = [node_id("wacore1"), node_id("wacore2")]
MASTERS = [node_id("wamaster1"), node_id("wamaster2")]


class Reads:
    """A stats endpoint that answers ``answers`` in turn (the last one again), or raises."""

    def __init__(self, *answers: dict[str, Any] | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> StatsReading:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return parse_stats(answer)


def app_collector(read: Callable[[], StatsReading], claims: Claims | None = None
                  ) -> ClientStatsCollector:
    return ClientStatsCollector("wa_stats_app", read, WaStatsAppSettings(), claims or Claims(),
                                app_families())


def db_collector(read: Callable[[], StatsReading], claims: Claims | None = None
                 ) -> ClientStatsCollector:
    return ClientStatsCollector("wa_stats_db", read, WaStatsDbSettings(), claims or Claims(),
                                db_families())


def relayed(collector: Collector) -> str:
    return exposition(collector, refreshed(collector), relayed=True)


# --- the documented answers -----------------------------------------------------------------


def test_app_stats_of_a_single_instance_in_base_units() -> None:
    assert_matches_fixture("wa_stats_app.prom", relayed(app_collector(Reads(documented_app()))))


def test_db_stats_of_a_single_instance() -> None:
    assert_matches_fixture("wa_stats_db.prom", relayed(db_collector(Reads(documented_db()))))


def test_multiconnect_app_stats_carry_the_node_one_series_each() -> None:
    answer = {node: documented_app() for node in NODES}
    answer[NODES[1]]["callback_queue_size"]["data"][0]["value"] = 12
    assert_matches_fixture("wa_stats_app_multiconnect.prom",
                           relayed(app_collector(Reads(answer))))


def test_multiconnect_db_stats_skip_the_masters_that_answer_empty() -> None:
    answer = {MASTERS[0]: documented_db(), MASTERS[1]: {}}
    assert_matches_fixture("wa_stats_db_multiconnect.prom",
                           relayed(db_collector(Reads(answer))))


@pytest.mark.parametrize("answer", [
    documented_app(), {node: documented_app() for node in NODES}], ids=["single", "multi"])
def test_the_relay_is_valid_openmetrics(answer: dict[str, Any]) -> None:
    """Prometheus asks for OpenMetrics, which wants a summary's count and sum of one series
    together: samples grouped otherwise make the parser (and Prometheus) refuse the whole
    scrape."""
    collector = app_collector(Reads(answer))
    registry = CollectorRegistry()
    registry.register(Only(refreshed(collector)))
    text = openmetrics_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    summary = families["whatsapp_client_callback_requests_duration_seconds"]
    assert summary.type == "summary"
    names = [sample.name.rsplit("_", 1)[1] for sample in summary.samples]
    assert names == ["count", "sum"] * (len(names) // 2) and len(names) >= 4


class Only:
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Sequence[Metric]:
        return self.families


def test_every_node_answering_empty_is_a_failed_read() -> None:
    collector = db_collector(Reads({MASTERS[0]: {}, MASTERS[1]: {}}))
    with pytest.raises(SourceError, match="every node answered without stats"):
        collector.refresh()


# --- the rule, on families nobody documented ----------------------------------------------------


def newer_client() -> dict[str, Any]:
    """Families a newer client might add: units, a histogram, odd labels, bad values."""
    def family(kind: str, *data: dict[str, Any], help_text: str = "") -> dict[str, Any]:
        return {"data": list(data), "help": help_text, "type": kind}

    return {
        "webhook_latency_ms": family("gauge", {"value": 250}, help_text="Last webhook latency"),
        "messages_sent": family("counter", {"labels": {"type": "text"}, "value": 10}),
        "outbox_total": family("counter", {"value": 4}),
        "send_duration_us_bucket": family("counter", {"labels": {"le": "1000"}, "value": 3},
                                          {"labels": {"le": "+Inf"}, "value": 4}),
        "send_duration_us_count": family("counter", {"value": 4}),
        "send_duration_us_sum": family("counter", {"value": 5500}),
        "lonely_duration_ms_count": family("counter", {"value": 9}),
        "mood": family("", {"labels": {"node": "inner", "le": "x", "bad-name": "1"},
                            "value": "3.5"}),
        "broken": family("gauge", {"value": "n/a"}, {"labels": {"a": "b"}}),
        "twice": family("gauge", {"value": 1}, {"value": 2}),
        "not_a_family": {"help": "no data"},
    }


def test_families_nobody_documented_are_relayed_by_the_same_rule() -> None:
    answer = {NODES[0]: newer_client()}
    collector = app_collector(Reads(answer))
    assert_matches_fixture("wa_stats_app_newer_client.prom", relayed(collector))


def test_what_is_not_understood_is_named() -> None:
    reading = parse_stats(newer_client())
    result = relay(reading.families)
    assert reading.skipped == ["broken: a value that is not a number",
                               "broken: a value that is not a number",
                               "not_a_family: not a family (no data list) nor a node"]
    assert result.skipped == ["twice: a repeated series {}"]


@pytest.mark.parametrize(("raw", "name", "scale"), [
    ("callback_requests_duration_ms_sum", "whatsapp_client_callback_requests_duration_seconds_sum",
     1e-3),
    ("callback_requests_duration_ms_count",
     "whatsapp_client_callback_requests_duration_seconds_count", 1.0),
    ("db_request_duration_us", "whatsapp_client_db_request_duration_seconds", 1e-6),
    ("gc.run-time_ns", "whatsapp_client_gc_run_time_seconds", 1e-9),
    ("callback_queue_size", "whatsapp_client_callback_queue_size", 1.0),
])
def test_names_in_base_units(raw: str, name: str, scale: float) -> None:
    target = relay_name(raw)
    assert (target.name, target.scale) == (name, scale)


def test_a_name_another_collector_exports_is_not_exported_twice() -> None:
    claims = Claims()
    db_collector(Reads(documented_db()), claims).refresh()
    clash = {"db_pending_callbacks": documented_db()["db_pending_callbacks"],
             **documented_app()}
    families = app_collector(Reads(clash), claims).refresh()
    assert "whatsapp_client_db_pending_callbacks" not in {f.name for f in families}
    assert "whatsapp_client_callback_queue_size" in {f.name for f in families}


# --- reading rarely ---------------------------------------------------------------------------


class Counted(Collector):
    """A collector on a long interval whose refreshes can be waited for."""

    name = "wa_stats_db"

    def __init__(self) -> None:
        super().__init__(WaStatsDbSettings())
        self.refreshes = 0
        self.changed = threading.Condition()

    def refresh(self) -> Sequence[Metric]:
        with self.changed:
            self.refreshes += 1
            self.changed.notify_all()
        return []

    def wait(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.refreshes >= count, timeout=5)


@pytest.fixture
def long_interval() -> Iterator[tuple[Counted, Refresher]]:
    collector = Counted()
    refresher = Refresher(collector)
    refresher.start()
    yield collector, refresher
    refresher.stop()


def test_db_stats_are_read_at_start_and_again_when_asked_not_per_scrape(
        long_interval: tuple[Counted, Refresher]) -> None:
    collector, refresher = long_interval
    assert collector.wait(1)
    snapshots = SnapshotCollector([refresher], {"version": "test"})
    for _ in range(30):
        list(snapshots.collect())
    assert collector.refreshes == 1  # an hour's interval: scrapes read nothing
    refresher.refresh_soon()
    assert collector.wait(2)
    assert collector.refreshes == 2


class Metrics:
    def __init__(self) -> None:
        self.heard: list[tuple[str, ...]] = []

    def decided(self, action: str, outcome: str) -> None:
        self.heard.append(("decided", action, outcome))

    def finished(self, request: Request, targets: list[str], result: ActionResult,
                 started: float, ended: float) -> None:
        self.heard.append(("finished", request.action, result.result))


def test_each_message_gc_that_ran_asks_for_a_fresh_read_of_the_db_stats() -> None:
    asked: list[str] = []
    metrics = Metrics()
    observer = AfterMessageGc(metrics, lambda: asked.append("stats_db"))
    observer.decided("gc", "started")
    observer.finished(Request("gc", "schedule"), [], ActionResult("success", {}), 0.0, 1.0)
    observer.finished(Request("gc", "alert"), [], ActionResult("failed", {}), 0.0, 1.0)
    observer.finished(Request("gc", "manual", dry_run=True), [], ActionResult("dry_run", {}),
                      0.0, 1.0)
    observer.finished(Request("cleanup", "schedule"), [], ActionResult("success", {}), 0.0, 1.0)
    observer.finished(Request("media_gc", "manual"), [], ActionResult("success", {}), 0.0, 1.0)
    assert asked == ["stats_db", "stats_db"]
    assert len(metrics.heard) == 6  # the action metrics hear everything, as before


# --- settings ---------------------------------------------------------------------------------


def test_settings_say_which_garbage_collectors_run_and_whether_callbacks_persist() -> None:
    collector = ClientSettingsCollector(
        lambda: parse_application_settings(documented_application()), RarelyReadSettings(),
        Claims(), schedules_gc=True)
    assert_matches_fixture("wa_settings.prom", exposition(collector, refreshed(collector)))


def test_message_gc_off_without_a_schedule_of_ours_is_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    off = ClientSettings({"messages": False, "media": False}, None)
    collector = ClientSettingsCollector(lambda: off, RarelyReadSettings(), Claims(),
                                        schedules_gc=False)
    collector.refresh()
    collector.refresh()
    warned = [r for r in caplog.records if r.getMessage() == "nothing deletes old messages"]
    assert len(warned) == 1
    scheduled = ClientSettingsCollector(lambda: off, RarelyReadSettings(), Claims(),
                                        schedules_gc=True)
    scheduled.refresh()
    assert len([r for r in caplog.records
                if r.getMessage() == "nothing deletes old messages"]) == 1


def test_a_gc_schedule_counts_only_when_it_can_run(tmp_path: Path) -> None:
    env = {"WA_DB_ENGINE": "MYSQL", "WA_DB_HOSTNAME": "db", "WA_WEB_URL": "https://waweb",
           "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "x"}
    assert not load_settings(environ=env).schedules_message_gc()  # gc not allowed
    allowed = tmp_path / "config.yml"
    allowed.write_text("actions: {allowed: [gc]}\n")
    assert load_settings(config_file=allowed, environ=env).schedules_message_gc()
    no_api = {k: v for k, v in env.items() if not k.startswith("WA_WEB")}
    assert not load_settings(config_file=allowed, environ=no_api).schedules_message_gc()
    dry = tmp_path / "dry.yml"
    dry.write_text("actions: {allowed: [gc], dry_run: true}\n")
    assert not load_settings(config_file=dry, environ=env).schedules_message_gc()


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(("section", "message"), [
    ("db: {interval: 1m}", r"collectors\.wa_client\.db: interval 60s is below 5m.*fix: use 5m "
     "or more"),  # Meta: read /v1/stats/db only when needed
    ("application: {interval: 4h}", r"collectors\.wa_client\.application: stale_after \(3h\) is "
     r"not longer than interval \(4h\).*fix: raise stale_after"),
])
def test_rare_reads_are_rare_and_their_figures_outlive_the_interval(
        tmp_path: Path, section: str, message: str) -> None:
    path = tmp_path / "config.yml"
    path.write_text(f"collectors:\n  messages: {{enabled: false}}\n  wa_client:\n    {section}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(config_file=path, environ={})


# --- the API calls, against the stand-in ---------------------------------------------------------


@pytest.fixture
def view() -> Iterator[tuple[StandIn, WaClientView]]:
    with StandIn(multiconnect=["wacore1", "wacore2"]) as wa:
        api = WaApiClient(WaApiSettings.model_validate(
            {"WA_WEB_URL": wa.url, "WA_WEB_USERNAME": "admin", "WA_WEB_PASSWORD": "secret"}))
        yield wa, WaClientView(api)
        api.close()


def test_the_three_reads_share_one_login_and_are_counted(
        view: tuple[StandIn, WaClientView]) -> None:
    wa, client = view
    assert client.app().total("callback_queue_size") == 900  # two coreapps of 450
    db = client.db()
    assert db.total("db_pending_callbacks") == 7 and db.empty_nodes == [MASTERS[1]]
    assert client.settings() == ClientSettings({"media": False, "messages": True}, True)
    assert wa.stats()["requests"] == {"login": 1, "stats_app": 1, "stats_db": 1,
                                      "settings_application": 1}


def test_an_answer_without_the_stats_object_is_a_response_error(
        view: tuple[StandIn, WaClientView]) -> None:
    wa, client = view
    wa.fail_next("stats_db", status=200, code=0, title="", details="")
    with pytest.raises(WaResponseError, match=r"GET /v1/stats/db: the answer holds no "
                       r"stats\.db object"):
        client.db()
