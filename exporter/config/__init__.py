"""One validated settings object, built from the WA client's db.env, the environment and YAML.

``loading`` builds it (:func:`load_settings`), ``models`` defines it, ``types`` holds the
value types its fields use (secrets, durations, ...) and ``errors`` turns any problem into
a one-line :class:`ConfigError` naming the key and the fix. Import from here.
"""

from exporter.config.errors import ConfigError
from exporter.config.loading import load_settings, read_env_file, render
from exporter.config.models import (
    DEFAULT_PORTS,
    ActionsSettings,
    CleanupSettings,
    CollectorSettings,
    CollectorsSettings,
    ContainersSettings,
    DatabaseSettings,
    FileSettings,
    GcSettings,
    ImageRule,
    LogsSettings,
    MessagesSettings,
    Role,
    ScheduleEntry,
    Settings,
    UpgradeSettings,
    VolumeScanSettings,
    VolumeSettings,
    WaApiOptions,
    WaApiSettings,
    WebhookSettings,
    WindowSettings,
)
from exporter.config.types import (
    ACTION_NAMES,
    Duration,
    Secret,
    SecretValue,
    format_duration,
    parse_duration,
    scrub,
)

__all__ = [
    "ACTION_NAMES",
    "DEFAULT_PORTS",
    "ActionsSettings",
    "CleanupSettings",
    "CollectorSettings",
    "CollectorsSettings",
    "ConfigError",
    "ContainersSettings",
    "DatabaseSettings",
    "Duration",
    "FileSettings",
    "GcSettings",
    "ImageRule",
    "LogsSettings",
    "MessagesSettings",
    "Role",
    "ScheduleEntry",
    "Secret",
    "SecretValue",
    "Settings",
    "UpgradeSettings",
    "VolumeScanSettings",
    "VolumeSettings",
    "WaApiOptions",
    "WaApiSettings",
    "WebhookSettings",
    "WindowSettings",
    "format_duration",
    "load_settings",
    "parse_duration",
    "read_env_file",
    "render",
    "scrub",
]
