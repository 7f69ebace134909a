"""Reading the files the configuration names: settings, ``db.env``, secrets, YAML.

One reader, :func:`read_text`, turns every problem with a file into a
:class:`~exporter.config.errors.ConfigError` naming the key that named the file (a flag,
a variable or a YAML key) and the fix; no message quotes a byte of the content. Secrets
are read by :func:`read_secret`, under one rule, and YAML by :func:`load_yaml`, bounded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from exporter.config.errors import ConfigError
from exporter.config.types import Secret

# Larger than any settings file, db.env or secret; a file past it is the wrong file.
MAX_FILE_BYTES = 1024 * 1024
# Values in a YAML document with every alias expanded, as validation walks them: a few
# hundred in a real file; an alias bomb (aliases of aliases of lists) has billions.
MAX_YAML_VALUES = 100_000


def read_text(path: Path, key: str, *, holding: str, encoding: str = "utf-8") -> str:
    """The text of the file at ``path``, named by ``key``, which should hold ``holding``
    (said in the fix). At most :data:`MAX_FILE_BYTES` are read, so a wrong path (a device,
    a disk image) fails at once. Every problem is a :class:`ConfigError`."""
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {str(path)!r}: {exc.strerror or exc}; fix: "
                          f"point it at a readable file holding {holding}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{key}: {str(path)!r} is larger than {MAX_FILE_BYTES // 1024} KiB; "
                          f"fix: point it at the file holding {holding}")
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:  # its message would quote the byte
        raise ConfigError(f"{key}: {str(path)!r} is not UTF-8 text (byte {exc.start}); fix: "
                          "save it as UTF-8") from None


def read_secret(path: Path, key: str) -> Secret:
    """The secret in the file at ``path``, named by ``key``: the file's UTF-8 text with its
    surrounding whitespace removed (the newline of ``echo secret > file``, an editor's
    ``\\r\\n``, stray spaces), as Prometheus and Alertmanager read a ``password_file`` or
    ``credentials_file``, so one file serves both ends. A secret that begins or ends with
    whitespace cannot be given in a file. Nothing left is a :class:`ConfigError`: an empty
    token would match an empty ``Authorization`` header."""
    secret = read_text(path, key, holding="the secret").strip()
    if not secret:
        raise ConfigError(f"{key}: {str(path)!r} is empty; fix: write the secret into it")
    return Secret(secret)


def load_yaml(path: Path, flag: str) -> Any:
    """The one YAML document in ``path``; every problem a :class:`ConfigError` naming
    ``flag``. Small and fast whatever the file holds: at most :data:`MAX_FILE_BYTES`, and
    aliases may not expand it past :data:`MAX_YAML_VALUES` values; no message quotes the
    content."""
    text = read_text(path, flag, holding="the settings")
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
