"""``wa-exporter upgrade-check``: the report, and with flags the Alertmanager silence around
the upgrade and the GC rounds that make the install ready.

One exit code per meaning, so that a pre-upgrade script can tell "stop, GC first" from "the
check is broken": 0 ready; 1 not ready (the guide's advice applies: message GC first, wait for
the running one, look at the failing one); 2 usage or configuration error (nothing was
checked); 3 cannot check: something the command had to reach could not be reached or refused
(the database, the WA API for ``--prepare``, Alertmanager for ``--silence``), or the check
failed, even where another fact already says not ready. With ``--format json`` stdout holds one
JSON document whatever happens, with at least ``ready``, ``exit_code``, ``verdict`` and
``errors``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from exporter.actions.audit import AuditLog
from exporter.actions.runner import Runner
from exporter.config import ConfigError, Settings, scrub
from exporter.sources.docker import ContainerDirectory
from exporter.sources.volume import MediaVolume
from exporter.sources.wa_api import WaApiClient
from exporter.upgrade.gather import gather
from exporter.upgrade.prepare import Outcome, Preparation
from exporter.upgrade.report import Report
from exporter.upgrade.silence import Alertmanager, SilenceError, default_instance

log = logging.getLogger("exporter")

EXIT_READY, EXIT_NOT_READY, EXIT_USAGE, EXIT_CANNOT_CHECK = 0, 1, 2, 3


class World(Protocol):
    """The connections the facts are read through (the wiring's ``Sources``)."""

    containers: ContainerDirectory
    media: MediaVolume
    wa_api: WaApiClient | None

    def close(self) -> None: ...


class Remediation(Protocol):
    """The runner --prepare goes through, with its audit log (the wiring's ``Actions``)."""

    runner: Runner
    audit: AuditLog

    def close(self) -> None: ...


@dataclass(frozen=True)
class Wiring:
    """How to build the world and the runner: handed in by the CLI from the exporter's
    wiring, which sits above this package."""

    open_world: Callable[[Settings], World]
    open_remediation: Callable[[Settings, World], Remediation]


@dataclass
class Steps:
    """What the command did beside the report: the steps that failed and the exit code they
    force (usage, cannot check), and the silence's facts for the output."""

    errors: list[str] = field(default_factory=list)
    code: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def failed(self, error: str, code: int) -> None:
        print(f"wa-exporter: {error}", file=sys.stderr)
        self.errors.append(error)
        self.code = code if self.code is None else min(self.code, code)  # usage before 3


def json_requested(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for ``upgrade-check --format json``: read from the words, since a
    usage error must print its JSON document before any parsing succeeded."""
    words = list(argv)
    return "upgrade-check" in words and (
        "--format=json" in words
        or any(a == "--format" and b == "json" for a, b in itertools.pairwise(words)))


def failure(as_json: bool, code: int, error: str, *more: str) -> int:
    """A failure before any report (configuration, the check itself): the errors on stderr,
    one a line, and, with ``--format json``, their document on stdout. Returns ``code``."""
    for line in (error, *more):
        print(f"wa-exporter: {line}", file=sys.stderr)
    if as_json:
        failure_document(code, error, *more)
    return code


def failure_document(code: int, error: str, *more: str) -> None:
    """The JSON document of a failure that left no report; the first error is its verdict."""
    _write_json({"ready": False, "complete": False, "exit_code": code,
                 "verdict": ("cannot check: " if code == EXIT_CANNOT_CHECK else "") + error,
                 "errors": [error, *more]})


def upgrade_check(settings: Settings, args: argparse.Namespace, wiring: Wiring) -> int:
    """Unsilence, then the report (after --prepare's rounds), then silence, as asked; an
    unforeseen failure is exit 3 with its document, never a traceback read as "not ready"."""
    as_json = args.format == "json"
    try:
        alertmanager = _alertmanager(args)
    except ConfigError as exc:
        return failure(as_json, EXIT_USAGE, f"config error: {exc}")
    try:
        return _check(settings, args, alertmanager, wiring)
    except Exception as exc:  # the one place an unforeseen failure is caught
        log.debug("upgrade-check failed", exc_info=True)
        secrets = (settings.database.password if settings.database else None,
                   settings.wa_api.password if settings.wa_api else None)
        return failure(as_json, EXIT_CANNOT_CHECK,
                       f"the check failed: {type(exc).__name__}: {scrub(str(exc), *secrets)}")
    finally:
        if alertmanager is not None:
            alertmanager.close()


def _check(settings: Settings, args: argparse.Namespace, alertmanager: Alertmanager | None,
           wiring: Wiring) -> int:
    steps = Steps()
    if alertmanager is not None and args.unsilence:
        _unsilence(alertmanager, args.unsilence, steps)
    report = _report(settings, args, steps, wiring)
    if report is None:
        return failure(args.format == "json", EXIT_USAGE, steps.errors[-1])
    if alertmanager is not None and args.silence is not None:
        instance = args.silence_instance or default_instance(args.listen_address)
        _silence(alertmanager, args.silence, instance, args.silence_alerts, steps)
    code = exit_code(report, steps.code)
    _print(report, args, steps, code)
    return code


def exit_code(report: Report, forced: int | None) -> int:
    """Usage first, then cannot check (a step failed, or a fact could not be read), then the
    verdict."""
    if forced == EXIT_USAGE:
        return EXIT_USAGE
    if forced == EXIT_CANNOT_CHECK or report.unknowns():
        return EXIT_CANNOT_CHECK
    return EXIT_READY if report.ready else EXIT_NOT_READY


def _report(settings: Settings, args: argparse.Namespace, steps: Steps, wiring: Wiring
            ) -> Report | None:
    """The report, after --prepare if asked; None if --prepare could not even be set up."""
    sources = wiring.open_world(settings)
    try:
        if not args.prepare:
            return gather(settings, sources.containers, sources.media, sources.wa_api)
        outcome = _prepare(settings, sources, args, steps, wiring)
    finally:
        sources.close()
    if outcome is None:
        return None
    steps.extra["prepare"] = outcome.stopped
    if outcome.rejected:
        steps.failed("--prepare needs gc in actions.allowed and the WA API (WA_WEB_URL, "
                     "WA_WEB_USERNAME, WA_WEB_PASSWORD)", EXIT_USAGE)
    elif outcome.unreachable:
        steps.failed(f"--prepare: {outcome.stopped}", EXIT_CANNOT_CHECK)
    return outcome.report


def _unsilence(alertmanager: Alertmanager, silence_id: str, steps: Steps) -> None:
    try:
        alertmanager.unsilence(silence_id)
    except SilenceError as exc:
        steps.failed(f"unsilence failed: {exc}", EXIT_CANNOT_CHECK)
        return
    steps.extra["unsilenced"] = silence_id


def _silence(alertmanager: Alertmanager, duration: float, instance: str, alerts: str,
             steps: Steps) -> None:
    try:
        silence = alertmanager.silence(duration, instance, alerts)
    except SilenceError as exc:
        steps.failed(f"silence failed: {exc}", EXIT_CANNOT_CHECK)
        return
    steps.extra["silence"] = {"id": silence.id, "starts_at": silence.starts_at,
                              "ends_at": silence.ends_at, "matchers": silence.matchers}
    steps.extra["silence_text"] = silence.describe()


def _prepare(settings: Settings, sources: World, args: argparse.Namespace, steps: Steps,
             wiring: Wiring) -> Outcome | None:
    """GC runs through the runner; None if the actions cannot be set up (configuration)."""
    try:
        actions = wiring.open_remediation(settings, sources)
    except ConfigError as exc:
        steps.errors.append(f"config error: {exc}")
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


def _print(report: Report, args: argparse.Namespace, steps: Steps, code: int) -> None:
    if args.format == "json":
        data = report.as_dict()
        data.update({k: v for k, v in steps.extra.items() if k != "silence_text"})
        data.update(exit_code=code, errors=steps.errors)
        _write_json(data)
        return
    if "unsilenced" in steps.extra:
        sys.stdout.write(f"silence {steps.extra['unsilenced']} expired\n")
    if "silence_text" in steps.extra:
        sys.stdout.write(steps.extra["silence_text"] + "\n")
    sys.stdout.write(report.to_text())


def _write_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
