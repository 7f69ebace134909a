"""The value types of the settings: secrets that print as ``<secret>``, durations, the WA
client's booleans, and the checked strings (URLs, paths, action names, times, cron).

Each is an ``Annotated`` type whose validator turns what an operator writes into the value
the code uses, or raises ``ValueError`` with the problem (and, where the type alone knows
it, the fix).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BeforeValidator, PlainSerializer, PlainValidator

from exporter.config.errors import fix_hint


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
        value = value.reveal()
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not value.strip():
        # An empty token would be matched by an empty Authorization header.
        raise ValueError("is empty or only whitespace; fix: set the secret, or leave the key "
                         "out")
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
    fix_hint("use seconds or a duration such as 500ms, 30s, 5m, 1h"),
]

# --- the WA client's own variables ------------------------------------------------------------

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


EnvBool = Annotated[
    bool, BeforeValidator(_env_bool), fix_hint("use true or false (1/0, yes/no are accepted too)")
]


def readable_file(value: Path | None) -> Path | None:
    if value is not None and not os.access(value, os.R_OK):
        raise ValueError(f"file {str(value)!r} is not readable")
    return value


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


WebUrl = Annotated[str, BeforeValidator(_web_url)]

# --- paths, actions, times ----------------------------------------------------------------


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("is not an absolute path")
    return value


AbsolutePath = Annotated[str, BeforeValidator(_absolute)]

ACTION_NAMES = ("gc", "media_gc", "cleanup")


def normalise_action(value: object) -> str:
    """An action's name as the code spells it: ``media-gc``, ``Media_GC`` and ``media_gc``
    are one action, in the configuration, in alert labels and on the command line alike."""
    return str(value).strip().lower().replace("-", "_")


def action_name(value: object) -> str:
    """A known action's name, normalised; ValueError naming the known ones otherwise."""
    name = normalise_action(value)
    if name not in ACTION_NAMES:
        raise ValueError(f"is not an action; fix: use one of {', '.join(ACTION_NAMES)} "
                         "(media-gc is media_gc)")
    return name


ActionName = Annotated[str, BeforeValidator(action_name)]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Only the first three letters count: "Monday" and "mon" are one day; WindowSettings checks
# that the result is a weekday.
Weekday = Annotated[str, BeforeValidator(lambda v: str(v).strip().lower()[:3])]


def _clock_time(value: object) -> str:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value).strip())
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError("is not a time of day; fix: use HH:MM, e.g. 01:30")
    return f"{int(match.group(1)):02d}:{match.group(2)}"


ClockTime = Annotated[str, BeforeValidator(_clock_time)]


def _timezone(value: object) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("is not a time zone; fix: use an IANA name such as UTC or "
                         "Europe/Berlin") from None
    return str(value)


TimeZone = Annotated[str, BeforeValidator(_timezone)]


def _cron(value: object) -> str:
    from croniter import croniter

    text = " ".join(str(value).split())
    if not croniter.is_valid(text) or len(text.split()) != 5:
        raise ValueError("is not a cron expression; fix: use five fields, e.g. '0 3 * * *'")
    return text


Cron = Annotated[str, BeforeValidator(_cron)]
