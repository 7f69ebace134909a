"""One validated settings object, built from the WA client's db.env, the environment and YAML.

``loading`` builds it (:func:`load_settings`); ``settings`` defines the whole, from its
sections: ``variables`` (the WA client's own ``WA_DB_*`` and ``WA_WEB_*``),
``collectors`` and ``actions``, each a :class:`~exporter.config.base.StrictModel`.
``types`` holds the value types their fields use (secrets, durations, ...), ``files``
reads every file the configuration names (one rule for secrets) and ``errors`` turns each
problem into a line of a :class:`ConfigError` naming the key and the fix. Import from here.
"""

from exporter.config.actions import (
    ActionsSettings,
    CleanupSettings,
    GcSettings,
    MediaGcSettings,
    ScheduleEntry,
    WebhookSettings,
    WindowSettings,
)
from exporter.config.collectors import (
    WA_STATS_DB_MIN_INTERVAL,
    CollectorSettings,
    CollectorsSettings,
    ContainersSettings,
    ImageRule,
    LogsSettings,
    MessagesSettings,
    Role,
    VolumeScanSettings,
    VolumeSettings,
    WaClientSettings,
    WaStatsAppSettings,
    WaStatsDbSettings,
)
from exporter.config.errors import ConfigError
from exporter.config.files import read_secret
from exporter.config.loading import (
    SECRET_VARIABLES,
    load_file_settings,
    load_settings,
    read_env_file,
    render,
)
from exporter.config.settings import FileSettings, Settings, UpgradeSettings
from exporter.config.types import (
    ACTION_NAMES,
    ActionName,
    Duration,
    EnvBool,
    Secret,
    SecretValue,
    TimeZone,
    action_name,
    format_duration,
    normalise_action,
    parse_duration,
    scrub,
)
from exporter.config.variables import (
    DEFAULT_PORTS,
    DatabaseSettings,
    WaApiOptions,
    WaApiSettings,
)

__all__ = [
    "ACTION_NAMES",
    "DEFAULT_PORTS",
    "SECRET_VARIABLES",
    "WA_STATS_DB_MIN_INTERVAL",
    "ActionName",
    "ActionsSettings",
    "CleanupSettings",
    "CollectorSettings",
    "CollectorsSettings",
    "ConfigError",
    "ContainersSettings",
    "DatabaseSettings",
    "Duration",
    "EnvBool",
    "FileSettings",
    "GcSettings",
    "ImageRule",
    "LogsSettings",
    "MediaGcSettings",
    "MessagesSettings",
    "Role",
    "ScheduleEntry",
    "Secret",
    "SecretValue",
    "Settings",
    "TimeZone",
    "UpgradeSettings",
    "VolumeScanSettings",
    "VolumeSettings",
    "WaApiOptions",
    "WaApiSettings",
    "WaClientSettings",
    "WaStatsAppSettings",
    "WaStatsDbSettings",
    "WebhookSettings",
    "WindowSettings",
    "action_name",
    "format_duration",
    "load_file_settings",
    "load_settings",
    "normalise_action",
    "parse_duration",
    "read_env_file",
    "read_secret",
    "render",
    "scrub",
]
