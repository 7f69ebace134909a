"""The off-peak window: the default when none is configured, fixed windows (midnight, days,
the next opening), the settings it refuses, and the window learned from a synthetic week of
inflow — with an injected clock, never by waiting."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from exporter.actions.schedule import next_fire
from exporter.collectors.messages import MessagesCollector
from exporter.config import ActionsSettings, ConfigError, MessagesSettings, load_settings
from exporter.inflow import InflowProfile
from exporter.offpeak import OffPeak
from exporter.sources.database import RowSource, ServerReading, TableReading
from tests.unit.fakes import FixedReadings

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str, zone: ZoneInfo = BERLIN) -> float:
    """Epoch seconds of a local ``YYYY-MM-DD HH:MM``."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=zone).timestamp()


def window(timezone: str = "Europe/Berlin", profile: InflowProfile | None = None,
           **window: object) -> OffPeak:
    settings = ActionsSettings.model_validate({"timezone": timezone, "window": window or {}})
    return OffPeak(settings.window, settings.timezone, profile)


def test_with_actions_on_and_no_window_the_default_is_01_to_05_and_check_config_shows_it(
        tmp_path: Path) -> None:
    config = tmp_path / "wa-exporter.yml"
    config.write_text("collectors: {messages: {enabled: false}}\n"
                      "actions: {allowed: [gc, cleanup], timezone: Europe/Berlin}\n")
    from exporter.config import render

    shown = yaml.safe_load(render(load_settings(config_file=config, environ={})))
    assert shown["actions"]["window"] == {"mode": "fixed", "start": "01:00", "end": "05:00",
                                          "days": ["mon", "tue", "wed", "thu", "fri", "sat",
                                                   "sun"]}
    assert shown["actions"]["defer_max_age"] == "1d"


def test_the_default_schedules_fire_inside_the_default_window_every_day() -> None:
    settings = ActionsSettings.model_validate({"timezone": "Europe/Berlin"})
    off_peak = OffPeak(settings.window, settings.timezone)
    start = at("2026-03-23 12:00")  # a week that holds the change to summer time
    for entry in settings.schedules:
        fired, after = [], start
        for _ in range(7):
            after = next_fire(entry, after, settings.timezone)
            fired.append(after)
        assert all(off_peak.is_open(t) for t in fired), entry


def test_a_fixed_window_is_open_from_start_to_end_on_its_days() -> None:
    weekdays = window(start="22:00", end="04:00", days=["mon"])  # 2026-09-21 is a Monday
    assert not weekdays.is_open(at("2026-09-21 21:59"))
    assert weekdays.is_open(at("2026-09-21 22:00"))
    assert weekdays.is_open(at("2026-09-22 03:59"))  # Tuesday morning: Monday's window
    assert not weekdays.is_open(at("2026-09-22 04:00"))
    assert not weekdays.is_open(at("2026-09-22 22:30"))  # Tuesday night: not a window day
    assert weekdays.next_open(at("2026-09-22 12:00")) == at("2026-09-28 22:00")


def test_the_next_opening_is_the_next_start_in_the_windows_time_zone() -> None:
    default = window(timezone="America/New_York")
    now = at("2026-09-21 14:13", ZoneInfo("America/New_York"))
    assert default.next_open(now) == at("2026-09-22 01:00", ZoneInfo("America/New_York"))
    assert default.describe(now) | {"days": []} == {
        "mode": "fixed", "start": "01:00", "end": "05:00", "days": [],
        "timezone": "America/New_York", "open": False, "next_open": "2026-09-22 01:00 EDT"}
    assert window(mode="always").is_open(now) and window(mode="always").next_open(now) is None


@pytest.mark.parametrize(("value", "message"), [
    ({"start": "00:00", "end": "00:00"},
     "actions.window: start and end are both 00:00: a window of no time; fix: use window: "
     "always for no window"),
    (None, "actions.window: null is not a window; fix: use always (no window), learned, or "
     '{start: "01:00", end: "05:00"}'),
    ("sometimes", "actions.window.mode='sometimes': input should be 'fixed', 'learned' or "
     "'always'; fix: use always (no window)"),
    ({"start": "01:00", "end": "05:00", "days": []},
     "actions.window.days: no days: the window would never open; fix: list some of mon"),
])
def test_a_window_that_says_nothing_clear_is_refused_with_the_fix(
        tmp_path: Path, value: object, message: str) -> None:
    config = tmp_path / "wa-exporter.yml"
    config.write_text(yaml.safe_dump({"collectors": {"messages": {"enabled": False}},
                                      "actions": {"window": value}}))
    with pytest.raises(ConfigError) as caught:
        load_settings(config_file=config, environ={})
    assert str(caught.value).startswith(message)


def test_always_and_learned_read_as_written() -> None:
    assert ActionsSettings.model_validate({"window": "always"}).model_dump(
        mode="json")["window"] == "always"
    learned = ActionsSettings.model_validate({"window": " Learned "}).window
    assert (learned.mode, learned.start, learned.end) == ("learned", "01:00", "05:00")


# --- the learned window ------------------------------------------------------------------


def synthetic_week(profile: InflowProfile, start: float, days: float,
                   quiet: range = range(13, 17)) -> float:
    """A refresh every 10 minutes for ``days``: two databases taking 300 rows an hour each,
    18 in the hours of ``quiet`` (local time), and a message GC every night at 04:00 that
    halves the rows (a fall is not inflow). Returns the time of the last reading."""
    rows = {"wa_main": 10_000, "wa_second": 5_000}
    now = start
    for _ in range(int(days * 24 * 6)):
        hour = datetime.fromtimestamp(now, BERLIN).hour
        per_tick = 3 if hour in quiet else 50  # per database and 10 minutes
        rows = {name: count + per_tick for name, count in rows.items()}
        if datetime.fromtimestamp(now, BERLIN).strftime("%H:%M") == "04:00":
            rows = {name: count // 2 for name, count in rows.items()}
        profile.feed(rows, now)
        now += 600
    return now - 600


def test_learned_is_the_fixed_window_until_a_week_is_known_then_the_quietest_4_hours(
        tmp_path: Path) -> None:
    profile = InflowProfile("Europe/Berlin", tmp_path / "inflow.json")
    learned = window(profile=profile, mode="learned")
    start = at("2026-09-21 00:00")
    last = synthetic_week(profile, start, days=6.5)
    assert learned.hours(last).mode == "learning"
    assert (learned.hours(last).start, learned.hours(last).end) == ("01:00", "05:00")
    assert learned.is_open(at("2026-09-27 02:00")) and not learned.is_open(at("2026-09-27 14:00"))

    last = synthetic_week(profile, last + 600, days=1.0)
    hours = learned.hours(last)
    assert (hours.mode, hours.start, hours.end) == ("learned", "13:00", "17:00")
    assert learned.is_open(at("2026-09-28 14:30"))
    assert not learned.is_open(at("2026-09-28 02:00"))
    assert learned.next_open(at("2026-09-28 18:00")) == at("2026-09-29 13:00")

    per_hour = profile.per_hour(last)
    assert len(per_hour) == 168
    assert per_hour[0 * 24 + 14] == pytest.approx(36)  # Monday 14:00: 2 x 3 rows x 6 ticks
    # 04:00: GC's fall is no inflow (the ten minutes that hold it count 0, never less).
    assert per_hour[0 * 24 + 4] == pytest.approx(500)

    profile.save(last)  # a restart keeps what was learned
    again = window(profile=InflowProfile("Europe/Berlin", tmp_path / "inflow.json"),
                   mode="learned")
    assert again.hours(last) == hours


def test_an_hour_of_the_day_not_seen_all_week_keeps_the_fixed_window(tmp_path: Path) -> None:
    profile = InflowProfile("Europe/Berlin")
    start = at("2026-09-21 00:00")
    synthetic_week(profile, start, days=0.5)  # Monday 00:00-12:00, then a stop
    # A week after the start: the afternoons and evenings were never seen.
    last = synthetic_week(profile, start + 7 * 86400, days=0.2)
    learned = window(profile=profile, mode="learned")
    assert learned.hours(last).mode == "learning"
    assert 12 not in {hour % 24 for hour in profile.per_hour(last)}


def test_the_messages_collector_feeds_the_profile_and_publishes_it() -> None:
    def reading(rows: int) -> ServerReading:
        return ServerReading(tables={"wa_main": TableReading("wa_main", rows, 1, RowSource.COUNT)})

    profile = InflowProfile("UTC")
    now = [at("2026-09-21 14:00", ZoneInfo("UTC"))]
    collector = MessagesCollector(FixedReadings(reading(1000), reading(1050), reading(1080)),
                                  MessagesSettings(), clock=lambda: now[0], profile=profile)
    for _ in range(3):
        families = {f.name: f for f in collector.refresh()}
        now[0] += 900
    samples = families["whatsapp_messages_inflow_by_hour"].samples
    # Monday 14:00 UTC is hour 14 of the week: 80 rows in 30 minutes.
    assert [(s.labels, s.value) for s in samples] == [({"hour_of_week": "14"}, 160.0)]
