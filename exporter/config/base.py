"""The base of every settings model (and of the web config's): :class:`StrictModel`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """The base of every settings model: unknown keys are errors, and a model is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
