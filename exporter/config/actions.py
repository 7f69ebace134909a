"""``actions`` (what may run, when: the window, the schedules, the deferral of alerts, and
each action's own settings) and ``webhook`` (who may call the webhooks that start them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from exporter.config.base import StrictModel
from exporter.config.errors import ConfigError, fix_hint, validation_error
from exporter.config.files import read_secret
from exporter.config.types import (
    WEEKDAYS,
    ActionName,
    ClockTime,
    Cron,
    Duration,
    Secret,
    SecretValue,
    TimeZone,
    Weekday,
)

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
    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS))

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
        """Each ``*_file`` read into its secret (:func:`~exporter.config.files.read_secret`).
        The input is validated as given first, so a wrong value is reported before an
        unreadable file; then once more with the secrets read in place of their files (now
        unset: a re-validation does not read again)."""
        settings = handler(data)
        problems: list[str] = []
        secrets: dict[str, Secret | None] = {}
        for key, file_key in (("bearer_token", "bearer_token_file"),
                              ("basic_auth_password", "basic_auth_password_file")):
            path = getattr(settings, file_key)
            if path is None:
                continue
            if getattr(settings, key) is not None:
                problems.append(f"set {key} or {file_key}, not both; fix: keep only one")
                continue
            try:
                secrets |= {key: read_secret(path, file_key), file_key: None}
            except ConfigError as exc:
                problems += exc.problems
        if problems:
            raise validation_error(cls, problems)
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
    allowed: list[ActionName] = Field(default_factory=list)
    dry_run: bool = False
    state_dir: Annotated[Path, fix_hint("name a directory the exporter may write, e.g. "
                                    "/var/lib/wa-exporter")] = Path("/var/lib/wa-exporter")
    audit_max_bytes: int = Field(default=10 * 1024 * 1024, ge=4096)
    # How long a decision may wait for the cross-replica lock (connect + one query) before
    # it records skipped_lock_unavailable: the webhook answers within it even when the
    # database is black-holed.
    lock_timeout: Duration = Field(default=3.0, gt=0, le=60)
    cooldown: dict[ActionName, Duration] = Field(default_factory=lambda: {
        "gc": 3600.0, "media_gc": 6 * 3600.0, "cleanup": 3600.0})
    window: Annotated[WindowSettings, BeforeValidator(_window_shorthand)] = WindowSettings()
    timezone: TimeZone = "UTC"
    # An alert deferred to the window is dropped if no notification renewed it for this long.
    defer_max_age: Duration = 24 * 3600.0
    # alertname -> action, when no action label
    alert_rules: dict[str, ActionName] = Field(default_factory=dict)
    # The `instance` label(s) Prometheus gives this exporter. With one exporter per host
    # behind one Alertmanager, a firing alert whose `instance` is another is another host's:
    # recorded as skipped_other_host. Empty: every alert is for this exporter.
    instances: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    # Replaces the host cron job of the WA guide. gc needs the WA API settings to run.
    schedules: list[ScheduleEntry] = Field(default_factory=lambda: [
        ScheduleEntry(action="cleanup", cron="0 3 * * *"),
        ScheduleEntry(action="gc", cron="0 4 * * *")])
    gc: GcSettings = GcSettings()
    media_gc: MediaGcSettings = MediaGcSettings()
    cleanup: CleanupSettings = CleanupSettings()

    def cooldown_for(self, action: str) -> float:
        return self.cooldown.get(action, 3600.0)
