"""``wa-exporter upgrade-check``: the report, and with flags the Alertmanager silence around
the upgrade and the GC rounds that make the install ready."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from exporter.config import ConfigError, Settings
from exporter.upgrade.prepare import Outcome, Preparation
from exporter.upgrade.report import Report
from exporter.upgrade.silence import Alertmanager, SilenceError, default_instance

if TYPE_CHECKING:
    from exporter.app import Sources

EXIT_READY, EXIT_NOT_READY, EXIT_CONFIG = 0, 1, 2


def upgrade_check(settings: Settings, args: argparse.Namespace) -> int:
    """Unsilence, then the report (after --prepare's rounds), then silence, as asked."""
    try:
        alertmanager = _alertmanager(args)
        duration: float | None = args.silence
    except ConfigError as exc:
        print(f"wa-exporter: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    extra: dict[str, Any] = {}
    try:
        step_failed = False
        if alertmanager is not None and args.unsilence:
            step_failed = not _unsilence(alertmanager, args.unsilence, extra)
        report, code = _report(settings, args, extra)
        if report is None:
            return code or EXIT_CONFIG
        if alertmanager is not None and duration is not None:
            instance = args.silence_instance or default_instance(args.listen_address)
            if not _silence(alertmanager, duration, instance, args.silence_alerts, extra):
                step_failed = True
    finally:
        if alertmanager is not None:
            alertmanager.close()
    _print(report, args, extra)
    if code is not None:
        return code
    return EXIT_READY if report.ready and not step_failed else EXIT_NOT_READY


def _report(settings: Settings, args: argparse.Namespace, extra: dict[str, Any]
            ) -> tuple[Report | None, int | None]:
    """The report, after --prepare if asked; with an exit code that overrides the verdict
    (the runner refused gc: a configuration matter)."""
    from exporter.app import Sources
    from exporter.upgrade.gather import gather

    sources = Sources(settings)
    try:
        if not args.prepare:
            return gather(settings, sources.containers, sources.media, sources.wa_api), None
        outcome = _prepare(settings, sources, args)
    finally:
        sources.close()
    if outcome is None:
        return None, EXIT_CONFIG
    extra["prepare"] = outcome.stopped
    return outcome.report, EXIT_CONFIG if outcome.rejected else None


def _unsilence(alertmanager: Alertmanager, silence_id: str, extra: dict[str, Any]) -> bool:
    try:
        alertmanager.unsilence(silence_id)
    except SilenceError as exc:
        print(f"wa-exporter: unsilence failed: {exc}", file=sys.stderr)
        return False
    extra["unsilenced"] = silence_id
    return True


def _silence(alertmanager: Alertmanager, duration: float, instance: str, alerts: str,
             extra: dict[str, Any]) -> bool:
    try:
        silence = alertmanager.silence(duration, instance, alerts)
    except SilenceError as exc:
        print(f"wa-exporter: silence failed: {exc}", file=sys.stderr)
        return False
    extra["silence"] = {"id": silence.id, "starts_at": silence.starts_at,
                        "ends_at": silence.ends_at, "matchers": silence.matchers}
    extra["silence_text"] = silence.describe()
    return True


def _prepare(settings: Settings, sources: Sources, args: argparse.Namespace
             ) -> Outcome | None:
    """GC runs through the runner; None if the actions cannot be set up (configuration)."""
    from prometheus_client import CollectorRegistry

    from exporter.app import Actions
    from exporter.upgrade.gather import gather

    try:
        actions = Actions(settings, sources, CollectorRegistry())
    except ConfigError as exc:
        print(f"wa-exporter: config error: {exc}", file=sys.stderr)
        return None
    progress = sys.stderr if args.format == "json" else sys.stdout

    def say(line: str) -> None:
        print(line, file=progress, flush=True)

    try:
        outcome = Preparation(actions.runner, actions.audit.recent,
                              lambda: gather(settings, sources.containers, sources.media,
                                             sources.wa_api), say,
                              ignore_cooldown=args.ignore_cooldown,
                              max_runs=args.max_runs or settings.actions.gc.max_rounds,
                              pause=settings.actions.gc.round_pause).run()
    finally:
        actions.close()
    say(f"prepare: {outcome.stopped}")
    if outcome.rejected:
        print("wa-exporter: --prepare needs gc in actions.allowed and the WA API "
              "(WA_WEB_URL, WA_WEB_USERNAME, WA_WEB_PASSWORD)", file=sys.stderr)
    return outcome


def _alertmanager(args: argparse.Namespace) -> Alertmanager | None:
    if not (args.silence or args.unsilence):
        return None
    if not args.alertmanager_url:
        raise ConfigError("--silence and --unsilence need --alertmanager.url; fix: e.g. "
                          "--alertmanager.url http://alertmanager:9093")
    return Alertmanager(args.alertmanager_url, username=args.alertmanager_username,
                        password_file=args.alertmanager_password_file,
                        bearer_token_file=args.alertmanager_token_file,
                        ca_file=args.alertmanager_ca_file)


def _print(report: Report, args: argparse.Namespace, extra: dict[str, Any]) -> None:
    if args.format == "json":
        import json

        data = report.as_dict()
        data.update({k: v for k, v in extra.items() if k != "silence_text"})
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    if "unsilenced" in extra:
        sys.stdout.write(f"silence {extra['unsilenced']} expired\n")
    if "silence_text" in extra:
        sys.stdout.write(extra["silence_text"] + "\n")
    sys.stdout.write(report.to_text())
