"""The row-count rule that completes a message-GC round without its callbacks."""

from __future__ import annotations

import pytest

from exporter.actions.gc_watch import (
    NO_CHANGE,
    ROW_COUNT,
    WATCH_DB_SHARE,
    RowWatch,
    next_count_after,
)

SETTLE, GRACE = 30.0, 300.0


def watch(**before: int) -> RowWatch:
    return RowWatch(before or {"wa": 1000}, started=0.0, settle_interval=SETTLE, grace=GRACE)


def feed(w: RowWatch, readings: list[tuple[float, int]]) -> list[str | None]:
    """Observe ``(time, rows of "wa")`` readings; the verdict after each."""
    verdicts = []
    for now, rows in readings:
        w.observe({"wa": rows}, now)
        verdicts.append(w.verdict(now))
    return verdicts


def test_rows_that_fell_complete_the_round_once_no_new_low_comes_for_settle_interval() -> None:
    w = watch()
    assert feed(w, [(10, 900), (20, 800), (30, 800), (49, 800), (50, 800)]) == [
        None, None, None, None, ROW_COUNT]
    assert w.deleted == 200


def test_a_slow_start_is_waited_for_up_to_the_grace_period() -> None:
    """Unchanged rows for 250 s, then GC starts: nothing ends the round before it falls."""
    w = watch()
    readings = [(t, 1000) for t in range(10, 260, 10)] + [(260, 700), (280, 500), (300, 500)]
    verdicts = feed(w, readings)
    assert set(verdicts) == {None}
    assert feed(w, [(310, 500)]) == [ROW_COUNT]
    assert w.deleted == 500


def test_rows_that_never_fall_end_the_round_after_the_grace_period() -> None:
    w = watch()
    assert feed(w, [(290, 1000), (300, 1000)]) == [None, NO_CHANGE]
    assert w.deleted == 0


def test_rows_rising_by_traffic_are_not_a_fall_and_do_not_hold_the_round_open() -> None:
    w = watch()
    assert feed(w, [(10, 1010), (20, 600), (30, 650), (40, 700), (50, 750)]) == [
        None, None, None, None, ROW_COUNT]
    assert w.deleted == 400  # counted to the low, not to the last reading


def test_a_new_low_restarts_the_settle_interval() -> None:
    w = watch()
    assert feed(w, [(10, 900), (35, 900), (39, 899), (60, 899), (69, 899)]) == [
        None, None, None, None, ROW_COUNT]


def test_each_database_has_its_own_low() -> None:
    """Database b falls while a rises by more: the total rises, yet b's fall counts."""
    w = watch(a=500, b=500)
    w.observe({"a": 700, "b": 400}, 10)
    assert w.last_fall == 10
    w.observe({"a": 700, "b": 400, "c": 50}, 20)  # a database new in this round
    w.observe({"a": 700, "b": 400, "c": 40}, 30)
    assert w.last_fall == 30 and w.verdict(59) is None and w.verdict(60) == ROW_COUNT
    assert w.deleted == 100  # only databases known before the request count


@pytest.mark.parametrize(("settle", "every"), [(30.0, 10.0), (0.3, 0.1)])
def test_a_quick_count_is_read_three_times_per_settle_interval(settle: float,
                                                               every: float) -> None:
    assert next_count_after(settle, 0.001) == pytest.approx(every)


@pytest.mark.parametrize("count_seconds", [1.5, 4.0, 7.0, 20.0])
def test_slow_counts_are_spaced_to_keep_the_watch_at_a_tenth_of_the_round(
        count_seconds: float) -> None:
    """A COUNT(*) of 10 M rows takes 4-7 s on MariaDB: read every 10 s, it would keep half a
    core scanning messages while the client deletes from it."""
    gap = next_count_after(30.0, count_seconds)
    assert gap >= 10.0
    assert count_seconds / (count_seconds + gap) <= WATCH_DB_SHARE + 1e-9
