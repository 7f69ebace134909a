"""``media-gc`` and ``media_gc`` (in any case) name one action everywhere a person or a rule
writes an action's name: the configuration, alert labels and the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.actions.alertmanager import Notification, requests_for
from exporter.cli import make_parser
from exporter.config import ActionsSettings, ConfigError, load_settings

SPELLINGS = ["media_gc", "media-gc", "Media-GC", " MEDIA_GC "]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_the_configuration_takes_either_spelling(spelling: str) -> None:
    settings = ActionsSettings.model_validate({
        "allowed": [spelling, "gc"], "cooldown": {spelling: "2h"},
        "alert_rules": {"WhatsAppMediaVolumeLow": spelling},
        "schedules": [{"action": spelling, "cron": "0 5 * * *"}]})
    assert settings.allowed == ["media_gc", "gc"]
    assert settings.cooldown_for("media_gc") == 7200
    assert settings.alert_rules == {"WhatsAppMediaVolumeLow": "media_gc"}
    assert settings.schedules[0].action == "media_gc"


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_an_alert_label_takes_either_spelling(spelling: str) -> None:
    notification = Notification.model_validate({
        "version": "4", "status": "firing", "receiver": "wa-exporter", "groupKey": "{}:{}",
        "alerts": [{"status": "firing", "fingerprint": "f" * 16,
                    "labels": {"alertname": "WhatsAppMediaVolumeLow", "action": spelling}}]})
    [(request, outcome, reason)] = requests_for(
        notification, ActionsSettings.model_validate({"allowed": ["media_gc"]}))
    assert (request.action, outcome, reason) == ("media_gc", "", "")


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_run_takes_either_spelling(spelling: str) -> None:
    assert make_parser().parse_args(["run", spelling]).action == "media_gc"


def test_an_unknown_name_is_refused_with_the_known_ones(capsys: pytest.CaptureFixture[str],
                                                        tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        make_parser().parse_args(["run", "media"])
    assert caught.value.code == 2
    assert "'media' is not an action; fix: use one of gc, media_gc, cleanup" \
        in capsys.readouterr().err
    config = tmp_path / "wa-exporter.yml"
    config.write_text("collectors: {messages: {enabled: false}}\n"
                      "actions: {allowed: [mediagc]}\n")
    with pytest.raises(ConfigError, match=r"actions\.allowed\.0='mediagc': is not an action; "
                       "fix: use one of gc, media_gc, cleanup"):
        load_settings(config_file=config, environ={})
