"""Commands and flags: ``wa-exporter [serve]``, ``check-config``. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from exporter import __version__, logs, malloc
from exporter.config import (
    ConfigError,
    Settings,
    action_name,
    format_duration,
    load_file_settings,
    load_settings,
    parse_duration,
    render,
)
from exporter.server import ListenAddressError
from exporter.transport import Limits
from exporter.vocabulary import Outcome, Result, Trigger

if TYPE_CHECKING:
    from exporter.upgrade.command import Wiring

log = logging.getLogger("exporter")

DESCRIPTION = """\
Prometheus exporter and alert-driven remediation for the WhatsApp Business API
on-premises client: rows and bytes of the messages table in every WA database, live
logs and log archives of the WA containers, the media volume, the client's own
/v1/stats (relayed through the WA API login); and, when an alert, a schedule or a
person asks, message GC, media GC and cleanup.sh in the containers.

The database comes from the WA client's own variables (WA_DB_ENGINE,
WA_DB_HOSTNAME, WA_DB_PORT, WA_DB_USERNAME, WA_DB_PASSWORD or
WA_DB_PASSWORD_FILE, WA_DB_NAME_PREFIX, WA_DB_CONNECTION_IDLE_TIMEOUT,
WA_DB_SSL_CA/CERT/KEY/VERIFY, WA_DB_READ_TIMEOUT), read from --db.env-file
and then from the environment, which wins; the WA API likewise from WA_WEB_URL,
WA_WEB_USERNAME, WA_WEB_PASSWORD or WA_WEB_PASSWORD_FILE, WA_WEB_CA_FILE,
WA_WEB_VERIFY. Docker from DOCKER_HOST (unix, tcp+TLS, ssh). Everything else is in
the optional YAML --config.file; `wa-exporter check-config` prints the effective
settings, and docs/configuration.md lists every key.

endpoints: /metrics, /-/healthy, /-/ready, /, /runbooks, and with actions on:
POST /webhook/alertmanager, POST /webhook/wa-callback, GET /actions.
"""

EPILOG = """\
commands:
  serve          run the exporter (the default)
  check-config   validate the configuration, print it with secrets hidden, exit (every
                 mistake is named, a line each, exit 2); with --connect, connect to the
                 database, Docker, the WA API and the media path instead and print a
                 checklist with the fix for each failure
  run ACTION     run gc, media_gc (or media-gc) or cleanup once, now, through the same
                 rules (allow-list, cooldown, lock, audit log) as alerts and schedules;
                 with --exporter.url through the running exporter (its callbacks,
                 metrics and cooldowns); gc prints a progress line per round on stderr
  upgrade-check  is the install ready for a WA client upgrade? (see its --help)

examples:
  wa-exporter --db.env-file /opt/whatsapp/db.env
  wa-exporter check-config --db.env-file db.env --config.file wa-exporter.yml
  wa-exporter check-config --connect --db.env-file db.env --config.file wa-exporter.yml

exit codes: 0 ok, 1 runtime error, failed action or a failed check-config --connect
check, 2 bad configuration or flags, 3 action skipped (cooldown, already running);
upgrade-check has its own: 0 ready, 1 not ready, 2 usage or configuration error, 3 cannot
check (see its --help).
"""


RUN_HELP = """\
Run one action now, as a person: the allow-list, cooldown, cluster lock and audit
log apply; the off-peak window does not. Prints the decision and result as JSON
on stdout; gc also prints a line per round on stderr (rows before and after, and
how the round completed).

With --exporter.url (or WA_EXPORTER_URL) the running exporter runs it, with its
one runner, cooldown, audit log, metrics (trigger="manual") and GC callback inbox;
the credentials are the webhook section of --config.file. Without it the action
runs in this process: the WA client's GC callbacks go to the exporter, not here,
so message GC is judged by the row count alone and media GC ends "unconfirmed".
"""

CONNECT_HELP = """connect to each dependency the settings use, as the exporter would, and
print a checklist instead of the settings: the database (the WA databases found), the
Docker engine (the WA containers and their roles), the WA API (a login, no GC), the client's
own view (its /v1/stats/app and settings: is its message GC off with no GC schedule here?)
and the media path (its filesystem); each failure with its fix. Exit 1 if any check fails"""


def _flags(parser: argparse.ArgumentParser, suppress: bool) -> None:
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--web.listen-address", dest="listen_address", metavar="ADDRESS",
                        default=default(":9864"),
                        help="address to listen on for HTTP (default :9864)")
    parser.add_argument("--web.telemetry-path", dest="telemetry_path", metavar="PATH",
                        default=default("/metrics"),
                        help="path under which to expose metrics (default /metrics)")
    parser.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                        type=Path, default=default(None),
                        help="TLS and basic auth, in the Prometheus exporter-toolkit "
                        "web-config.yml format (optional)")
    parser.add_argument("--config.file", dest="config_file", metavar="FILE", type=Path,
                        default=default(None), help="YAML settings file (optional)")
    parser.add_argument("--db.env-file", dest="db_env_file", metavar="FILE", type=Path,
                        default=default(None),
                        help="the WA client's db.env, read as-is (optional)")
    for flag, dest, text in (
            ("read-header-timeout", "read_header_timeout",
             "a connection whose request headers are not all in by then is closed"),
            ("read-timeout", "read_timeout",
             "a connection whose request (headers and body) is not all in by then is closed"),
            ("idle-timeout", "idle_timeout", "an idle keep-alive connection is closed after"),
            ("tls-handshake-timeout", "tls_handshake_timeout",
             "a TLS handshake not finished by then is dropped")):
        parser.add_argument(f"--web.{flag}", dest=dest, metavar="DURATION", type=_duration,
                            default=default(getattr(Limits, dest)),
                            help=f"{text} (default {format_duration(getattr(Limits, dest))})")
    parser.add_argument("--web.max-connections", dest="max_connections", metavar="N",
                        type=_positive, default=default(Limits.max_connections),
                        help="connections served at once, lowered to stay under the open-file "
                        "limit; at the cap a new connection evicts the oldest one that is idle "
                        "or still sending its headers, else the one whose body comes slowest "
                        f"(default {Limits.max_connections})")
    parser.add_argument("--webhook.no-auth", dest="webhook_no_auth", action="store_true",
                        default=default(False),
                        help="accept webhook calls without authentication (not recommended)")
    parser.add_argument("--log.level", dest="log_level", choices=sorted(logs.LEVELS),
                        default=default("info"), help="log level (default info)")
    parser.add_argument("--log.format", dest="log_format", choices=["logfmt", "json"],
                        default=default("logfmt"), help="log format (default logfmt)")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} {exc}; use e.g. 5s, 500ms, 2m") from None


def _action(text: str) -> str:
    try:
        return action_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} {exc}") from None


def _positive(text: str) -> int:
    if not text.isdigit() or len(text) > 9 or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def limits(args: argparse.Namespace) -> Limits:
    return Limits(read_header_timeout=args.read_header_timeout, read_timeout=args.read_timeout,
                  idle_timeout=args.idle_timeout,
                  tls_handshake_timeout=args.tls_handshake_timeout,
                  max_connections=args.max_connections)


class UsageError(SystemExit):
    """A usage error, already printed as argparse prints it; exits 2 like argparse's own."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors carry their message: upgrade-check --format json
    prints them as its JSON document too."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="wa-exporter", description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version",
                        version=f"wa-exporter {__version__} (python {sys.version.split()[0]})")
    _flags(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, text in (("serve", "run the exporter (default)"),
                       ("check-config", "validate and print the effective configuration; "
                        "every mistake is named, a line each with its fix, and exits 2")):
        sub = commands.add_parser(name, help=text, description=text)
        _flags(sub, suppress=True)
        if name == "check-config":
            sub.add_argument("--connect", action="store_true", help=CONNECT_HELP)
    run = commands.add_parser(
        "run", help="run one action now", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=RUN_HELP,
        epilog="exit codes: 0 success or dry run; 1 the run did not succeed (failed, error,\n"
        "timeout, unconfirmed) or the exporter could not be reached; 2 rejected or bad\n"
        "configuration; 3 skipped (cooldown, already running).")
    run.add_argument("action", type=_action, metavar="ACTION",
                     help="gc, media_gc (or media-gc) or cleanup")
    run.add_argument("--exporter.url", dest="exporter_url", metavar="URL",
                     default=os.environ.get("WA_EXPORTER_URL") or None,
                     help="the running exporter, e.g. http://localhost:9864 (default: "
                     "WA_EXPORTER_URL); without it the action runs in this process")
    run.add_argument("--container", metavar="NAME",
                     help="cleanup: only this WA container (default: every one)")
    run.add_argument("--dry-run", action="store_true", help="decide and plan, change nothing")
    _flags(run, suppress=True)
    _upgrade_check_flags(commands)
    return parser


def _upgrade_check_flags(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    check = commands.add_parser(
        "upgrade-check", help="is the install ready for a WA client upgrade?",
        description="Before upgrading the WA client: every WA database's exact messages row "
        "count against upgrade.large_table_rows (the guide: above 2 million rows a table is "
        "large; use message GC around upgrades), the last successful message GC and whether "
        "one is running or failing, every WA container (running, role, image, version), the "
        "media volume's free space and the last run of each action from the audit log. "
        "Prints a table and one verdict line.",
        epilog="exit codes: 0 ready; 1 not ready (message GC first, or wait for or look at the "
        "GC running or failing); 2 usage or configuration error, nothing checked; 3 cannot "
        "check: the database, the WA API (--prepare) or Alertmanager (--silence) could not be "
        "reached or refused, or the check failed. With --format json, stdout holds one JSON "
        "document in every case, errors included (ready, exit_code, verdict, errors).")
    check.add_argument("--format", choices=["text", "json"], default="text",
                       help="text (a table and a verdict line, the default) or json")
    ready = check.add_argument_group(
        "prepare", "Make the install upgrade-ready as the guide says: message GC runs through "
        "the same runner as alerts and schedules (allow-list, cluster lock, cooldown, audit "
        "log; gc must be in actions.allowed and WA_WEB_* set) until every messages table is "
        "under the bound or runs stop lowering the rows; each GC round is printed; the report "
        "follows.")
    ready.add_argument("--prepare", action="store_true", help="run message GC first")
    ready.add_argument("--ignore-cooldown", action="store_true",
                       help="let --prepare start GC within the gc cooldown (recorded)")
    ready.add_argument("--max-runs", type=_positive, metavar="N", default=None,
                       help="at most N GC runs (default actions.gc.max_rounds)")
    silence = check.add_argument_group(
        "maintenance silence", "Silence this instance's WA alerts in Alertmanager (API v2) "
        "for the upgrade window; the silence ID is printed. It ends when it expires or with "
        "--unsilence.")
    silence.add_argument("--silence", metavar="DURATION", type=_duration,
                         help="create a silence lasting DURATION (e.g. 2h) from now")
    silence.add_argument("--unsilence", metavar="ID", help="expire the silence ID now")
    silence.add_argument("--alertmanager.url", dest="alertmanager_url", metavar="URL",
                         help="Alertmanager's address, e.g. http://alertmanager:9093")
    silence.add_argument("--alertmanager.basic-auth.username", dest="alertmanager_username",
                         metavar="USER", help="basic auth user (with the password file)")
    silence.add_argument("--alertmanager.basic-auth.password-file",
                         dest="alertmanager_password_file", metavar="FILE", type=Path,
                         help="file holding the basic auth password")
    silence.add_argument("--alertmanager.bearer-token-file", dest="alertmanager_token_file",
                         metavar="FILE", type=Path, help="file holding a bearer token")
    silence.add_argument("--alertmanager.ca-file", dest="alertmanager_ca_file", metavar="FILE",
                         type=Path, help="CA bundle for an https Alertmanager")
    silence.add_argument("--silence.instance", dest="silence_instance", metavar="INSTANCE",
                         help="the instance label Prometheus gives this exporter's series "
                         "(default: this host's name and the --web.listen-address port, "
                         "host:9864; pass the scrape target where it differs)")
    silence.add_argument("--silence.alerts", dest="silence_alerts", metavar="REGEX",
                         default="WhatsApp.+",
                         help="alert names to silence, a regex (default WhatsApp.+: every "
                         "alert of the exporter's rules)")
    _flags(check, suppress=True)


def _run_remote(args: argparse.Namespace) -> int:
    """``run ACTION --exporter.url``: only the webhook credentials of --config.file matter."""
    from exporter.remote_run import RemoteError, print_error, run_remote

    try:
        webhook = load_file_settings(args.config_file).webhook
        remote = run_remote(args.exporter_url, webhook, args.action,
                            args.container, args.dry_run, os.environ.get("USER", ""),
                            _print_progress)
    except ConfigError as exc:
        return _config_error(exc)
    except RemoteError as exc:
        return print_error(exc)
    finished = remote.finished or {}
    bookkeeping = ("ts", "event", "run_id", "action", "trigger", "targets")
    return _report(remote.decision, finished.get("result"),
                   {k: v for k, v in finished.items() if k not in bookkeeping})


def _run_action(settings: Settings, args: argparse.Namespace) -> int:
    action = args.action
    user = os.environ.get("USER", "")
    from prometheus_client import CollectorRegistry

    from exporter.actions.base import Request
    from exporter.app import Actions, Sources

    sources = Sources(settings)
    try:
        actions = Actions(settings, sources, CollectorRegistry())
    except ConfigError as exc:
        sources.close()
        return _config_error(exc)
    try:
        request = Request(action, Trigger.MANUAL, args.container, dry_run=args.dry_run,
                          origin={"user": user})
        decision, result = actions.runner.run_now(request, on_progress=_print_progress)
    finally:
        actions.close()
        sources.close()
    return _report(decision.as_dict(), result.result if result is not None else None,
                   result.details if result is not None else {})


def _config_error(exc: ConfigError) -> int:
    """Every problem of ``exc`` on stderr, one a line; the exit code of a config error."""
    for problem in exc.problems:
        print(f"wa-exporter: config error: {problem}", file=sys.stderr)
    return 2


def _report(decision: dict[str, Any], result: str | None, details: dict[str, Any]) -> int:
    """Print the decision and result as JSON; the exit code they mean."""
    report: dict[str, object] = {"decision": decision}
    if result is not None:
        report["result"] = {"result": result, **details}
    print(json.dumps(report, indent=2, default=str))
    outcome = decision.get("outcome")
    if outcome == Outcome.REJECTED:
        return 2
    if outcome not in (Outcome.STARTED, Outcome.DRY_RUN):
        return 3
    return 0 if result in (Result.SUCCESS, Result.DRY_RUN) else 1


def _print_progress(event: str, fields: dict[str, Any]) -> None:
    from exporter.actions.gc import progress_line

    line = progress_line(event, fields)
    if line:  # a GC in rounds can take an hour: say where it is
        print(f"wa-exporter: {line}", file=sys.stderr, flush=True)


def _upgrade_wiring() -> Wiring:
    """The exporter's wiring, handed to ``upgrade-check`` (which sits below it)."""
    from prometheus_client import CollectorRegistry

    from exporter.app import Actions, Sources
    from exporter.upgrade.command import Wiring

    # The world handed back is the one open_world made: a Sources.
    return Wiring(Sources, lambda settings, world: Actions(settings, cast(Sources, world),
                                                          CollectorRegistry()))


SWITCH_INTERVAL = 0.001


def _load(args: argparse.Namespace) -> Settings:
    return load_settings(config_file=args.config_file, db_env_file=args.db_env_file)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    try:
        args = make_parser().parse_args(words)
    except UsageError as exc:  # argparse has printed it; upgrade-check's JSON wants it too
        from exporter.upgrade.command import EXIT_USAGE, failure_document, json_requested

        if json_requested(words):
            failure_document(EXIT_USAGE, f"usage error: {exc.message}")
        return EXIT_USAGE
    malloc.limit_arenas()  # before any thread: see exporter/malloc.py
    logs.setup(args.log_level, args.log_format)
    command = args.command or "serve"
    if command == "run" and args.exporter_url:
        return _run_remote(args)
    try:
        settings = _load(args)
    except ConfigError as exc:
        if command == "upgrade-check":
            from exporter.upgrade.command import EXIT_USAGE, failure

            return failure(args.format == "json", EXIT_USAGE,
                           *(f"config error: {problem}" for problem in exc.problems))
        return _config_error(exc)
    if command == "check-config" and args.connect:
        from exporter import doctor

        checks = doctor.run_checks(settings)
        sys.stdout.write(doctor.render(checks))
        return 1 if any(check.mark == doctor.FAILED for check in checks) else 0
    if command == "check-config":
        sys.stdout.write(render(settings))
        for reason in settings.warnings():
            print(f"wa-exporter: warning: {reason}", file=sys.stderr)
        return 0
    if command == "run":
        return _run_action(settings, args)
    if command == "upgrade-check":
        from exporter.upgrade.command import upgrade_check

        return upgrade_check(settings, args, _upgrade_wiring())

    # The HTTP event loop gives up the GIL on every socket read and write and then waits for
    # it while a worker, a refresher or a GC round runs Python; 1 ms (Python's default: 5)
    # bounds that wait, which is what a burst of webhooks or scrapes queues behind.
    sys.setswitchinterval(SWITCH_INTERVAL)
    from exporter.app import App  # imported late: check-config needs no drivers
    from exporter.webconfig import load_web_config

    try:
        web = load_web_config(args.web_config_file) if args.web_config_file else None
        app = App(settings, args.listen_address, args.telemetry_path, args.webhook_no_auth, web,
                  limits(args))
    except ConfigError as exc:
        return _config_error(exc)
    except ListenAddressError as exc:
        print(f"wa-exporter: {exc}", file=sys.stderr)
        return 2
    app.serve_until_signalled()
    return 0
