"""The whole: :class:`FileSettings`, everything the YAML ``--config.file`` may hold, and
:class:`Settings`, that and the WA client's variables, the one object the exporter runs on;
with ``upgrade``, the one section of the file that belongs to no other.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from exporter.config.actions import ActionsSettings, WebhookSettings
from exporter.config.base import StrictModel
from exporter.config.collectors import CollectorsSettings
from exporter.config.errors import fix_hint
from exporter.config.types import Duration
from exporter.config.variables import DatabaseSettings, WaApiOptions, WaApiSettings


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


