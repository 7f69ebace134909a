"""Database source logic that needs no server: ignored settings, lock keepalive intervals."""

from __future__ import annotations

import logging

import pytest

from exporter.config import DatabaseSettings
from exporter.sources.database import warn_ignored_settings
from exporter.sources.locks import keepalive_interval


def settings(engine: str, **extra: str) -> DatabaseSettings:
    return DatabaseSettings.model_validate({"WA_DB_ENGINE": engine, "WA_DB_HOSTNAME": "db",
                                            **extra})


@pytest.mark.parametrize(("engine", "warned"), [("PGSQL", True), ("MYSQL", False)])
def test_the_mysql_only_idle_timeout_is_reported_ignored_on_postgresql(
        engine: str, warned: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        warn_ignored_settings(settings(engine, WA_DB_CONNECTION_IDLE_TIMEOUT="2000"))
        warn_ignored_settings(settings(engine))
    lines = [r.message for r in caplog.records]
    assert lines == (["WA_DB_CONNECTION_IDLE_TIMEOUT is MySQL only: ignored with PGSQL; the "
                      "cluster lock session follows the server's idle_session_timeout"]
                     if warned else [])


@pytest.mark.parametrize(("idle_timeout", "interval"), [
    (None, 60.0),  # no idle timeout known: still every minute, for firewalls and NAT
    (2.0, 1.0), (4.0, 2.0), (180.0, 60.0)])
def test_a_lock_session_is_pinged_at_half_its_idle_timeout_and_at_least_each_minute(
        idle_timeout: float | None, interval: float) -> None:
    assert keepalive_interval(idle_timeout) == interval
