"""``wa-exporter upgrade-check``: the report, and with flags the GC rounds before it and the
Alertmanager silence around the upgrade."""

from __future__ import annotations

import argparse
import sys

from exporter.config import ConfigError, Settings
from exporter.upgrade.report import Report

EXIT_READY, EXIT_NOT_READY, EXIT_CONFIG = 0, 1, 2


def upgrade_check(settings: Settings, args: argparse.Namespace) -> int:
    from exporter.app import Sources
    from exporter.upgrade.gather import gather

    sources = Sources(settings)
    try:
        report = gather(settings, sources.containers, sources.media)
    except ConfigError as exc:
        print(f"wa-exporter: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    finally:
        sources.close()
    return _finish(report, args)


def _finish(report: Report, args: argparse.Namespace) -> int:
    sys.stdout.write(report.to_json() + "\n" if args.format == "json" else report.to_text())
    return EXIT_READY if report.ready else EXIT_NOT_READY
