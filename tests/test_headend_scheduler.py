"""Schedules: cron parsing, every N, windows, exceptions, DST in the job's zone, data windows."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from headend.scheduler import (
    Cron,
    Every,
    Schedule,
    ScheduledJob,
    ScheduleError,
    Scheduler,
    Unit,
    Window,
    data_window,
)

AMS = "Europe/Amsterdam"
ZONE = ZoneInfo(AMS)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(instants: list[datetime]) -> list[str]:
    return [i.astimezone(ZONE).strftime("%m-%d %H:%M %Z") for i in instants]


def first(schedule: Schedule, n: int) -> list[datetime]:
    return list(itertools.islice(schedule.firings(), n))


def test_cron_fields() -> None:
    cron = Cron.parse("0,30 8-18/2 1,15 jan-mar MON-fri")
    assert cron.minutes == {0, 30}
    assert cron.hours == {8, 10, 12, 14, 16, 18}
    assert cron.months == {1, 2, 3} and cron.weekdays == {1, 2, 3, 4, 5}
    assert Cron.parse("0 0 * * 7").weekdays == {0}
    assert Cron.parse("*/20 * * * *").minutes == {0, 20, 40}
    assert Cron.parse("5/20 * * * *").minutes == {5, 25, 45}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 * *", "has 4 fields"),
        ("60 0 * * *", "minute field: 60 is outside 0-59"),
        ("0 24 * * *", "hour field"),
        ("0 0 0 * *", "day-of-month field"),
        ("0 0 * 13 *", "month field"),
        ("0 0 * * 8", "day-of-week field"),
        ("0 0 * * funday", "day-of-week field: 'funday'"),
        ("*/0 * * * *", "minute field: step"),
        ("0 5-2 * * *", "hour field: range '5-2' runs backwards"),
        ("0 1,,2 * * *", "hour field: empty list item"),
    ],
)
def test_cron_errors_name_the_field(expression: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        Schedule.create(expression, zone=AMS, start=utc(2026, 1, 1))


def test_never_fires_too_often_bad_zone() -> None:
    start = utc(2026, 1, 1)
    with pytest.raises(ScheduleError, match="never fires"):
        Schedule.create("0 0 30 2 *", zone=AMS, start=start)
    with pytest.raises(ScheduleError, match="more often than the minimum interval"):
        Schedule.create("*/2 * * * *", zone=AMS, start=start)
    with pytest.raises(ScheduleError, match="more often"):
        Schedule.create(Every(1, Unit.MINUTES), zone=AMS, start=start)
    with pytest.raises(ScheduleError, match="IANA"):
        Schedule.create("0 0 * * *", zone="Mars/Olympus", start=start)
    with pytest.raises(ScheduleError, match="never fires"):
        Schedule.create("0 0 * * *", zone=AMS, start=start, end=start + timedelta(hours=1))
    # Feb 29 fires (every four years): not refused
    leap = Schedule.create("0 0 29 2 *", zone=AMS, start=start)
    assert local(first(leap, 1)) == ["02-29 00:00 CET"]
    assert first(leap, 1)[0].year == 2028


def test_daily_across_spring_gap_and_autumn_repeat() -> None:
    spring = Schedule.create("30 2 * * *", zone=AMS, start=utc(2026, 3, 27))
    # 02:30 does not exist on 29 March 2026: it fires once at 03:00 CEST, the change
    assert local(first(spring, 4)) == [
        "03-27 02:30 CET",
        "03-28 02:30 CET",
        "03-29 03:00 CEST",
        "03-30 02:30 CEST",
    ]
    autumn = Schedule.create("30 2 * * *", zone=AMS, start=utc(2026, 10, 24))
    fired = first(autumn, 3)
    # 02:30 happens twice on 25 October 2026: it fires once, at the first (CEST) one
    assert local(fired) == ["10-24 02:30 CEST", "10-25 02:30 CEST", "10-26 02:30 CET"]
    assert fired[1] == utc(2026, 10, 25, 0, 30)


def test_times_inside_the_gap_fire_once() -> None:
    schedule = Schedule.create(
        "0,30 2,3 29 3 *", zone=AMS, start=utc(2026, 3, 1), min_interval=timedelta(0)
    )
    fired = first(schedule, 3)
    assert local(fired[:2]) == ["03-29 03:00 CEST", "03-29 03:30 CEST"]
    assert fired[2].year == 2027  # 02:00, 02:30 and 03:00 all were the one 03:00 firing


def test_every_n_days_keeps_local_time_and_hours_count_elapsed() -> None:
    start = datetime(2026, 3, 28, 6, 0, tzinfo=ZONE)
    days = Schedule.create(Every(1, Unit.DAYS), zone=AMS, start=start)
    assert local(first(days, 3)) == ["03-28 06:00 CET", "03-29 06:00 CEST", "03-30 06:00 CEST"]
    hours = Schedule.create(Every(12, "hours"), zone=AMS, start=start)
    assert [b - a for a, b in itertools.pairwise(first(hours, 4))] == [timedelta(hours=12)] * 3


def test_window_and_exceptions() -> None:
    schedule = Schedule.create(
        "0 1 * * *",
        zone=AMS,
        start=utc(2026, 12, 23),
        end=utc(2026, 12, 28),
        exceptions=(date(2026, 12, 25), date(2026, 12, 26)),
    )
    assert local(list(schedule.firings())) == [
        "12-23 01:00 CET",
        "12-24 01:00 CET",
        "12-27 01:00 CET",
    ]
    assert schedule.next_after(utc(2026, 12, 27, 1)) is None


def test_data_window_yesterday_and_since_last_success() -> None:
    fired = datetime(2026, 3, 30, 2, 0, tzinfo=ZONE)
    start, end = data_window(Window.YESTERDAY, fired, ZONE)
    assert start == datetime(2026, 3, 29, tzinfo=ZONE) and end == datetime(2026, 3, 30, tzinfo=ZONE)
    assert end - start == timedelta(hours=23)  # the spring-forward day is 23 hours long
    last = utc(2026, 3, 28, 12)
    assert data_window(Window.SINCE_LAST_SUCCESS, fired, ZONE, last) == (last, fired)
    since, until = data_window(Window.SINCE_LAST_SUCCESS, fired, ZONE)
    assert until - since == timedelta(hours=24)  # elapsed time, not wall-clock
    assert data_window(Window.NONE, fired, ZONE) is None


def test_scheduler_due_fires_each_time_once() -> None:
    scheduler = Scheduler()
    schedule = Schedule.create("0 2 * * *", zone=AMS, start=utc(2026, 3, 27))
    scheduler.add(ScheduledJob("nightly", schedule, template=None, window=Window.YESTERDAY))
    with pytest.raises(ScheduleError, match="exists"):
        scheduler.add(ScheduledJob("nightly", schedule, template=None))
    assert scheduler.due(utc(2026, 3, 27, 0)) == []
    ((job, at),) = scheduler.due(utc(2026, 3, 27, 1, 0))
    assert job.name == "nightly" and local([at]) == ["03-27 02:00 CET"]
    assert scheduler.due(utc(2026, 3, 27, 1, 30)) == []
    # down for two days: the missed firings collapse into one, the latest
    ((_, at),) = scheduler.due(utc(2026, 3, 29, 12))
    assert local([at]) == ["03-29 03:00 CEST"]
