"""Read the facts ``upgrade-check`` judges, each source on its own: one that cannot be reached
is reported in the report, never raised."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from exporter.actions.audit import StateFile, read_tail
from exporter.config import ACTION_NAMES, Settings
from exporter.errors import SourceError
from exporter.readiness import DatabaseFacts, GcFacts
from exporter.sources.database import MessagesSource, open_counting_source
from exporter.sources.docker import ContainerDirectory
from exporter.sources.files import volume_stats
from exporter.sources.locks import FileLocks, cluster_lock
from exporter.sources.volume import MediaVolume
from exporter.sources.wa_api import WaApiClient
from exporter.sources.wa_stats import WaClientView
from exporter.upgrade.report import (
    ClientFacts,
    ContainerFacts,
    MediaFacts,
    Report,
)
from exporter.vocabulary import Result

T = TypeVar("T")


def new_report(settings: Settings) -> Report:
    chosen = settings.upgrade
    return Report(bound=chosen.large_table_rows, gc_max_age=chosen.gc_max_age,
                  media_min_avail_ratio=chosen.media_min_avail_ratio)


def count_databases(source: MessagesSource, report: Report) -> None:
    """Exact row counts of every WA ``messages`` table (``source`` counts exactly)."""
    try:
        reading = source.read()
    except SourceError as exc:
        report.databases_error = str(exc)
        return
    report.databases = sorted(
        [DatabaseFacts(t.database, t.rows, t.exact) for t in reading.tables.values()]
        + [DatabaseFacts(name, None, error=str(e)) for name, e in reading.errors.items()],
        key=lambda db: db.name)


def last_actions(state_dir: Path) -> dict[str, dict[str, Any]]:
    """The last finished run of each action kind, from the audit log (and the file rotated
    before it, if the current one holds none); dry runs do not count."""
    found: dict[str, dict[str, Any]] = {}
    for path in (state_dir / "audit.jsonl", state_dir / "audit.jsonl.1"):
        for record in reversed(read_tail(path)):
            kind = record.get("action")
            if record.get("event") == "finished" and kind in ACTION_NAMES \
                    and kind not in found and record.get("result") != Result.DRY_RUN:
                found[str(kind)] = record
        if len(found) == len(ACTION_NAMES):
            break
    return found


def gc_facts(settings: Settings, source: MessagesSource | None,
             finished: dict[str, dict[str, Any]]) -> GcFacts:
    """The last success from the state file (it outlives audit rotation), the last result
    from the audit log, and whether any replica holds the GC run lock now."""
    state_dir = settings.actions.state_dir
    state = StateFile(state_dir / "state.json").read()
    last = finished.get("gc", {})
    running: bool | None
    error = ""
    try:
        lock = (cluster_lock(source, state_dir, settings.actions.lock_timeout)
                if source is not None else FileLocks(state_dir / "locks"))
        running = lock.held_anywhere("gc")
    except (SourceError, OSError) as exc:
        running, error = None, str(exc)
    return GcFacts(last_success=state["last_success"].get("gc"),
                   last_run=state["last_run"].get("gc"), last_result=last.get("result"),
                   running=running, running_error=error)


def list_containers(directory: ContainerDirectory, report: Report) -> None:
    try:
        found = directory.discover()
    except SourceError as exc:
        report.containers_error = str(exc)
        return
    report.containers = [ContainerFacts(c.name, c.role, c.running, c.image, c.version)
                         for c in found]


def media_facts(media: MediaVolume) -> MediaFacts:
    try:
        volume, path = media.locate()
    except SourceError as exc:
        return MediaFacts(media.settings.name, "", error=str(exc))
    try:
        stats = volume_stats(path)
    except (SourceError, OSError) as exc:
        return MediaFacts(volume, str(path), error=str(exc))
    return MediaFacts(volume, str(path), int(stats.size_bytes), int(stats.avail_bytes))


def client_facts(settings: Settings, api: WaApiClient) -> ClientFacts:
    """The client's own figures, each endpoint read once (``/v1/stats/db`` only where the
    relay may read it: ``collectors.wa_client``)."""
    view, relay = WaClientView(api), settings.collectors.wa_client
    errors: list[str] = []

    def read(endpoint: Callable[[], T]) -> T | None:
        try:
            return endpoint()
        except SourceError as exc:
            errors.append(str(exc))
            return None

    db = read(view.db) if relay.enabled and relay.db.enabled else None
    app = read(view.app)
    application = read(view.settings)
    return ClientFacts(
        pending_callbacks=db.total("db_pending_callbacks") if db is not None else None,
        pending_messages=db.total("db_pending_messages") if db is not None else None,
        callback_queue=app.total("callback_queue_size") if app is not None else None,
        message_gc_off=application is not None and application.message_gc_off,
        gc_scheduled=settings.schedules_message_gc(), error="; ".join(errors))


def gather(settings: Settings, directory: ContainerDirectory, media: MediaVolume,
           api: WaApiClient | None = None) -> Report:
    """Every fact, from the databases, the state directory, Docker, the media volume and,
    through ``api``, the WA client itself."""
    report = new_report(settings)
    source = None
    if settings.database is not None:
        source = open_counting_source(settings.database, settings.collectors.messages)
    try:
        if source is not None:
            count_databases(source, report)
        else:
            report.databases_error = "no WA database configured (WA_DB_ENGINE)"
        report.last_actions = last_actions(settings.actions.state_dir)
        report.gc = gc_facts(settings, source, report.last_actions)
    finally:
        if source is not None:
            source.close()
    list_containers(directory, report)
    report.media = media_facts(media)
    if api is not None:
        report.client = client_facts(settings, api)
    return report
