"""``wa-exporter check-config --connect``: reach every dependency once, as the running
exporter would, and print a checklist with the fix for each failure.

Nothing is changed anywhere: the database is read, the Docker engine listed, the WA API
logged in to (no GC), and the media path asked for its filesystem's figures. A check that
the settings do not need (no collector or action uses it) is shown as skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from exporter.config import ConfigError, Settings, VolumeSettings
from exporter.errors import SourceError
from exporter.upgrade.report import format_bytes

OK, FAILED, SKIPPED, WARNED = "✓", "✗", "-", "!"


@dataclass(frozen=True)
class Check:
    name: str
    mark: str  # OK, FAILED, SKIPPED or WARNED (worth a look, not a failure)
    detail: str
    fix: str = ""


def missing_media_path_fix(volume: VolumeSettings) -> str:
    """What to do when the media path does not exist (a pip install's default, say)."""
    return (f"mount the WA media volume at {volume.path} (docker run -v "
            f"{volume.name}:{volume.path}:ro), set collectors.volume.path to where it is "
            "mounted, set collectors.volume.source: docker to use the engine's mountpoint, or "
            "set collectors.volume.enabled and collectors.volume_scan.enabled to false")


def check_database(settings: Settings) -> Check:
    from exporter.sources.database import DatabaseError, empty_prefix_warning, open_source

    db = settings.database
    if db is None:
        return Check("database", SKIPPED, "no WA_DB_* settings and collectors.messages is off")
    where = f"{db.engine} at {db.hostname}" + (f":{db.port}" if db.port else "")
    source = open_source(db, settings.collectors.messages)
    try:
        reading = source.read()
        if not reading.tables and not reading.errors:
            return Check("database", FAILED, f"{where}: {source.explain_none_found()}")
    except DatabaseError as exc:
        return Check("database", FAILED, f"{where}: {exc}", _database_fix(str(exc)))
    finally:
        source.close()
    found = [f"{name} ({table.rows:,} rows{'' if table.exact else ', estimated'})"
             for name, table in sorted(reading.tables.items())]
    failed = [f"{name}: {error}" for name, error in sorted(reading.errors.items())]
    if failed:
        return Check("database", FAILED, f"{where}: WA databases {', '.join(found) or 'none'}; "
                     f"failing: {'; '.join(failed)}",
                     "grant WA_DB_USERNAME read access to every WA database")
    if not db.name_prefix:
        return Check("database", WARNED, f"{where}: "
                     f"{empty_prefix_warning(sorted(reading.tables))}")
    return Check("database", OK, f"{where}: WA databases: {', '.join(found)}")


# What the server's words mean (lower-cased), first match wins; anything else is taken for
# the address.
DATABASE_FIXES = (
    (re.compile(r"access denied|password authentication failed"),
     "check WA_DB_USERNAME and WA_DB_PASSWORD (or WA_DB_PASSWORD_FILE) against db.env"),
    (re.compile(r'role "[^"]*" does not exist'),
     "WA_DB_USERNAME names no role on this PostgreSQL server: check it against db.env, or "
     "create the role (CREATE ROLE ... LOGIN PASSWORD ...) with read access to the WA "
     "databases"),
    (re.compile(r'database "[^"]*" does not exist'),
     "set collectors.messages.maintenance_database to a database WA_DB_USERNAME may connect "
     "to on this server (default postgres): the list of databases is read there"),
)


def _database_fix(error: str) -> str:
    for pattern, fix in DATABASE_FIXES:
        if pattern.search(error.lower()):
            return fix
    return ("check WA_DB_HOSTNAME and WA_DB_PORT (the server as this host reaches it) and that "
            "the server accepts connections from here")


def _docker_needed(settings: Settings) -> bool:
    wanted = settings.collectors
    return (wanted.containers.enabled or (wanted.logs.enabled and wanted.logs.mode == "exec")
            or "cleanup" in settings.actions.allowed
            or ((wanted.volume.enabled or wanted.volume_scan.enabled)
                and wanted.volume.source == "docker"))


def check_docker(settings: Settings) -> Check:
    from exporter.sources.docker import ContainerDirectory, DockerEngine

    if not _docker_needed(settings):
        return Check("docker", SKIPPED, "no collector or action here uses the Docker engine")
    engine = DockerEngine(timeout=settings.collectors.containers.timeout or 10.0)
    try:
        containers = ContainerDirectory(engine, settings.collectors.containers).discover()
    except SourceError as exc:
        return Check("docker", FAILED, str(exc),
                     "start the Docker engine, or point DOCKER_HOST at it; the exporter's "
                     "user needs the socket's group (docker run --group-add)")
    finally:
        engine.close()
    if not containers:
        return Check("docker", FAILED, f"engine at {engine.where}: no WA containers",
                     "start the WA install on this engine, or name its containers in "
                     "collectors.containers.names (or .images, .compose_project)")
    listed = ", ".join(f"{c.name} ({c.role}, {'running' if c.running else 'stopped'})"
                       for c in containers)
    return Check("docker", OK, f"engine at {engine.where}: WA containers: {listed}")


def check_wa_api(settings: Settings) -> Check:
    from exporter.sources.wa_api import WaApiClient, WaApiError, WaAuthError, WaTlsError

    api = settings.wa_api
    if api is None:
        missing = settings.unavailable_actions()
        needed = [missing[name] for name in ("gc", "media_gc") if name in missing]
        if needed:
            reason, _, fix = needed[0].partition("; fix: ")
            return Check("wa_api", FAILED, reason, fix)
        return Check("wa_api", SKIPPED, "no WA_WEB_* settings and no action needs the WA API")
    client = WaApiClient(api)
    try:
        expires = client.log_in()
    except WaApiError as exc:
        reason, _, fix = str(exc).partition("; fix: ")
        if not fix and not isinstance(exc, WaAuthError | WaTlsError):
            fix = ("check WA_WEB_URL: the webapp's address as this host reaches it, e.g. "
                   "https://waweb:443 on the WA install's network")
        return Check("wa_api", FAILED, reason, fix)
    finally:
        client.close()
    until = expires.isoformat(" ", "seconds") if expires else "an unknown time"
    return Check("wa_api", OK, f"{api.url}: logged in as {api.username} (token valid until "
                 f"{until}); no GC started")


def check_wa_client(settings: Settings) -> Check:
    """The client's own view: its stats answer (when relayed), and whether anything deletes
    old messages (the client's own message GC, or a GC schedule here)."""
    from exporter.sources.wa_api import WaApiClient, WaApiError
    from exporter.sources.wa_stats import WaClientView

    if settings.wa_api is None:
        return Check("wa_client", SKIPPED, "no WA_WEB_* settings: nothing relayed")
    relay = settings.collectors.wa_client
    client = WaApiClient(settings.wa_api)
    view = WaClientView(client)
    notes = []
    try:
        if relay.enabled and relay.app.enabled:
            names = {family.name for family in view.app().families}
            notes.append(f"/v1/stats/app: {len(names)} families relayed")
        application = view.settings()
    except WaApiError as exc:
        reason, _, fix = str(exc).partition("; fix: ")
        return Check("wa_client", FAILED if relay.enabled else WARNED, reason,
                     fix or "the WA API user must be an admin; see the wa_api check")
    finally:
        client.close()
    gc = application.gc_enabled.get("messages")
    notes.append("the client's own message GC is "
                 + ("on" if gc else "off" if gc is False else "not reported"))
    scheduled = settings.schedules_message_gc()
    notes.append("a schedule here runs message GC" if scheduled
                 else "no schedule here runs message GC")
    if application.message_gc_off and not scheduled:
        return Check("wa_client", WARNED, "; ".join(notes) + ": nothing deletes old messages",
                     "allow gc in actions.allowed (the default schedule runs it daily at "
                     "04:00), or turn the client's message GC on (garbagecollector_enable "
                     "in /v1/settings/application)")
    return Check("wa_client", OK, "; ".join(notes))


def check_media(settings: Settings) -> Check:
    from exporter.sources.docker import DockerEngine
    from exporter.sources.files import FilesError, volume_stats
    from exporter.sources.volume import MediaVolume

    wanted = settings.collectors
    if not (wanted.volume.enabled or wanted.volume_scan.enabled):
        return Check("media", SKIPPED, "collectors.volume and collectors.volume_scan are off")
    engine = DockerEngine(timeout=wanted.volume.timeout or 10.0)
    try:
        _, path = MediaVolume(wanted.volume, engine, wanted.containers.compose_project).locate()
        stats = volume_stats(path)
    except FilesError as exc:
        fix = (missing_media_path_fix(wanted.volume) if exc.kind == "missing"
               else "give the exporter's user read access to the media volume")
        return Check("media", FAILED, str(exc), fix)
    except SourceError as exc:  # source: docker, and the engine could not name the volume
        return Check("media", FAILED, str(exc), "set collectors.volume.name to the WA install's "
                     "media volume (docker volume ls), or use source: path with it mounted")
    finally:
        engine.close()
    return Check("media", OK, f"{path}: {format_bytes(int(stats.avail_bytes))} of "
                 f"{format_bytes(int(stats.size_bytes))} available, "
                 f"{stats.files_free:,} inodes free")


CHECKS: tuple[Callable[[Settings], Check], ...] = (check_database, check_docker, check_wa_api,
                                                  check_wa_client, check_media)


def run_checks(settings: Settings) -> list[Check]:
    checks = []
    for check in CHECKS:
        try:
            checks.append(check(settings))
        except ConfigError as exc:  # e.g. an unreadable TLS file met only when connecting
            checks.append(Check(check.__name__.removeprefix("check_"), FAILED, str(exc)))
    return checks


def render(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{check.mark} {check.name:<9} {check.detail}")
        if check.fix:
            lines.append(f"  {'':<9} fix: {check.fix}")
    return "\n".join(lines) + "\n"
