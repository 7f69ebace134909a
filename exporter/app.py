"""Wiring: settings -> sources -> collectors and actions -> registry -> HTTP server."""

from __future__ import annotations

import logging
import os
import platform
import select
import signal
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry, disable_created_metrics
from prometheus_client.process_collector import ProcessCollector

from exporter import __version__
from exporter.actions.audit import AuditLog, StateFile
from exporter.actions.base import Action, ActionResult, Request
from exporter.actions.callbacks import CallbackInbox
from exporter.actions.cleanup import CleanupAction
from exporter.actions.decision import RunObserver
from exporter.actions.deferred import WindowWatch
from exporter.actions.gc import GcAction, MediaGcAction
from exporter.actions.runner import Runner
from exporter.actions.schedule import Scheduler
from exporter.actions.webhook import Webhooks
from exporter.collectors.action_state import ActionStateMetrics, AuditMetrics
from exporter.collectors.actions import ActionMetrics
from exporter.collectors.base import Collector, Refresher, SnapshotCollector, stop_all
from exporter.collectors.containers import ContainersCollector
from exporter.collectors.logs import LogsCollector
from exporter.collectors.messages import MessagesCollector
from exporter.collectors.readiness import ReadinessCollector
from exporter.collectors.volume import VolumeCollector, VolumeScanCollector
from exporter.collectors.wa_client import (
    Claims,
    ClientSettingsCollector,
    ClientStatsCollector,
    app_families,
    db_families,
)
from exporter.config import ConfigError, Settings
from exporter.doctor import missing_media_path_fix
from exporter.exposition import PythonGcCollector, Registry
from exporter.inflow import InflowProfile
from exporter.offpeak import OffPeak
from exporter.server import Server
from exporter.sources.database import (
    MessagesSource,
    open_counting_source,
    open_source,
    warn_ignored_settings,
)
from exporter.sources.docker import ContainerDirectory, DockerEngine
from exporter.sources.locks import FileLocks, cluster_lock
from exporter.sources.volume import MediaVolume
from exporter.sources.wa_api import WaApiClient
from exporter.sources.wa_stats import WaClientView
from exporter.transport import Limits
from exporter.vocabulary import Result
from exporter.webconfig import WebConfig

log = logging.getLogger(__name__)

# `*_created` series double every counter's output and no dashboard of ours reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Sources:
    """Every connection to the outside world, made once and shared."""

    def __init__(self, settings: Settings) -> None:
        wanted = settings.collectors
        self.database: MessagesSource | None = None
        if settings.database is not None:
            warn_ignored_settings(settings.database)
            self.database = open_source(settings.database, wanted.messages)
        self.engine = DockerEngine(timeout=max(wanted.containers.timeout or 0,
                                               wanted.logs.timeout or 0,
                                               wanted.volume.timeout or 0))
        self.containers = ContainerDirectory(self.engine, wanted.containers)
        self.media = MediaVolume(wanted.volume, self.engine, wanted.containers.compose_project)
        # One login for the actions and the client's stats.
        self.wa_api = WaApiClient(settings.wa_api) if settings.wa_api is not None else None

    def close(self) -> None:
        if self.database is not None:
            self.database.close()
        self.engine.close()
        if self.wa_api is not None:
            self.wa_api.close()


# The collector that reads /v1/stats/db: read again after each message GC.
WA_STATS_DB = "wa_stats_db"


def inflow_profile(settings: Settings) -> InflowProfile:
    """The hour-of-week inflow profile, kept in the state directory when actions are on
    (``window: learned`` reads it), else in memory only."""
    chosen = settings.actions
    return InflowProfile(chosen.timezone,
                         chosen.state_dir / "inflow.json" if chosen.allowed else None)


def build_collectors(settings: Settings, sources: Sources,
                     profile: InflowProfile | None = None) -> list[Collector]:
    wanted = settings.collectors
    collectors: list[Collector] = []
    if wanted.messages.enabled and sources.database is not None:
        collectors.append(MessagesCollector(sources.database, wanted.messages, profile=profile))
    if wanted.containers.enabled:
        collectors.append(ContainersCollector(sources.containers, wanted.containers))
    if wanted.logs.enabled:
        collectors.append(LogsCollector(sources.containers, wanted.logs))
    if wanted.volume.enabled:
        collectors.append(VolumeCollector(sources.media, wanted.volume))
    if wanted.volume_scan.enabled:
        collectors.append(VolumeScanCollector(sources.media, wanted.volume_scan))
    if wanted.wa_client.enabled and sources.wa_api is not None:
        collectors += wa_client_collectors(settings, WaClientView(sources.wa_api))
    return collectors


def wa_client_collectors(settings: Settings, view: WaClientView) -> list[Collector]:
    """The client's own view: /v1/stats/app, /v1/stats/db, /v1/settings/application."""
    wanted, claims = settings.collectors.wa_client, Claims()
    collectors: list[Collector] = []
    if wanted.app.enabled:
        collectors.append(ClientStatsCollector("wa_stats_app", view.app, wanted.app, claims,
                                               app_families()))
    if wanted.db.enabled:
        collectors.append(ClientStatsCollector(WA_STATS_DB, view.db, wanted.db, claims,
                                               db_families()))
    if wanted.application.enabled:
        collectors.append(ClientSettingsCollector(view.settings, wanted.application, claims,
                                                  settings.schedules_message_gc()))
    return collectors


def warn_missing_media_path(settings: Settings) -> None:
    """One warning with the fix, rather than only two failing collectors (a pip install
    has no /usr/local/wamedia unless the operator mounts it)."""
    volume = settings.collectors.volume
    wanted = volume.enabled or settings.collectors.volume_scan.enabled
    if wanted and volume.source == "path" and not volume.path.exists():
        log.warning("media volume path missing", extra={
            "path": str(volume.path), "fix": missing_media_path_fix(volume)})


class Actions:
    """The runner and everything it needs; also what ``wa-exporter run`` uses."""

    def __init__(self, settings: Settings, sources: Sources, registry: CollectorRegistry,
                 after_message_gc: Callable[[], None] | None = None,
                 profile: InflowProfile | None = None) -> None:
        chosen = settings.actions
        state_dir = chosen.state_dir
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            probe = state_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"actions.state_dir={str(state_dir)!r}: not writable: {exc.strerror or exc}; "
                "fix: create it for the exporter's user or point actions.state_dir elsewhere"
            ) from None
        self.inbox = CallbackInbox()
        self.api: WaApiClient | None = None
        self.counting: MessagesSource | None = None
        actions: dict[str, Action] = {"cleanup": CleanupAction(sources.containers,
                                                               chosen.cleanup)}
        if sources.wa_api is not None:
            self.api = sources.wa_api
            actions["media_gc"] = MediaGcAction(self.api, self.inbox, chosen.media_gc)
            if settings.database is not None:
                self.counting = open_counting_source(settings.database,
                                                     settings.collectors.messages)
                actions["gc"] = GcAction(self.api, self.counting, self.inbox, chosen.gc)
        actions = {name: action for name, action in actions.items() if name in chosen.allowed}
        unavailable = settings.unavailable_actions()
        for reason in unavailable.values():
            log.warning("action unavailable", extra={"err": reason})
        self.audit = AuditLog(state_dir / "audit.jsonl", max_bytes=chosen.audit_max_bytes)
        self.state = StateFile(state_dir / "state.json")
        self.metrics = ActionMetrics(registry, list(actions))
        self.inbox.on_outcome = self.metrics.callback_received
        if "cleanup" in actions:
            sources.containers.subscribe(self.metrics.containers_found)
        registry.register(AuditMetrics(self.audit))
        lock = (cluster_lock(sources.database, state_dir, chosen.lock_timeout)
                if sources.database is not None
                else FileLocks(state_dir / "locks"))
        observer: RunObserver = (self.metrics if after_message_gc is None
                                 else AfterMessageGc(self.metrics, after_message_gc))
        window = OffPeak(chosen.window, chosen.timezone, profile)
        self.runner = Runner(actions, chosen, self.audit, self.state, lock, observer,
                             unavailable=unavailable, window=window)
        registry.register(ActionStateMetrics(list(actions), self.runner, window))
        self.runner.recover_interrupted()
        self.metrics.restore(self.state.read())
        self.scheduler = Scheduler(chosen.schedules, chosen.timezone, self.runner)
        self.window_watch = WindowWatch(self.runner.deferred, self.runner.submit)

    def deliver_callback(self, body: bytes) -> list[str]:
        """Parse and deliver one POSTed callback body; what became of each callback in it."""
        callbacks = self.inbox.parse(body)
        outcomes = self.inbox.deliver(callbacks)
        self.audit.append({"event": "gc_callback", "callbacks": [
            dict(c.to_dict(), outcome=o) for c, o in zip(callbacks, outcomes, strict=True)]})
        return outcomes

    def close(self) -> None:
        self.scheduler.stop()
        self.window_watch.stop()
        self.audit.flush()
        self.audit.close()
        if self.counting is not None:
            self.counting.close()


class AfterMessageGc:
    """The action metrics hear every run; ``then`` is called after each message GC that
    ran for real (the client's database stats are read again then)."""

    def __init__(self, metrics: RunObserver, then: Callable[[], None]) -> None:
        self.metrics = metrics
        self.then = then

    def decided(self, action: str, outcome: str) -> None:
        self.metrics.decided(action, outcome)

    def finished(self, request: Request, targets: list[str], result: ActionResult,
                 started: float, ended: float) -> None:
        self.metrics.finished(request, targets, result, started, ended)
        if request.action == "gc" and result.result != Result.DRY_RUN:
            self.then()


class App:
    def __init__(self, settings: Settings, listen_address: str, telemetry_path: str,
                 webhook_without_auth: bool = False, web: WebConfig | None = None,
                 limits: Limits | None = None) -> None:
        self.settings = settings
        self.sources = Sources(settings)
        self.profile = inflow_profile(settings)
        self.collectors = build_collectors(settings, self.sources, self.profile)
        self.refreshers = [Refresher(c) for c in self.collectors]
        self.snapshots = SnapshotCollector(self.refreshers, {
            "version": __version__, "python_version": platform.python_version()})
        self.registry = Registry()
        self.registry.register(self.snapshots)
        ProcessCollector(registry=self.registry)
        PythonGcCollector(registry=self.registry)
        self.actions: Actions | None = None
        webhooks = None
        if settings.actions.allowed:
            guarded = settings.webhook.has_auth or (web is not None and web.basic_auth_users)
            if not guarded and not webhook_without_auth:
                raise ConfigError(
                    "webhook: no authentication configured; fix: set webhook.bearer_token_file "
                    "(or webhook.basic_auth_username and basic_auth_password_file) in "
                    "--config.file, or basic_auth_users in --web.config.file, or pass "
                    "--webhook.no-auth to accept anyone who can reach it")
            stats_db = next((r for r in self.refreshers if r.name == WA_STATS_DB), None)
            self.actions = Actions(settings, self.sources, self.registry,
                                   stats_db.refresh_soon if stats_db is not None else None,
                                   self.profile)
            webhooks = Webhooks(settings.webhook, self.actions.runner,
                                self.actions.deliver_callback)
        self._register_readiness()
        self.server = Server(listen_address, self.registry, self.snapshots.ready, telemetry_path,
                             webhooks, web, self.status, limits)

    def _register_readiness(self) -> None:
        messages = next((c for c in self.collectors if isinstance(c, MessagesCollector)), None)
        if messages is None:
            return
        if self.actions is not None:
            state, running = self.actions.state, self.actions.runner.running
        else:  # no actions here; `wa-exporter run` may still keep state in the directory
            state, running = StateFile(self.settings.actions.state_dir / "state.json"), list
        self.registry.register(ReadinessCollector(messages, state, self.settings.upgrade,
                                                  running))

    def status(self) -> list[dict[str, Any]]:
        """Each collector's health, for the landing page."""
        return [{"name": r.name, "success": r.state.success,
                 "finished": r.state.finished_once.is_set(),
                 "last_success": r.state.last_success, "duration": r.state.duration,
                 "interval": r.collector.interval, "error": r.state.last_error}
                for r in self.refreshers]

    def start(self) -> None:
        warn_missing_media_path(self.settings)
        for refresher in self.refreshers:
            refresher.start()
        if self.actions is not None:
            self.actions.scheduler.start()
            self.actions.window_watch.start()
        self.server.start()
        log.info("listening", extra={"address": self.server.address, "pid": os.getpid(),
                                     "collectors": ",".join(r.name for r in self.refreshers),
                                     "actions": ",".join(self.actions.runner.actions)
                                     if self.actions else ""})

    def stop(self) -> None:
        self.server.stop()
        stop_all(self.refreshers)
        self.profile.save(time.time())
        if self.actions is not None:
            self.actions.close()
        self.sources.close()

    def serve_until_signalled(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop. A signal only writes its number to a
        pipe (``signal.set_wakeup_fd``) that the main thread waits on: a handler that takes a
        lock, as ``Event.set`` does, runs in the main thread and can interrupt it holding that
        very lock, and a second signal at that moment (Ctrl-C and ``docker stop`` together)
        left the exporter waiting for ever."""
        wake_up, woken = os.pipe()
        os.set_blocking(woken, False)
        signal.set_wakeup_fd(woken)
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, _written_to_the_pipe)
        self.start()
        while (signum := _next_signal(wake_up)) not in STOP_SIGNALS:
            pass
        # From here another stop signal changes nothing, up to the process's very end: at
        # exit Python puts a handler of its own back to the default, which would let a late
        # SIGINT kill the process and turn exit code 0 into 130; an ignored signal it leaves
        # ignored.
        for stop_signal in STOP_SIGNALS:
            signal.signal(stop_signal, signal.SIG_IGN)
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        self.stop()
        log.info("stopped")


STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)


def _written_to_the_pipe(signum: int, frame: FrameType | None) -> None:
    """Nothing: Python's own handler has already written the signal's number to the pipe."""


def _next_signal(wake_up: int) -> int:
    select.select([wake_up], [], [])
    try:
        return os.read(wake_up, 1)[0]
    except (BlockingIOError, IndexError):
        return 0
