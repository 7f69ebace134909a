"""How a configuration problem reaches the operator: :class:`ConfigError`, one line naming
the key, what is wrong with the value and how to fix it; secret values never appear in it.

A field carries its fix as a hint (:func:`fix_hint`); :func:`describe_validation_error`
turns pydantic's first error into the line, with that hint.
"""

from __future__ import annotations

import reprlib
from typing import Any

from pydantic import BaseModel, Field, ValidationError

# How a wrong value is quoted: its start, never the whole of a large value.
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxdict, _QUOTE.maxlist, _QUOTE.maxstring, _QUOTE.maxother = 2, 4, 4, 80, 80


class ConfigError(Exception):
    """A configuration problem, phrased as one line: key, problem, fix."""


def fix_hint(text: str) -> Any:
    """Field metadata telling the operator how to fix a bad value of this field, e.g.
    ``Annotated[int, fix_hint("use 1 to 10 attempts per call")]``."""
    return Field(json_schema_extra={"fix": text})


def _field_info(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[Any, bool]:
    """The pydantic FieldInfo at ``loc`` (aliases understood) and whether it holds a secret."""
    current: Any = model
    info = None
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            break
        fields = current.model_fields
        info = fields.get(str(part)) or next(
            (f for f in fields.values() if f.alias == part), None
        )
        if info is None:
            break
        current = info.annotation
    secret = info is not None and "Secret" in str(info.annotation)
    return info, secret


def describe_validation_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """The first error of ``exc`` (raised by ``model``) as one line: key, problem, fix."""
    error = exc.errors()[0]
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) if loc else "config"
    info, secret = _field_info(model, loc)
    if error["type"] == "extra_forbidden":
        parent_model, _ = _field_info(model, loc[:-1]) if len(loc) > 1 else (None, False)
        owner = parent_model.annotation if parent_model is not None else model
        known = ", ".join(sorted(owner.model_fields)) if hasattr(owner, "model_fields") else ""
        return f"{key}: unknown key; fix: remove it or use one of: {known}"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    shown = "<secret>" if secret else _QUOTE.repr(value)
    fix = None
    if info is not None:
        extra = info.json_schema_extra
        if isinstance(extra, dict):
            fix = extra.get("fix")
        for meta in info.metadata:
            extra = getattr(meta, "json_schema_extra", None)
            if isinstance(extra, dict) and "fix" in extra:
                fix = extra["fix"]
    if "; fix:" in message:
        return f"{key}: {message}"
    if error["type"] == "missing":
        return f"{key}: not set; fix: {fix or 'set it'}"
    message = message[:1].lower() + message[1:]
    return f"{key}={shown}: {message}; fix: {fix or 'correct the value'}"
