"""How configuration problems reach the operator: :class:`ConfigError`, every problem found
in one line naming the key, what is wrong with the value and how to fix it; secret values
never appear in it.

A field carries its fix as a hint (:func:`fix_hint`); :func:`describe_validation_errors`
turns each of pydantic's errors into a line, with that hint.
"""

from __future__ import annotations

import reprlib
from typing import Any, get_args

from pydantic import BaseModel, Field, ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

# How a wrong value is quoted: its start, never the whole of a large value.
_QUOTE = reprlib.Repr()
_QUOTE.maxlevel, _QUOTE.maxdict, _QUOTE.maxlist, _QUOTE.maxstring, _QUOTE.maxother = 2, 4, 4, 80, 80


# Lines described from one validation at most: a list of a thousand wrong entries is one
# mistake made many times, and the first lines show it.
MAX_DESCRIBED = 20


class ConfigError(Exception):
    """Configuration problems, each phrased as one line: key, problem, fix. ``problems``
    holds the lines, in the order found; ``str()`` is one problem per line."""

    def __init__(self, problem: str, *more: str) -> None:
        self.problems = list(dict.fromkeys((problem, *more)))  # each once, in order
        super().__init__("\n".join(self.problems))


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
        current = _model_in(info.annotation)
    secret = info is not None and "Secret" in str(info.annotation)
    return info, secret


def _model_in(annotation: Any) -> Any:
    """The model of an optional section (``Model | None``); any other annotation as it is."""
    models = [arg for arg in get_args(annotation)
              if isinstance(arg, type) and issubclass(arg, BaseModel)]
    return models[0] if len(models) == 1 else annotation


def describe_validation_errors(exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """Every error of ``exc`` (raised by ``model``) as one line each: key, problem, fix;
    past :data:`MAX_DESCRIBED`, one line counting the rest."""
    errors = exc.errors()
    lines = [_describe(error, model) for error in errors[:MAX_DESCRIBED]]
    if len(errors) > MAX_DESCRIBED:
        lines.append(f"{len(errors) - MAX_DESCRIBED} more problems like these; fix: correct "
                     "those above, then check again")
    return lines


def validation_error(model: type[BaseModel], problems: list[str]) -> ValidationError:
    """``problems``, each a line naming its key within ``model``, as the error a validator of
    ``model`` raises to report them all, together with the other errors of the validation
    (each under the model's own key)."""
    return ValidationError.from_exception_data(model.__name__, [
        InitErrorDetails(type=PydanticCustomError("config", "{problem}", {"problem": problem}),
                         loc=(), input=None) for problem in problems])


def _describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    """One error of a validation of ``model`` as one line: key, problem, fix."""
    loc = tuple(error["loc"])
    key = ".".join(str(p) for p in loc) if loc else "config"
    info, secret = _field_info(model, loc)
    if error["type"] == "extra_forbidden":
        parent_model, _ = _field_info(model, loc[:-1]) if len(loc) > 1 else (None, False)
        owner = _model_in(parent_model.annotation) if parent_model is not None else model
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
        # A message with its own fix names the key alone (the value may hide a secret, as
        # credentials in a URL do), except for an item of a list, which its index alone
        # does not name.
        item = loc and isinstance(loc[-1], int) and not secret
        return f"{key}={shown}: {message}" if item else f"{key}: {message}"
    if error["type"] == "missing":
        return f"{key}: not set; fix: {fix or 'set it'}"
    message = message[:1].lower() + message[1:]
    return f"{key}={shown}: {message}; fix: {fix or 'correct the value'}"
