"""The settings models: one frozen, strict model per section, and :class:`Settings`, the
whole. Every model rejects unknown keys; every field that can be wrong carries its fix
(:func:`~exporter.config.errors.fix_hint`). Defaults that depend on another field (a port
on the engine, a timeout on the interval) are filled in while validating, so a model is
complete once built and never written afterwards.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from exporter.config.errors import fix_hint
from exporter.config.types import (
    WEEKDAYS,
    AbsolutePath,
    ActionName,
    ClockTime,
    Cron,
    Duration,
    EnvBool,
    SecretValue,
    TimeZone,
    WebUrl,
    Weekday,
    format_duration,
    readable_file,
)


class StrictModel(BaseModel):
    """The base of every settings model: unknown keys are errors, and a model is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- the WA client's own database variables ---------------------------------------------

DEFAULT_PORTS = {"MYSQL": 3306, "PGSQL": 5432, "SQLITE": 0}


class DatabaseSettings(StrictModel):
    """The database server the WA client uses, described by its own ``db.env`` variables."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    engine: Annotated[
        Literal["MYSQL", "PGSQL", "SQLITE"],
        BeforeValidator(lambda v: str(v).strip().upper()),
        fix_hint("set WA_DB_ENGINE to MYSQL or PGSQL (SQLITE for the demo)"),
    ] = Field(alias="WA_DB_ENGINE")
    hostname: Annotated[
        str, fix_hint("set WA_DB_HOSTNAME to the DB server's host (for SQLITE: a directory)")
    ] = Field(alias="WA_DB_HOSTNAME", min_length=1)
    port: Annotated[
        int,
        fix_hint("set WA_DB_PORT to a TCP port between 1 and 65535 (MySQL 3306, PostgreSQL 5432)"),
    ] = Field(alias="WA_DB_PORT", default=0, ge=0, le=65535, validate_default=True)
    username: Annotated[
        str, fix_hint("set WA_DB_USERNAME to the DB user the WA client uses")
    ] = Field(alias="WA_DB_USERNAME", default="")
    password: Annotated[
        SecretValue | None, fix_hint("set WA_DB_PASSWORD or WA_DB_PASSWORD_FILE")
    ] = Field(alias="WA_DB_PASSWORD", default=None)
    name_prefix: Annotated[str, fix_hint("set WA_DB_NAME_PREFIX as in the WA client's db.env")] = (
        Field(alias="WA_DB_NAME_PREFIX", default="")
    )
    connection_idle_timeout_ms: Annotated[
        int | None,
        fix_hint("set WA_DB_CONNECTION_IDLE_TIMEOUT to milliseconds, e.g. 180000"),
    ] = Field(alias="WA_DB_CONNECTION_IDLE_TIMEOUT", default=None, gt=0)
    read_timeout_s: Annotated[
        float | None, fix_hint("set WA_DB_READ_TIMEOUT to seconds, e.g. 30")
    ] = Field(alias="WA_DB_READ_TIMEOUT", default=None, gt=0)
    ssl_ca: Annotated[Path | None, fix_hint("point WA_DB_SSL_CA at a readable PEM file")] = Field(
        alias="WA_DB_SSL_CA", default=None
    )
    ssl_cert: Annotated[
        Path | None, fix_hint("point WA_DB_SSL_CERT at a readable PEM file")
    ] = Field(alias="WA_DB_SSL_CERT", default=None)
    ssl_key: Annotated[Path | None, fix_hint("point WA_DB_SSL_KEY at a readable PEM file")] = Field(
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
        return readable_file(value)

    @field_validator("port")
    @classmethod
    def _default_port(cls, port: int, info: ValidationInfo) -> int:
        """Unset (0): the engine's usual port (SQLITE has none)."""
        engine = info.data.get("engine")  # absent when WA_DB_ENGINE is wrong: that is reported
        if port or engine is None:
            return port
        return DEFAULT_PORTS[engine]


# --- the WA client's REST API (the webapp) ---------------------------------------------------


class WaApiOptions(StrictModel):
    """YAML ``wa_api``: how to talk to the webapp (its address and login are ``WA_WEB_*``)."""

    verify: Annotated[
        bool | None, fix_hint("use false only for a self-signed certificate without a CA file")
    ] = None  # unset: WA_WEB_VERIFY, else true
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 30.0
    retry_attempts: Annotated[int, fix_hint("use 1 to 10 attempts per call")] = Field(
        default=3, ge=1, le=10)
    retry_backoff: Duration = 0.5
    token_refresh_margin: Duration = 300.0


class WaApiSettings(WaApiOptions):
    """The webapp's API: ``WA_WEB_*`` variables plus the ``wa_api`` options from the YAML."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    url: Annotated[
        WebUrl,
        fix_hint("set WA_WEB_URL to the webapp's address, e.g. https://127.0.0.1:9090"),
    ] = Field(alias="WA_WEB_URL")
    username: Annotated[str, fix_hint("set WA_WEB_USERNAME to a WA API admin user")] = Field(
        alias="WA_WEB_USERNAME", min_length=1)
    password: Annotated[
        SecretValue, fix_hint("set WA_WEB_PASSWORD or WA_WEB_PASSWORD_FILE")
    ] = Field(alias="WA_WEB_PASSWORD")
    ca_file: Annotated[
        Path | None, AfterValidator(readable_file),
        fix_hint("point WA_WEB_CA_FILE at a readable PEM file with the webapp's CA"),
    ] = Field(alias="WA_WEB_CA_FILE", default=None)
    verify: EnvBool = Field(alias="WA_WEB_VERIFY", default=True)

    @model_validator(mode="after")
    def _ca_needs_verify(self) -> WaApiSettings:
        if self.ca_file is not None and not self.verify:
            raise ValueError("WA_WEB_CA_FILE is set but TLS verification is off; fix: drop "
                             "WA_WEB_VERIFY=false (wa_api.verify) or WA_WEB_CA_FILE")
        return self


# --- the exporter's own settings (YAML) -----------------------------------------------------

V = TypeVar("V")


def _unset_follows(value: V, info: ValidationInfo, field: str,
                   default: Callable[[float], float]) -> V | float:
    """``value`` as given, or, unset (None), ``default`` of the ``field`` validated before
    it; that field is absent from ``info`` when it was wrong, and is reported then."""
    earlier: float | None = info.data.get(field)
    return value if value is not None or earlier is None else default(earlier)


class CollectorSettings(StrictModel):
    # stale_after when unset: this, or three intervals if longer.
    STALE_AFTER: ClassVar[float] = 300.0

    enabled: bool = True
    interval: Duration = 60.0
    timeout: Duration | None = Field(default=None, validate_default=True)
    stale_after: Duration = Field(default=None, validate_default=True)

    @field_validator("timeout")
    @classmethod
    def _default_timeout(cls, timeout: float | None, info: ValidationInfo) -> float | None:
        """Unset: min(30s, interval). Refreshes never overlap, so a timeout longer than the
        interval only delays the next."""
        return _unset_follows(timeout, info, "interval", lambda interval: min(30.0, interval))

    @field_validator("stale_after", mode="before")
    @classmethod
    def _default_stale_after(cls, stale_after: object, info: ValidationInfo) -> object:
        return _unset_follows(stale_after, info, "interval",
                              lambda interval: max(cls.STALE_AFTER, 3 * interval))

    @model_validator(mode="after")
    def _figures_outlive_the_interval(self) -> CollectorSettings:
        if self.stale_after <= self.interval:
            raise ValueError(
                f"stale_after ({format_duration(self.stale_after)}) is not longer than "
                f"interval ({format_duration(self.interval)}): the figures would be dropped "
                "before the next refresh replaces them; fix: raise stale_after above interval "
                "(e.g. five intervals) or lower interval")
        return self


class MessagesSettings(CollectorSettings):
    exact_count_below: Annotated[
        int, fix_hint("use a row count; below it rows are counted exactly, above it estimated")
    ] = Field(default=1_000_000, ge=0)
    query_timeout: Duration = Field(default=None, validate_default=True)
    maintenance_database: Annotated[
        str, fix_hint("name a PostgreSQL database the DB user may connect to, e.g. postgres")
    ] = "postgres"

    @field_validator("query_timeout", mode="before")
    @classmethod
    def _default_query_timeout(cls, query_timeout: object, info: ValidationInfo) -> object:
        """Unset: 20s, or the refresh's timeout if that is shorter."""
        return _unset_follows(query_timeout, info, "timeout", lambda timeout: min(20.0, timeout))

    @model_validator(mode="after")
    def _a_query_fits_in_a_refresh(self) -> MessagesSettings:
        """A query that may outlast the refresh's timeout leaves the refresh failed and the
        query running into the next one: one locked table would stall every refresh."""
        assert self.timeout is not None
        if self.query_timeout <= self.timeout:
            return self
        query = f"query_timeout ({format_duration(self.query_timeout)})"
        if "timeout" in self.model_fields_set or self.timeout != self.interval:
            bound = f"timeout ({format_duration(self.timeout)})"
        else:  # unset timeout: the interval's, up to 30s
            bound = (f"interval ({format_duration(self.interval)}), which bounds each refresh "
                     "while timeout is unset")
        raise ValueError(f"{query} is longer than {bound}: a locked table would outlast every "
                         "refresh; fix: lower query_timeout, or set timeout to at least "
                         "query_timeout (refreshes never overlap: a longer one delays the next)")


Role = Literal["webapp", "coreapp", "master"]


class ImageRule(StrictModel):
    pattern: Annotated[
        str, fix_hint("use a glob on the image name, e.g. '*whatsapp*web*'")
    ] = Field(min_length=1)
    role: Role


class ContainersSettings(CollectorSettings):
    """Which containers are WA containers: ``names`` first, then the compose service label
    (waweb, wacore[N], master[N]), then ``images``."""

    interval: Duration = 15.0
    compose_project: Annotated[
        str | None, fix_hint("name the compose project of the WA install, or leave it unset")
    ] = None
    images: Annotated[
        tuple[ImageRule, ...],
        fix_hint("list entries {pattern: <glob on the image name>, role: webapp|coreapp|master}"),
    ] = (ImageRule(pattern="*whatsapp*web*", role="webapp"),
         ImageRule(pattern="*whatsapp*core*", role="coreapp"))
    names: Annotated[
        dict[str, Role], fix_hint("map each container name to webapp, coreapp or master")
    ] = Field(default_factory=dict)
    # Where the WA containers mount the media volume (the guide: /usr/local/wamedia); each
    # container's mount there is reported. Not collectors.volume.path: that is the exporter's.
    media_path: Annotated[
        AbsolutePath,
        fix_hint("use the absolute media path inside the WA containers, e.g. /usr/local/wamedia"),
    ] = "/usr/local/wamedia"


class LogsSettings(CollectorSettings):
    mode: Annotated[
        Literal["exec", "host"],
        fix_hint("use exec (docker exec into each container) or host (bind-mounted directories)"),
    ] = "exec"
    log_dir: Annotated[
        AbsolutePath, fix_hint("use the absolute log path inside the containers")
    ] = "/var/log/whatsapp"
    host_paths: Annotated[
        dict[str, Path], fix_hint("map each container name to the directory holding its logs")
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
        fix_hint("use path (the volume mounted into the exporter) or docker (ask for its "
                 "mountpoint)"),
    ] = "path"
    path: Annotated[
        Path, fix_hint("use the media volume's mount point inside the exporter")
    ] = Path("/usr/local/wamedia")
    name: Annotated[
        str, fix_hint("use the media volume's name, e.g. whatsappMedia")
    ] = Field(default="whatsappMedia", min_length=1)


class VolumeScanSettings(CollectorSettings):
    STALE_AFTER = 900.0

    interval: Duration = 300.0
    timeout: Duration | None = 120.0
    workers: Annotated[
        int | None, fix_hint("use a number of processes from 1 to 64, or leave unset for the CPUs")
    ] = Field(default=None, ge=1, le=64)
    full_scan_every: Annotated[
        int | None, fix_hint("use a number of refreshes from 1 up (1: every pass is full), or "
                             "leave unset for one full pass a day")
    ] = Field(default=None, ge=1)

    def full_scan_every_refreshes(self) -> int:
        """Passes from one full pass to the next: as configured, or about one a day."""
        return self.full_scan_every or max(1, round(86400 / self.interval))


# Meta: /v1/stats/db "can take a long time and affect app performance if your database is
# large"; no configuration reads it more often than this.
WA_STATS_DB_MIN_INTERVAL = 300.0


class WaStatsAppSettings(CollectorSettings):
    """``GET /v1/stats/app``: in the client's memory, cheap to poll."""

    interval: Duration = 30.0


class RarelyReadSettings(CollectorSettings):
    """An endpoint read seldom: its figures stay served from one read to the next."""

    interval: Duration = 3600.0
    timeout: Duration | None = 60.0
    stale_after: Duration = 3 * 3600.0


class WaStatsDbSettings(RarelyReadSettings):
    """``GET /v1/stats/db``: Meta warns it can take long and slow the client on a large
    database, so it is read at start, after each message GC and on this long interval."""

    @model_validator(mode="after")
    def _not_too_often(self) -> WaStatsDbSettings:
        if self.interval < WA_STATS_DB_MIN_INTERVAL:
            raise ValueError(f"interval {self.interval:g}s is below 5m: Meta asks to read "
                             "/v1/stats/db only when needed; fix: use 5m or more (default 1h)")
        return self


class WaClientSettings(StrictModel):
    """``collectors.wa_client``: the WA client's own stats and settings, relayed through the
    WA API login; on whenever ``WA_WEB_URL`` is set."""

    enabled: bool = True
    app: WaStatsAppSettings = WaStatsAppSettings()
    db: WaStatsDbSettings = WaStatsDbSettings()
    application: RarelyReadSettings = RarelyReadSettings()


class CollectorsSettings(StrictModel):
    messages: MessagesSettings = MessagesSettings()
    containers: ContainersSettings = ContainersSettings()
    logs: LogsSettings = LogsSettings()
    volume: VolumeSettings = VolumeSettings()
    volume_scan: VolumeScanSettings = VolumeScanSettings()
    wa_client: WaClientSettings = WaClientSettings()


# --- actions ----------------------------------------------------------------------------------


WindowMode = Literal["fixed", "learned", "always"]
WINDOW_FIX = ('use always (no window), learned, or {start: "01:00", end: "05:00"} (fixed, '
              "in actions.timezone)")


def _window_shorthand(value: object) -> object:
    """``window: always`` and ``window: learned`` stand for ``{mode: ...}``. A null window
    once meant "always"; now it would silently mean the default, so it is refused."""
    if value is None:
        raise ValueError(f"null is not a window; fix: {WINDOW_FIX}")
    if isinstance(value, str):
        return {"mode": value.strip().lower()}
    return value


class WindowSettings(StrictModel):
    """When alerts and schedules may start actions (the CLI ignores it), in
    ``actions.timezone``: ``fixed`` from start to end (by default 01:00-05:00, off-peak as the
    guide asks), ``learned`` (the quietest 4 hours of the last week's inflow; start to end
    until a week is known) or ``always``. An alert outside it is deferred until it opens."""

    mode: Annotated[WindowMode, fix_hint(WINDOW_FIX)] = "fixed"
    start: ClockTime = "01:00"
    end: ClockTime = "05:00"
    days: list[Weekday] = list(WEEKDAYS)

    @field_validator("days")
    @classmethod
    def _known_days(cls, days: list[str]) -> list[str]:
        if not days:
            raise ValueError(f"no days: the window would never open; fix: list some of "
                             f"{', '.join(WEEKDAYS)}, or leave days out for every day")
        for day in days:
            if day not in WEEKDAYS:
                raise ValueError(f"{day!r} is not a weekday; fix: use {', '.join(WEEKDAYS)}")
        return days

    @model_validator(mode="after")
    def _not_empty(self) -> WindowSettings:
        # 00:00-00:00 could mean a whole day or none: neither is said by an empty window.
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start}: a window of no time; fix: "
                             "use window: always for no window, or an end other than the start")
        return self

    @model_serializer(mode="wrap")
    def _shorthand(self, handler: SerializerFunctionWrapHandler) -> Any:
        """``always`` prints as it is written: its start, end and days mean nothing."""
        return "always" if self.mode == "always" else handler(self)


class ScheduleEntry(StrictModel):
    action: ActionName
    cron: Cron
    target: str | None = None  # cleanup: one container; default every WA container
    dry_run: bool = False


class WebhookSettings(StrictModel):
    """Who may call the Alertmanager webhook and the GC callback endpoint."""

    bearer_token: SecretValue | None = None
    bearer_token_file: Path | None = None
    basic_auth_username: str | None = None
    basic_auth_password: SecretValue | None = None
    basic_auth_password_file: Path | None = None
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)

    @model_validator(mode="wrap")
    @classmethod
    def _read_secret_files(
        cls, data: Any, handler: ModelWrapValidatorHandler[WebhookSettings]
    ) -> WebhookSettings:
        """Each ``*_file`` read into its secret. The input is validated as given first, so a
        wrong value is reported before an unreadable file; then once more with the secrets
        read in place of their files (now unset: a re-validation does not read again)."""
        settings = handler(data)
        secrets: dict[str, str | None] = {}
        for key, file_key in (("bearer_token", "bearer_token_file"),
                              ("basic_auth_password", "basic_auth_password_file")):
            path = getattr(settings, file_key)
            if path is None:
                continue
            if getattr(settings, key) is not None:
                raise ValueError(f"set {key} or {file_key}, not both; fix: keep only one")
            try:
                secret = Path(path).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ValueError(f"{file_key}: cannot read {str(path)!r}: "
                                 f"{exc.strerror or exc}; fix: make it readable") from None
            except UnicodeDecodeError:  # its message would quote a byte of the secret
                raise ValueError(f"{file_key}: {str(path)!r} is not UTF-8 text; fix: write "
                                 "the secret as UTF-8") from None
            if not secret:  # an empty token would match an empty Authorization header
                raise ValueError(f"{file_key}: {str(path)!r} is empty; fix: write the "
                                 "secret into it")
            secrets |= {key: secret, file_key: None}
        if secrets:
            settings = handler(dict(settings) | secrets)
        if (settings.basic_auth_username is None) != (settings.basic_auth_password is None):
            raise ValueError("basic auth needs both basic_auth_username and a password; "
                             "fix: set both or neither")
        return settings

    @property
    def has_auth(self) -> bool:
        return self.bearer_token is not None or self.basic_auth_username is not None


class GcSettings(StrictModel):
    """``actions.gc``: when a message GC round is complete, and when large tables get rounds
    (the rule in full: :mod:`exporter.actions.gc`)."""

    # A database whose messages table holds more rows is large: its GC repeats rounds.
    large_table_rows: Annotated[
        int, fix_hint("use a row count; above it message GC repeats rounds")
    ] = Field(default=10_000_000, ge=1)
    target_rows: Annotated[
        int | None, fix_hint("use the row count rounds aim below; unset means large_table_rows")
    ] = Field(default=None, ge=0)
    max_rounds: Annotated[int, fix_hint("use 1 to 100 rounds")] = Field(default=5, ge=1, le=100)
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


class MediaGcSettings(StrictModel):
    """``actions.media_gc``: media GC completes asynchronously, on its callback."""

    # How long a media GC waits for its completion callback before it ends unconfirmed.
    callback_timeout: Duration = 3600.0


class CleanupSettings(StrictModel):
    """``actions.cleanup``: ``docker exec`` of the WA cleanup script in each container."""

    script: str = "/opt/whatsapp/bin/cleanup.sh"
    timeout: Duration = 600.0
    parallel: Annotated[int, fix_hint("use 1 to 64 containers at once")] = Field(
        default=4, ge=1, le=64)
    output_tail_bytes: int = Field(default=2048, ge=0, le=65536)


class ActionsSettings(StrictModel):
    # Remediation is opt-in: list the actions this exporter may run (gc, media_gc, cleanup).
    allowed: list[ActionName] = []
    dry_run: bool = False
    state_dir: Annotated[Path, fix_hint("name a directory the exporter may write, e.g. "
                                    "/var/lib/wa-exporter")] = Path("/var/lib/wa-exporter")
    audit_max_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)
    # How long a decision may wait for the cross-replica lock (connect + one query) before
    # it records skipped_lock_unavailable: the webhook answers within it even when the
    # database is black-holed.
    lock_timeout: Duration = Field(default=3.0, gt=0, le=60)
    cooldown: dict[ActionName, Duration] = {"gc": 3600.0, "media_gc": 6 * 3600.0,
                                            "cleanup": 3600.0}
    window: Annotated[WindowSettings, BeforeValidator(_window_shorthand)] = WindowSettings()
    timezone: TimeZone = "UTC"
    # An alert deferred to the window is dropped if no notification renewed it for this long.
    defer_max_age: Duration = 24 * 3600.0
    alert_rules: dict[str, ActionName] = {}  # alertname -> action, when no action label
    # The `instance` label(s) Prometheus gives this exporter. With one exporter per host
    # behind one Alertmanager, a firing alert whose `instance` is another is another host's:
    # recorded as skipped_other_host. Empty: every alert is for this exporter.
    instances: list[Annotated[str, Field(min_length=1)]] = []
    # Replaces the host cron job of the WA guide. gc needs the WA API settings to run.
    schedules: list[ScheduleEntry] = [ScheduleEntry(action="cleanup", cron="0 3 * * *"),
                                      ScheduleEntry(action="gc", cron="0 4 * * *")]
    gc: GcSettings = GcSettings()
    media_gc: MediaGcSettings = MediaGcSettings()
    cleanup: CleanupSettings = CleanupSettings()

    def cooldown_for(self, action: str) -> float:
        return self.cooldown.get(action, 3600.0)


class UpgradeSettings(StrictModel):
    """``upgrade``: when the install is ready for a WA client upgrade (``upgrade-check``)."""

    # Meta's guide: a messages table above 2 million rows is "large"; use message GC around
    # upgrades. (actions.gc.large_table_rows is a different bound: when GC repeats rounds.)
    large_table_rows: Annotated[
        int, fix_hint("use a row count; at or above it a messages table is large, default 2000000")
    ] = Field(default=2_000_000, ge=1)
    # The guide asks for message GC once every 24 hours; older is reported, 2 hours of slack.
    gc_max_age: Duration = 26 * 3600.0
    media_min_avail_ratio: Annotated[
        float, fix_hint("use a fraction between 0 and 1, e.g. 0.10 for 10 %")
    ] = Field(default=0.10, ge=0, le=1)


class FileSettings(StrictModel):
    """Everything the YAML ``--config.file`` may hold."""

    collectors: CollectorsSettings = CollectorsSettings()
    actions: ActionsSettings = ActionsSettings()
    webhook: WebhookSettings = WebhookSettings()
    wa_api: WaApiOptions = WaApiOptions()
    upgrade: UpgradeSettings = UpgradeSettings()


class Settings(StrictModel):
    database: DatabaseSettings | None
    collectors: CollectorsSettings = CollectorsSettings()
    actions: ActionsSettings = ActionsSettings()
    webhook: WebhookSettings = WebhookSettings()
    wa_api: WaApiSettings | None = None  # unset: no WA_WEB_* variables, so no API actions
    upgrade: UpgradeSettings = UpgradeSettings()

    def schedules_message_gc(self) -> bool:
        """Whether a schedule of this exporter runs message GC for real: a ``gc`` schedule
        that is not a dry run, with ``gc`` allowed and runnable and actions not dry-run."""
        return ("gc" in self.actions.allowed and not self.actions.dry_run
                and "gc" not in self.unavailable_actions()
                and any(e.action == "gc" and not e.dry_run for e in self.actions.schedules))

    def warnings(self) -> list[str]:
        """What ``check-config`` warns about: settings that load but may not do what is meant."""
        found = list(self.unavailable_actions().values())
        if self.database is not None and not self.database.name_prefix:
            found.append("WA_DB_NAME_PREFIX is empty, so every database with a messages table "
                         "counts as a WA database; check-config --connect names them; fix: "
                         "set WA_DB_NAME_PREFIX as in the WA client's db.env")
        return found

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


