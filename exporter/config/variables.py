"""The WA client's own variables: its database (``WA_DB_*``, as in its ``db.env``) and its
REST API, the webapp (``WA_WEB_*``, with the ``wa_api`` options of the YAML file). The WA
models ignore other variables, since they are read from a file the WA client owns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from exporter.config.base import StrictModel
from exporter.config.errors import fix_hint
from exporter.config.types import Duration, EnvBool, SecretValue, WebUrl, readable_file

# --- the WA client's own database variables ---------------------------------------------

DEFAULT_PORTS = {"MYSQL": 3306, "PGSQL": 5432, "SQLITE": 0}


class DatabaseSettings(StrictModel):
    """The database server the WA client uses, described by its own ``db.env`` variables."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    engine: Annotated[
        Literal["MYSQL", "PGSQL", "SQLITE"],
        BeforeValidator(lambda v: str(v).strip().upper()),
        fix_hint("set WA_DB_ENGINE to MYSQL or PGSQL (SQLITE for the demo)"),
    ] = Field(alias="WA_DB_ENGINE")
    hostname: Annotated[
        str, fix_hint("set WA_DB_HOSTNAME to the DB server's host (for SQLITE: a directory)")
    ] = Field(alias="WA_DB_HOSTNAME", min_length=1)
    port: Annotated[
        int,
        fix_hint("set WA_DB_PORT to a TCP port between 1 and 65535 (MySQL 3306, PostgreSQL 5432)"),
    ] = Field(alias="WA_DB_PORT", default=0, ge=0, le=65535, validate_default=True)
    username: Annotated[
        str, fix_hint("set WA_DB_USERNAME to the DB user the WA client uses")
    ] = Field(alias="WA_DB_USERNAME", default="")
    password: Annotated[
        SecretValue | None, fix_hint("set WA_DB_PASSWORD or WA_DB_PASSWORD_FILE")
    ] = Field(alias="WA_DB_PASSWORD", default=None)
    name_prefix: Annotated[str, fix_hint("set WA_DB_NAME_PREFIX as in the WA client's db.env")] = (
        Field(alias="WA_DB_NAME_PREFIX", default="")
    )
    connection_idle_timeout_ms: Annotated[
        int | None,
        fix_hint("set WA_DB_CONNECTION_IDLE_TIMEOUT to milliseconds, e.g. 180000"),
    ] = Field(alias="WA_DB_CONNECTION_IDLE_TIMEOUT", default=None, gt=0)
    read_timeout_s: Annotated[
        float | None, fix_hint("set WA_DB_READ_TIMEOUT to seconds, e.g. 30")
    ] = Field(alias="WA_DB_READ_TIMEOUT", default=None, gt=0)
    ssl_ca: Annotated[Path | None, fix_hint("point WA_DB_SSL_CA at a readable PEM file")] = Field(
        alias="WA_DB_SSL_CA", default=None
    )
    ssl_cert: Annotated[
        Path | None, fix_hint("point WA_DB_SSL_CERT at a readable PEM file")
    ] = Field(alias="WA_DB_SSL_CERT", default=None)
    ssl_key: Annotated[Path | None, fix_hint("point WA_DB_SSL_KEY at a readable PEM file")] = Field(
        alias="WA_DB_SSL_KEY", default=None
    )
    ssl_verify: EnvBool = Field(alias="WA_DB_SSL_VERIFY", default=True)

    @field_validator("port", "connection_idle_timeout_ms", "read_timeout_s", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str) and not value.strip():
            return 0 if info.field_name == "port" else None
        return value

    @field_validator("ssl_ca", "ssl_cert", "ssl_key")
    @classmethod
    def _readable(cls, value: Path | None) -> Path | None:
        return readable_file(value)

    @field_validator("port")
    @classmethod
    def _default_port(cls, port: int, info: ValidationInfo) -> int:
        """Unset (0): the engine's usual port (SQLITE has none)."""
        engine = info.data.get("engine")  # absent when WA_DB_ENGINE is wrong: that is reported
        if port or engine is None:
            return port
        return DEFAULT_PORTS[engine]


# --- the WA client's REST API (the webapp) ---------------------------------------------------


class WaApiOptions(StrictModel):
    """YAML ``wa_api``: how to talk to the webapp (its address and login are ``WA_WEB_*``)."""

    verify: Annotated[
        bool | None, fix_hint("use false only for a self-signed certificate without a CA file")
    ] = None  # unset: WA_WEB_VERIFY, else true
    connect_timeout: Duration = 5.0
    read_timeout: Duration = 30.0
    retry_attempts: Annotated[int, fix_hint("use 1 to 10 attempts per call")] = Field(
        default=3, ge=1, le=10)
    retry_backoff: Duration = 0.5
    token_refresh_margin: Duration = 300.0


class WaApiSettings(WaApiOptions):
    """The webapp's API: ``WA_WEB_*`` variables plus the ``wa_api`` options from the YAML."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    url: Annotated[
        WebUrl,
        fix_hint("set WA_WEB_URL to the webapp's address, e.g. https://127.0.0.1:9090"),
    ] = Field(alias="WA_WEB_URL")
    username: Annotated[str, fix_hint("set WA_WEB_USERNAME to a WA API admin user")] = Field(
        alias="WA_WEB_USERNAME", min_length=1)
    password: Annotated[
        SecretValue, fix_hint("set WA_WEB_PASSWORD or WA_WEB_PASSWORD_FILE")
    ] = Field(alias="WA_WEB_PASSWORD")
    ca_file: Annotated[
        Path | None, AfterValidator(readable_file),
        fix_hint("point WA_WEB_CA_FILE at a readable PEM file with the webapp's CA"),
    ] = Field(alias="WA_WEB_CA_FILE", default=None)
    verify: EnvBool = Field(alias="WA_WEB_VERIFY", default=True)

    @model_validator(mode="after")
    def _ca_needs_verify(self) -> WaApiSettings:
        if self.ca_file is not None and not self.verify:
            raise ValueError("WA_WEB_CA_FILE is set but TLS verification is off; fix: drop "
                             "WA_WEB_VERIFY=false (wa_api.verify) or WA_WEB_CA_FILE")
        return self
