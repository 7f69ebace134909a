"""``collectors``: one section per collector, each with its interval, timeout and
stale_after. Defaults that follow another field (a timeout on the interval) are filled in
while validating, and settings that contradict each other are refused naming both keys.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ClassVar, Literal, TypeVar

from pydantic import Field, ValidationInfo, field_validator, model_validator

from exporter.config.base import StrictModel
from exporter.config.errors import fix_hint
from exporter.config.types import AbsolutePath, Duration, format_duration

V = TypeVar("V")
# What an unset field follows when the field it follows was wrong: that mistake is reported
# and the model is not built, so any valid value does; None would be a second, false error.
_STAND_IN = 1.0


def _unset_follows(value: V, info: ValidationInfo, field: str,
                   default: Callable[[float], float]) -> V | float:
    """``value`` as given, or, unset (None), ``default`` of the ``field`` validated before
    it (absent from ``info`` when it was wrong)."""
    if value is not None:
        return value
    earlier: float | None = info.data.get(field)
    return default(_STAND_IN if earlier is None else earlier)


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
