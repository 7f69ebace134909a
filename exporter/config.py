"""One validated settings object, built from the WA client's db.env, the environment and YAML.

Sources, lowest precedence first: the ``--db.env-file`` (the WA client's own file,
read as-is), then the process environment (``WA_DB_*``), then for everything that
is not a WA variable the optional YAML ``--config.file``. Every secret may also be
given as ``NAME_FILE``. Errors are reported as :class:`ConfigError` with one line
naming the key, what is wrong with the value, and how to fix it; secret values
never appear in them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)


class ConfigError(Exception):
    """A configuration problem, phrased as one line: key, problem, fix."""


class Secret:
    """A credential that prints as ``<secret>`` wherever it ends up."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def scrub(text: str, *secrets: Secret | None) -> str:
    """``text`` with every secret replaced by ``<secret>``, for error messages from libraries.

    Secrets shorter than 4 characters are left alone: replacing them would mangle ordinary
    words ("b" in "establish") and such a secret hides nothing anyway.
    """
    for secret in secrets:
        if secret is not None and len(secret.reveal()) >= 4:
            text = text.replace(secret.reveal(), "<secret>")
    return text


def _to_secret(value: object) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return Secret(value)


SecretValue = Annotated[
    Secret, PlainValidator(_to_secret), PlainSerializer(lambda s: "<secret>", return_type=str)
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """``30``, ``30s``, ``1.5m``, ``250ms``, ``2h``, ``1d`` -> seconds."""
    if isinstance(value, bool):
        raise ValueError("is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("is not a duration")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    Field(json_schema_extra={"fix": "use seconds or a duration such as 500ms, 30s, 5m, 1h"}),
]


def _fix(text: str) -> Any:
    return Field(json_schema_extra={"fix": text})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- the WA client's own database variables ---------------------------------------------

_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}


def _env_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _BOOL_TRUE:
        return True
    if text in _BOOL_FALSE:
        return False
    raise ValueError("is not a boolean")


def _readable_file(value: Path | None) -> Path | None:
    if value is not None and not os.access(value, os.R_OK):
        raise ValueError(f"file {str(value)!r} is not readable")
    return value


EnvBool = Annotated[
    bool, BeforeValidator(_env_bool), _fix("use true or false (1/0, yes/no are accepted too)")
]

DEFAULT_PORTS = {"MYSQL": 3306, "PGSQL": 5432, "SQLITE": 0}


class DatabaseSettings(_Strict):
    """The database server the WA client uses, described by its own ``db.env`` variables."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    engine: Annotated[
        Literal["MYSQL", "PGSQL", "SQLITE"],
        BeforeValidator(lambda v: str(v).strip().upper()),
        _fix("set WA_DB_ENGINE to MYSQL or PGSQL (SQLITE for the demo)"),
    ] = Field(alias="WA_DB_ENGINE")
    hostname: Annotated[
        str, _fix("set WA_DB_HOSTNAME to the DB server's host (for SQLITE: a directory)")
    ] = Field(alias="WA_DB_HOSTNAME", min_length=1)
    port: Annotated[
        int, _fix("set WA_DB_PORT to a TCP port between 1 and 65535 (MySQL 3306, PostgreSQL 5432)")
    ] = Field(alias="WA_DB_PORT", default=0, ge=0, le=65535)
    username: Annotated[str, _fix("set WA_DB_USERNAME to the DB user the WA client uses")] = Field(
        alias="WA_DB_USERNAME", default=""
    )
    password: Annotated[
        SecretValue | None, _fix("set WA_DB_PASSWORD or WA_DB_PASSWORD_FILE")
    ] = Field(alias="WA_DB_PASSWORD", default=None)
    name_prefix: Annotated[str, _fix("set WA_DB_NAME_PREFIX as in the WA client's db.env")] = (
        Field(alias="WA_DB_NAME_PREFIX", default="")
    )
    connection_idle_timeout_ms: Annotated[
        int | None,
        _fix("set WA_DB_CONNECTION_IDLE_TIMEOUT to milliseconds, e.g. 180000"),
    ] = Field(alias="WA_DB_CONNECTION_IDLE_TIMEOUT", default=None, gt=0)
    read_timeout_s: Annotated[
        float | None, _fix("set WA_DB_READ_TIMEOUT to seconds, e.g. 30")
    ] = Field(alias="WA_DB_READ_TIMEOUT", default=None, gt=0)
    ssl_ca: Annotated[Path | None, _fix("point WA_DB_SSL_CA at a readable PEM file")] = Field(
        alias="WA_DB_SSL_CA", default=None
    )
    ssl_cert: Annotated[Path | None, _fix("point WA_DB_SSL_CERT at a readable PEM file")] = Field(
        alias="WA_DB_SSL_CERT", default=None
    )
    ssl_key: Annotated[Path | None, _fix("point WA_DB_SSL_KEY at a readable PEM file")] = Field(
        alias="WA_DB_SSL_KEY", default=None
    )
    ssl_verify: EnvBool = Field(alias="WA_DB_SSL_VERIFY", default=True)

    @field_validator("port", "connection_idle_timeout_ms", "read_timeout_s", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str) and not value.strip():
            return 0 if info.field_name == "port" else None
        return value

    @field_validator("ssl_ca", "ssl_cert", "ssl_key")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return _readable_file(value)

    @model_validator(mode="after")
    def _default_port(self) -> DatabaseSettings:
        if not self.port and self.engine != "SQLITE":
            object.__setattr__(self, "port", DEFAULT_PORTS[self.engine])
        return self


# --- the WA client's REST API (the webapp) ---------------------------------------------------


def _web_url(value: object) -> str:
    url = str(value).strip().rstrip("/")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError("holds credentials; fix: remove them from WA_WEB_URL and set "
                         "WA_WEB_USERNAME and WA_WEB_PASSWORD")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        raise ValueError("is not an http(s) URL")
    parts.port  # noqa: B018 -- raises ValueError on a port that is not a number
    return url


class WaApiOptions(_Strict):
    """YAML ``wa_api``: how to talk to the webapp (its address and login are ``WA_WEB_*``)."""

    verify: Annotated[
        bool | None, _fix("use false only for a self-signed certificate without a CA file")
    ] = None  # unset: WA_WEB_VERIFY, else true
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 30.0
    retry_attempts: Annotated[int, _fix("use 1 to 10 attempts per call")] = Field(
        default=3, ge=1, le=10)
    retry_backoff: Duration = 0.5
    token_refresh_margin: Duration = 300.0


class WaApiSettings(WaApiOptions):
    """The webapp's API: ``WA_WEB_*`` variables plus the ``wa_api`` options from the YAML."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    url: Annotated[
        str, BeforeValidator(_web_url),
        _fix("set WA_WEB_URL to the webapp's address, e.g. https://127.0.0.1:9090"),
    ] = Field(alias="WA_WEB_URL")
    username: Annotated[str, _fix("set WA_WEB_USERNAME to a WA API admin user")] = Field(
        alias="WA_WEB_USERNAME", min_length=1)
    password: Annotated[
        SecretValue, _fix("set WA_WEB_PASSWORD or WA_WEB_PASSWORD_FILE")
    ] = Field(alias="WA_WEB_PASSWORD")
    ca_file: Annotated[
        Path | None, AfterValidator(_readable_file),
        _fix("point WA_WEB_CA_FILE at a readable PEM file with the webapp's CA"),
    ] = Field(alias="WA_WEB_CA_FILE", default=None)
    verify: EnvBool = Field(alias="WA_WEB_VERIFY", default=True)

    @model_validator(mode="after")
    def _ca_needs_verify(self) -> WaApiSettings:
        if self.ca_file is not None and not self.verify:
            raise ValueError("WA_WEB_CA_FILE is set but TLS verification is off; fix: drop "
                             "WA_WEB_VERIFY=false (wa_api.verify) or WA_WEB_CA_FILE")
        return self


# --- the exporter's own settings (YAML) -----------------------------------------------------


class CollectorSettings(_Strict):
    enabled: bool = True
    interval: Duration = 60.0
    timeout: Duration | None = None  # default: min(30s, interval)
    stale_after: Duration = 300.0

    @model_validator(mode="after")
    def _default_timeout(self) -> CollectorSettings:
        # Refreshes never overlap, so a timeout longer than the interval only delays the next.
        if self.timeout is None:
            object.__setattr__(self, "timeout", min(30.0, self.interval))
        return self


class MessagesSettings(CollectorSettings):
    exact_count_below: Annotated[
        int, _fix("use a row count; below it rows are counted exactly, above it estimated")
    ] = Field(default=1_000_000, ge=0)
    query_timeout: Duration = 20.0
    maintenance_database: Annotated[
        str, _fix("name a PostgreSQL database the DB user may connect to, e.g. postgres")
    ] = "postgres"


Role = Literal["webapp", "coreapp", "master"]


class ImageRule(_Strict):
    pattern: Annotated[str, _fix("use a glob on the image name, e.g. '*whatsapp*web*'")] = Field(
        min_length=1)
    role: Role


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("is not an absolute path")
    return value


class ContainersSettings(CollectorSettings):
    """Which containers are WA containers: ``names`` first, then the compose service label
    (waweb, wacore[N], master[N]), then ``images``."""

    interval: Duration = 15.0
    compose_project: Annotated[
        str | None, _fix("name the compose project of the WA install, or leave it unset")
    ] = None
    images: Annotated[
        tuple[ImageRule, ...],
        _fix("list entries {pattern: <glob on the image name>, role: webapp|coreapp|master}"),
    ] = (ImageRule(pattern="*whatsapp*web*", role="webapp"),
         ImageRule(pattern="*whatsapp*core*", role="coreapp"))
    names: Annotated[
        dict[str, Role], _fix("map each container name to webapp, coreapp or master")
    ] = Field(default_factory=dict)
    # Where the WA containers mount the media volume (the guide: /usr/local/wamedia); each
    # container's mount there is reported. Not collectors.volume.path: that is the exporter's.
    media_path: Annotated[
        str, BeforeValidator(_absolute),
        _fix("use the absolute media path inside the WA containers, e.g. /usr/local/wamedia"),
    ] = "/usr/local/wamedia"


class LogsSettings(CollectorSettings):
    mode: Annotated[
        Literal["exec", "host"],
        _fix("use exec (docker exec into each container) or host (bind-mounted directories)"),
    ] = "exec"
    log_dir: Annotated[
        str, BeforeValidator(_absolute), _fix("use the absolute log path inside the containers")
    ] = "/var/log/whatsapp"
    host_paths: Annotated[
        dict[str, Path], _fix("map each container name to the directory holding its logs")
    ] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _host_needs_paths(self) -> LogsSettings:
        if self.mode == "host" and not self.host_paths:
            raise ValueError("mode is host but host_paths is empty; fix: map each container "
                             "name to its bind-mounted log directory, or use mode: exec")
        return self


class VolumeSettings(CollectorSettings):
    interval: Duration = 30.0
    source: Annotated[
        Literal["path", "docker"],
        _fix("use path (the volume mounted into the exporter) or docker (ask for its mountpoint)"),
    ] = "path"
    path: Annotated[Path, _fix("use the media volume's mount point inside the exporter")] = Path(
        "/usr/local/wamedia")
    name: Annotated[
        str, _fix("use the media volume's name, e.g. whatsappMedia")
    ] = Field(default="whatsappMedia", min_length=1)


class VolumeScanSettings(CollectorSettings):
    interval: Duration = 300.0
    timeout: Duration | None = 120.0
    stale_after: Duration = 900.0
    workers: Annotated[
        int | None, _fix("use a number of processes from 1 to 64, or leave unset for the CPUs")
    ] = Field(default=None, ge=1, le=64)
    full_scan_every: Annotated[
        int | None, _fix("use a number of refreshes from 1 up (1: every pass is full), or leave "
                         "unset for one full pass a day")
    ] = Field(default=None, ge=1)

    def full_scan_every_refreshes(self) -> int:
        """Passes from one full pass to the next: as configured, or about one a day."""
        return self.full_scan_every or max(1, round(86400 / self.interval))


class CollectorsSettings(_Strict):
    messages: MessagesSettings = MessagesSettings()
    containers: ContainersSettings = ContainersSettings()
    logs: LogsSettings = LogsSettings()
    volume: VolumeSettings = VolumeSettings()
    volume_scan: VolumeScanSettings = VolumeScanSettings()


# --- actions ----------------------------------------------------------------------------------

ACTION_NAMES = ("gc", "media_gc", "cleanup")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _action_name(value: object) -> str:
    name = str(value).strip().lower().replace("-", "_")
    if name not in ACTION_NAMES:
        raise ValueError(f"is not an action; fix: use one of {', '.join(ACTION_NAMES)}")
    return name


ActionName = Annotated[str, BeforeValidator(_action_name)]


def _clock_time(value: object) -> str:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value).strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError("is not a time of day; fix: use HH:MM, e.g. 01:30")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


def _timezone(value: object) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not a time zone; fix: use an IANA name such as UTC or "
                         "Europe/Berlin") from None
    return str(value)


TimeZone = Annotated[str, BeforeValidator(_timezone)]


class WindowSettings(_Strict):
    """Alerts and schedules start actions only inside this window (the CLI ignores it)."""

    start: Annotated[str, BeforeValidator(_clock_time)]
    end: Annotated[str, BeforeValidator(_clock_time)]
    days: list[Annotated[str, BeforeValidator(lambda v: str(v).strip().lower()[:3])]] = list(
        _WEEKDAYS)

    @field_validator("days")
    @classmethod
    def _known_days(cls, days: list[str]) -> list[str]:
        for day in days:
            if day not in _WEEKDAYS:
                raise ValueError(f"{day!r} is not a weekday; fix: use {', '.join(_WEEKDAYS)}")
        return days


def _cron(value: object) -> str:
    from croniter import croniter

    text = " ".join(str(value).split())
    if not croniter.is_valid(text) or len(text.split()) != 5:
        raise ValueError("is not a cron expression; fix: use five fields, e.g. '0 3 * * *'")
    return text


class ScheduleEntry(_Strict):
    action: ActionName
    cron: Annotated[str, BeforeValidator(_cron)]
    target: str | None = None  # cleanup: one container; default every WA container
    dry_run: bool = False


class WebhookSettings(_Strict):
    """Who may call the Alertmanager webhook and the GC callback endpoint."""

    bearer_token: SecretValue | None = None
    bearer_token_file: Path | None = None
    basic_auth_username: str | None = None
    basic_auth_password: SecretValue | None = None
    basic_auth_password_file: Path | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    @model_validator(mode="after")
    def _read_secret_files(self) -> WebhookSettings:
        for key, file_key in (("bearer_token", "bearer_token_file"),
                              ("basic_auth_password", "basic_auth_password_file")):
            path = getattr(self, file_key)
            if path is None:
                continue
            if getattr(self, key) is not None:
                raise ValueError(f"set {key} or {file_key}, not both; fix: keep only one")
            try:
                secret = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{file_key}: cannot read {str(path)!r}: "
                                 f"{exc.strerror or exc}; fix: make it readable") from None
            except UnicodeDecodeError:  # its message would quote a byte of the secret
                raise ValueError(f"{file_key}: {str(path)!r} is not UTF-8 text; fix: write "
                                 "the secret as UTF-8") from None
            object.__setattr__(self, key, Secret(secret))
            object.__setattr__(self, file_key, None)  # read; a re-validation must not re-read
        if (self.basic_auth_username is None) != (self.basic_auth_password is None):
            raise ValueError("basic auth needs both basic_auth_username and a password; "
                             "fix: set both or neither")
        return self

    @property
    def has_auth(self) -> bool:
        return self.bearer_token is not None or self.basic_auth_username is not None


class GcSettings(_Strict):
    """``actions.gc``: when a message GC round is complete, and when large tables get rounds
    (the rule in full: :mod:`exporter.actions.gc`)."""

    # A database whose messages table holds more rows is large: its GC repeats rounds.
    large_table_rows: Annotated[
        int, _fix("use a row count; above it message GC repeats rounds")
    ] = Field(default=10_000_000, ge=1)
    target_rows: Annotated[
        int | None, _fix("use the row count rounds aim below; unset means large_table_rows")
    ] = Field(default=None, ge=0)
    max_rounds: Annotated[int, _fix("use 1 to 100 rounds")] = Field(default=5, ge=1, le=100)
    round_pause: Duration = 60.0
    # How long a round waits for the rows to start falling (or a callback) before it
    # concludes there is nothing to delete: room for a client that starts slowly.
    callback_timeout: Duration = 300.0
    # Once the rows have fallen, how long without a new low completes the round; the count
    # is read three times per interval from the request on.
    settle_interval: Duration = 30.0
    round_timeout: Duration = 3600.0

    @model_validator(mode="after")
    def _round_outlasts_its_waits(self) -> GcSettings:
        for name in ("callback_timeout", "settle_interval"):
            if self.round_timeout <= getattr(self, name):
                raise ValueError(f"round_timeout must be longer than {name}; fix: raise "
                                 f"round_timeout or lower {name}")
        return self


class CleanupSettings(_Strict):
    """``actions.cleanup``: ``docker exec`` of the WA cleanup script in each container."""

    script: str = "/opt/whatsapp/bin/cleanup.sh"
    timeout: Duration = 600.0
    parallel: Annotated[int, _fix("use 1 to 64 containers at once")] = Field(
        default=4, ge=1, le=64)
    output_tail_bytes: int = Field(default=2048, ge=0, le=65536)


class ActionsSettings(_Strict):
    # Remediation is opt-in: list the actions this exporter may run (gc, media_gc, cleanup).
    allowed: list[ActionName] = []
    dry_run: bool = False
    state_dir: Annotated[Path, _fix("name a directory the exporter may write, e.g. "
                                    "/var/lib/wa-exporter")] = Path("/var/lib/wa-exporter")
    audit_max_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)
    # How long a decision may wait for the cross-replica lock (connect + one query) before
    # it records skipped_lock_unavailable: the webhook answers within it even when the
    # database is black-holed.
    lock_timeout: Duration = Field(default=3.0, gt=0, le=60)
    cooldown: dict[ActionName, Duration] = {"gc": 3600.0, "media_gc": 6 * 3600.0,
                                            "cleanup": 3600.0}
    window: WindowSettings | None = None
    timezone: TimeZone = "UTC"
    alert_rules: dict[str, ActionName] = {}  # alertname -> action, when no action label
    # The `instance` label(s) Prometheus gives this exporter. With one exporter per host
    # behind one Alertmanager, a firing alert whose `instance` is another is another host's:
    # recorded as skipped_other_host. Empty: every alert is for this exporter.
    instances: list[Annotated[str, Field(min_length=1)]] = []
    # Replaces the host cron job of the WA guide. gc needs the WA API settings to run.
    schedules: list[ScheduleEntry] = [ScheduleEntry(action="cleanup", cron="0 3 * * *"),
                                      ScheduleEntry(action="gc", cron="0 4 * * *")]
    gc: GcSettings = GcSettings()
    cleanup: CleanupSettings = CleanupSettings()

    def cooldown_for(self, action: str) -> float:
        return self.cooldown.get(action, 3600.0)

    def window_open(self, timestamp: float) -> bool:
        if self.window is None:
            return True
        from datetime import datetime
        from zoneinfo import ZoneInfo

        local = datetime.fromtimestamp(timestamp, ZoneInfo(self.timezone))
        now = local.strftime("%H:%M")
        start, end = self.window.start, self.window.end
        # A window such as 22:00-04:00 crosses midnight: its day is the one it started on.
        inside = start <= now < end if start <= end else (now >= start or now < end)
        day = local if start <= end or now >= start else local.fromordinal(local.toordinal() - 1)
        return inside and _WEEKDAYS[day.weekday()] in self.window.days


class UpgradeSettings(_Strict):
    """``upgrade``: when the install is ready for a WA client upgrade (``upgrade-check``)."""

    # Meta's guide: a messages table above 2 million rows is "large"; use message GC around
    # upgrades. (actions.gc.large_table_rows is a different bound: when GC repeats rounds.)
    large_table_rows: Annotated[
        int, _fix("use a row count; at or above it a messages table is large, default 2000000")
    ] = Field(default=2_000_000, ge=1)
    # The guide asks for message GC once every 24 hours; older is reported, 2 hours of slack.
    gc_max_age: Duration = 26 * 3600.0
    media_min_avail_ratio: Annotated[
        float, _fix("use a fraction between 0 and 1, e.g. 0.10 for 10 %")
    ] = Field(default=0.10, ge=0, le=1)


class FileSettings(_Strict):
    """Everything the YAML ``--config.file`` may hold."""

    collectors: CollectorsSettings = CollectorsSettings()
    actions: ActionsSettings = ActionsSettings()
    webhook: WebhookSettings = WebhookSettings()
    wa_api: WaApiOptions = WaApiOptions()
    upgrade: UpgradeSettings = UpgradeSettings()


class Settings(_Strict):
    database: DatabaseSettings | None
    collectors: CollectorsSettings = CollectorsSettings()
    actions: ActionsSettings = ActionsSettings()
    webhook: WebhookSettings = WebhookSettings()
    wa_api: WaApiSettings | None = None  # unset: no WA_WEB_* variables, so no API actions
    upgrade: UpgradeSettings = UpgradeSettings()

    def unavailable_actions(self) -> dict[str, str]:
        """Allowed actions these settings cannot run, each with what is missing and the fix."""
        api = ("the WA API is not configured; fix: set WA_WEB_URL, WA_WEB_USERNAME and "
               "WA_WEB_PASSWORD (or WA_WEB_PASSWORD_FILE)")
        database = ("the WA database is not configured; fix: pass --db.env-file with the WA "
                    "client's db.env or set WA_DB_ENGINE and the other WA_DB_* variables")
        missing: dict[str, str] = {}
        for name in self.actions.allowed:
            if name in ("gc", "media_gc") and self.wa_api is None:
                missing[name] = f"action {name!r} is allowed but {api}"
            elif name == "gc" and self.database is None:
                missing[name] = f"action {name!r} is allowed but {database}"
        return missing


# --- loading --------------------------------------------------------------------------------

SECRET_VARIABLES = ("WA_DB_PASSWORD", "WA_WEB_PASSWORD")


def read_env_file(path: Path) -> dict[str, str]:
    """Read a docker-style env file such as the WA client's ``db.env``.

    ``KEY=value`` per line; blank lines and ``#`` comments are skipped; an ``export``
    prefix and one pair of matching surrounding quotes are removed. A leading UTF-8 byte-order
    mark (editors on Windows write one) is skipped, as Docker's ``--env-file`` skips it.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(
            f"--db.env-file: cannot read {str(path)!r}: {exc.strerror or exc}; "
            "fix: point it at the WA client's db.env and make it readable"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(
            f"--db.env-file: {str(path)!r} is not UTF-8 text; fix: point it at the WA db.env"
        ) from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(
                f"--db.env-file: {path}:{number} is not a KEY=value line; "
                "fix: remove the line or write it as KEY=value"
            )
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _resolve_secret_files(variables: dict[str, str]) -> dict[str, str]:
    resolved = dict(variables)
    for name in SECRET_VARIABLES:
        file_key = f"{name}_FILE"
        path = resolved.pop(file_key, None)
        if path is None:
            continue
        if resolved.get(name):
            raise ConfigError(
                f"{name}: set both directly and through {file_key}; fix: keep only one of them"
            )
        try:
            resolved[name] = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{file_key}: cannot read {path!r}: {exc.strerror or exc}; "
                f"fix: point {file_key} at a readable file holding the secret"
            ) from None
        except UnicodeDecodeError:  # its message would quote a byte of the secret
            raise ConfigError(
                f"{file_key}: {path!r} is not UTF-8 text; fix: write the secret as UTF-8"
            ) from None
    return resolved


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"--config.file: cannot read {str(path)!r}: {exc.strerror or exc}; "
            "fix: point it at a readable YAML file"
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"--config.file: {path} is not UTF-8 text (byte {exc.start}); fix: save it as "
            "UTF-8"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(
            f"--config.file: {path} is not valid YAML{at}; fix: correct the YAML syntax"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config.file: {path} must hold a mapping of settings; fix: see check-config"
        )
    return data


def load_settings(
    *,
    config_file: Path | None = None,
    db_env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings; raise :class:`ConfigError` with a one-line message on any problem."""
    environ = os.environ if environ is None else environ
    variables = read_env_file(db_env_file) if db_env_file else {}
    variables.update({k: v for k, v in environ.items() if k.startswith("WA_")})
    variables = _resolve_secret_files(variables)

    file_data = _load_yaml(config_file) if config_file else {}
    try:
        file_settings = FileSettings.model_validate(file_data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, FileSettings, prefix="")) from None

    database: DatabaseSettings | None = None
    wants_db = file_settings.collectors.messages.enabled
    db_vars = {k: v for k, v in variables.items() if k.startswith("WA_DB_")}
    if "WA_DB_ENGINE" not in db_vars and wants_db:
        raise ConfigError(
            "WA_DB_ENGINE: not set; fix: pass --db.env-file with the WA client's db.env, "
            "set WA_DB_* in the environment, or disable collectors.messages"
        )
    if db_vars or wants_db:
        try:
            database = DatabaseSettings.model_validate(db_vars)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, DatabaseSettings, prefix="")) from None
    return Settings(database=database, collectors=file_settings.collectors,
                    actions=file_settings.actions, webhook=file_settings.webhook,
                    wa_api=_wa_api(variables, file_settings.wa_api),
                    upgrade=file_settings.upgrade)


def _wa_api(variables: Mapping[str, str], options: WaApiOptions) -> WaApiSettings | None:
    """The API settings if any ``WA_WEB_*`` variable is set; a partial set is an error."""
    web_vars = {k: v for k, v in variables.items() if k.startswith("WA_WEB_") and v.strip()}
    if not web_vars:
        return None
    values: dict[str, Any] = {k: v for k, v in options if v is not None}
    values.update(web_vars)
    try:
        return WaApiSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, WaApiSettings, prefix="")) from None


# --- error messages --------------------------------------------------------------------------


def _field_info(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[Any, bool]:
    """The pydantic FieldInfo at ``loc`` (aliases understood) and whether it holds a secret."""
    current: Any = model
    info = None
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            break
        fields = current.model_fields
        info = fields.get(str(part)) or next(
            (f for f in fields.values() if f.alias == part), None
        )
        if info is None:
            break
        current = info.annotation
    secret = info is not None and "Secret" in str(info.annotation)
    return info, secret


def _describe(exc: ValidationError, model: type[BaseModel], prefix: str) -> str:
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    key = prefix + ".".join(str(p) for p in loc) if loc else (prefix.rstrip(".") or "config")
    info, secret = _field_info(model, loc)
    if error["type"] == "extra_forbidden":
        parent_model, _ = _field_info(model, loc[:-1]) if len(loc) > 1 else (None, False)
        owner = parent_model.annotation if parent_model is not None else model
        known = ", ".join(sorted(owner.model_fields)) if hasattr(owner, "model_fields") else ""
        return f"{key}: unknown key; fix: remove it or use one of: {known}"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = "<secret>" if secret else repr(value)
    fix = None
    if info is not None:
        extra = info.json_schema_extra
        if isinstance(extra, dict):
            fix = extra.get("fix")
        for meta in info.metadata:
            extra = getattr(meta, "json_schema_extra", None)
            if isinstance(extra, dict) and "fix" in extra:
                fix = extra["fix"]
    if "; fix:" in message:
        return f"{key}: {message}"
    if error["type"] == "missing":
        return f"{key}: not set; fix: {fix or 'set it'}"
    message = message[:1].lower() + message[1:]
    return f"{key}={shown}: {message}; fix: {fix or 'correct the value'}"


def render(settings: Settings) -> str:
    """The effective configuration as YAML, every secret shown as ``<secret>``."""
    data = settings.model_dump(mode="json", by_alias=False)
    if settings.database is not None:
        data["database"] = settings.database.model_dump(mode="json", by_alias=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
