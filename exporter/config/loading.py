"""Building the one settings object from the WA client's db.env, the environment and YAML.

Sources, lowest precedence first: the ``--db.env-file`` (the WA client's own file,
read as-is), then the process environment (``WA_DB_*``), then for everything that
is not a WA variable the optional YAML ``--config.file``. Every secret may also be
given as ``NAME_FILE``. Every problem found is a line of one
:class:`~exporter.config.errors.ConfigError`.
:func:`render` shows the result as YAML, secrets hidden (``check-config``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from exporter.config.errors import ConfigError, describe_validation_errors
from exporter.config.files import load_yaml, read_secret, read_text
from exporter.config.settings import FileSettings, Settings
from exporter.config.variables import DatabaseSettings, WaApiOptions, WaApiSettings

SECRET_VARIABLES = ("WA_DB_PASSWORD", "WA_WEB_PASSWORD")


def read_env_file(path: Path) -> dict[str, str]:
    """Read a docker-style env file such as the WA client's ``db.env``.

    ``KEY=value`` per line; blank lines and ``#`` comments are skipped; an ``export``
    prefix and one pair of matching surrounding quotes are removed. A leading UTF-8 byte-order
    mark (editors on Windows write one) is skipped, as Docker's ``--env-file`` skips it.
    """
    text = read_text(path, "--db.env-file", holding="the WA client's db.env variables",
                     encoding="utf-8-sig")
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


# Where a secret's file could not be read: its problem is reported and the settings are not
# built, so this stands in for the secret while the other variables of its part are checked.
_UNREAD = "<unread>"


def _resolve_secret_files(variables: dict[str, str], problems: list[str]) -> dict[str, str]:
    """``variables`` with each secret's ``NAME_FILE`` read into ``NAME``; every problem added
    to ``problems``."""
    resolved = dict(variables)
    for name in SECRET_VARIABLES:
        file_key = f"{name}_FILE"
        path = resolved.pop(file_key, None)
        if path is None:
            continue
        if resolved.get(name):
            problems.append(f"{name}: set both directly and through {file_key}; fix: keep only "
                            "one of them")
            continue
        try:
            resolved[name] = read_secret(Path(path), file_key).reveal()
        except ConfigError as exc:
            problems += exc.problems
            resolved[name] = _UNREAD
    return resolved


def _load_yaml(path: Path) -> dict[str, Any]:
    data = load_yaml(path, "--config.file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config.file: {path} must hold a mapping of settings; fix: see check-config"
        )
    return data


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], data: Any) -> M:
    """``data`` as a ``model``; a :class:`ConfigError` with a line for each of its errors."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(*describe_validation_errors(exc, model)) from None


def load_file_settings(config_file: Path | None) -> FileSettings:
    """The YAML ``--config.file`` alone, without the WA variables (``run --exporter.url``
    needs only its webhook credentials)."""
    return _validate(FileSettings, _load_yaml(config_file) if config_file else {})


T = TypeVar("T")


def _attempt(problems: list[str], build: Callable[[], T]) -> T | None:
    """What ``build`` returns, or None with its problems added to ``problems``."""
    try:
        return build()
    except ConfigError as exc:
        problems += exc.problems
        return None


def load_settings(
    *,
    config_file: Path | None = None,
    db_env_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build the settings, or raise one :class:`ConfigError` with every problem found, a
    line each. Each part is checked even when another failed: the YAML file, the database
    variables and the WA API variables; only what depends on a part that could not be read
    is not (the variables when the ``--db.env-file`` cannot be read)."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    variables = _attempt(problems, lambda: read_env_file(db_env_file) if db_env_file else {})
    if variables is not None:
        variables.update({k: v for k, v in environ.items() if k.startswith("WA_")})
        variables = _resolve_secret_files(variables, problems)
    file_settings = _attempt(problems, lambda: load_file_settings(config_file))
    database = wa_api = None
    if variables is not None:
        # Unknown when the file is wrong: then a missing WA_DB_ENGINE is not reported.
        wants_db = file_settings.collectors.messages.enabled if file_settings else None
        options = file_settings.wa_api if file_settings else WaApiOptions()
        database = _attempt(problems, lambda: _database(variables, wants_db))
        wa_api = _attempt(problems, lambda: _wa_api(variables, options))
    if problems or file_settings is None:
        raise ConfigError(*problems)
    return Settings(database=database, collectors=file_settings.collectors,
                    actions=file_settings.actions, webhook=file_settings.webhook,
                    wa_api=wa_api, upgrade=file_settings.upgrade)


def _database(variables: Mapping[str, str], wanted: bool | None) -> DatabaseSettings | None:
    """The database settings if any ``WA_DB_*`` variable is set or the messages collector
    needs them (``wanted``); None if neither."""
    db_vars = {k: v for k, v in variables.items() if k.startswith("WA_DB_")}
    if "WA_DB_ENGINE" not in db_vars and wanted:
        raise ConfigError(
            "WA_DB_ENGINE: not set; fix: pass --db.env-file with the WA client's db.env, "
            "set WA_DB_* in the environment, or disable collectors.messages"
        )
    return _validate(DatabaseSettings, db_vars) if db_vars or wanted else None


def _wa_api(variables: Mapping[str, str], options: WaApiOptions) -> WaApiSettings | None:
    """The API settings if any ``WA_WEB_*`` variable is set; a partial set is an error."""
    web_vars = {k: v for k, v in variables.items() if k.startswith("WA_WEB_") and v.strip()}
    if not web_vars:
        return None
    values: dict[str, Any] = {k: v for k, v in options if v is not None}
    values.update(web_vars)
    return _validate(WaApiSettings, values)


# Keys whose name alone misleads, explained where check-config prints them: two bounds on the
# rows of a messages table share the name large_table_rows and do different things.
KEY_NOTES = {
    ("actions", "gc", "large_table_rows"):
        "message GC repeats rounds on a table above this (the guide: above 10 M one call "
        "may not be enough); not upgrade.large_table_rows",
    ("upgrade", "large_table_rows"):
        "a table above this is large before an upgrade (the guide's 2 M): upgrade-check, "
        "whatsapp_upgrade_ready; not actions.gc.large_table_rows",
}


def render(settings: Settings) -> str:
    """The effective configuration as YAML, every secret shown as ``<secret>``, and a comment
    beside each key of :data:`KEY_NOTES`."""
    data = settings.model_dump(mode="json", by_alias=False)
    if settings.database is not None:
        data["database"] = settings.database.model_dump(mode="json", by_alias=True)
    return _annotate(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))


def _annotate(text: str) -> str:
    """Append ``# note`` to the lines of the keys in :data:`KEY_NOTES`, found by their path
    of enclosing keys (block-style YAML: a key's parents are the less indented keys above)."""
    path: list[tuple[int, str]] = []
    lines = []
    for line in text.splitlines():
        body = line.lstrip(" ")
        indent = len(line) - len(body)
        while path and path[-1][0] >= indent:
            path.pop()
        if ":" in body and not body.startswith("- "):
            path.append((indent, body.split(":", 1)[0]))
            note = KEY_NOTES.get(tuple(key for _, key in path))
            if note:
                line = f"{line}  # {note}"
        lines.append(line)
    return "\n".join(lines) + "\n"
