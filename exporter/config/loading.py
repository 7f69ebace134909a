"""Building the one settings object from the WA client's db.env, the environment and YAML.

Sources, lowest precedence first: the ``--db.env-file`` (the WA client's own file,
read as-is), then the process environment (``WA_DB_*``), then for everything that
is not a WA variable the optional YAML ``--config.file``. Every secret may also be
given as ``NAME_FILE``. Every problem is a :class:`~exporter.config.errors.ConfigError`.
:func:`render` shows the result as YAML, secrets hidden (``check-config``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from exporter.config.errors import ConfigError, describe_validation_error
from exporter.config.models import (
    DatabaseSettings,
    FileSettings,
    Settings,
    WaApiOptions,
    WaApiSettings,
)

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
            secret = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(
                f"{file_key}: cannot read {path!r}: {exc.strerror or exc}; "
                f"fix: point {file_key} at a readable file holding the secret"
            ) from None
        except UnicodeDecodeError:  # its message would quote a byte of the secret
            raise ConfigError(
                f"{file_key}: {path!r} is not UTF-8 text; fix: write the secret as UTF-8"
            ) from None
        if not secret.strip():
            raise ConfigError(f"{file_key}: {path!r} is empty; fix: write the secret into it")
        resolved[name] = secret
    return resolved


MAX_YAML_BYTES = 1024 * 1024
# Values in a YAML document with every alias expanded, as validation walks them: a few
# hundred in a real file; an alias bomb (aliases of aliases of lists) has billions.
MAX_YAML_VALUES = 100_000


def load_yaml(path: Path, flag: str) -> Any:
    """The one YAML document in ``path``; every problem a :class:`ConfigError` naming
    ``flag``. Small and fast whatever the file holds: at most 1 MiB, and aliases may not
    expand it past :data:`MAX_YAML_VALUES` values; no message quotes the content."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {str(path)!r}: {exc.strerror or exc}; "
                          "fix: point it at a readable file") from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"{flag}: {path} is larger than {MAX_YAML_BYTES // 1024} KiB; fix: "
                          "point it at the settings file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{flag}: {path} is not UTF-8 text (byte {exc.start}); fix: save it "
                          "as UTF-8") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if not _within(node, MAX_YAML_VALUES):
            raise ConfigError(f"{flag}: {path} expands to more than {MAX_YAML_VALUES} values "
                              "through its aliases (*name), or an alias holds itself; fix: "
                              "write the settings out without such aliases")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"{flag}: {path} is not valid YAML{at}; fix: correct the YAML "
                          "syntax") from None
    except RecursionError:
        raise ConfigError(f"{flag}: {path} is nested too deeply; fix: correct the YAML "
                          "syntax") from None
    finally:
        loader.dispose()


def _within(root: yaml.Node, limit: int) -> bool:
    """Whether the document under ``root`` holds at most ``limit`` values with every alias
    expanded (an alias is the node it names, once more), and no alias holds itself. Each
    node is counted once, so this takes the time of the file, not of the expansion."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the path from the root: met again, a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children = [] if isinstance(node, yaml.ScalarNode) else [
            child for item in node.value
            for child in (item if isinstance(item, tuple) else (item,))]
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in children)
            if sizes[id(node)] > limit:
                return False
        elif id(node) in open_nodes:
            return False
        elif id(node) not in sizes:
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children)
    return True


def _load_yaml(path: Path) -> dict[str, Any]:
    data = load_yaml(path, "--config.file")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"--config.file: {path} must hold a mapping of settings; fix: see check-config"
        )
    return data


def load_file_settings(config_file: Path | None) -> FileSettings:
    """The YAML ``--config.file`` alone, without the WA variables (``run --exporter.url``
    needs only its webhook credentials)."""
    file_data = _load_yaml(config_file) if config_file else {}
    try:
        return FileSettings.model_validate(file_data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, FileSettings)) from None


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

    file_settings = load_file_settings(config_file)
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
            raise ConfigError(describe_validation_error(exc, DatabaseSettings)) from None
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
        raise ConfigError(describe_validation_error(exc, WaApiSettings)) from None


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
