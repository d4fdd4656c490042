"""TOU calendars across DST, holidays and season changes; bucketing and registers."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest

from mdm.series import QUALITY_ESTIMATED, Point, Series, SeriesKey
from mdm.tou import TariffCalendar, bucket, register_reading_type, registers_from_intervals

QH = timedelta(minutes=15)
RT = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
BERLIN = "Europe/Berlin"

WEEKDAY = {"00:00": "off", "02:30": "night", "07:00": "peak", "21:00": "off"}
FLAT = {"00:00": "off"}
CALENDAR = {
    "zone": BERLIN,
    "holidays": ["2026-04-03", "12-25"],
    "seasons": [
        {
            "name": "summer",
            "start": "04-01",
            "days": {
                "weekday": {"00:00": "off", "08:00": "peak", "20:00": "off"},
                "saturday": FLAT,
                "sunday": FLAT,
                "holiday": FLAT,
            },
        },
        {
            "name": "winter",
            "start": "10-01",
            "days": {"weekday": WEEKDAY, "saturday": FLAT, "sunday": WEEKDAY, "holiday": FLAT},
        },
    ],
}


@pytest.fixture(scope="module")
def calendar():
    return TariffCalendar.from_dict(CALENDAR)


def local_day(calendar, day, value="1"):
    start, end = calendar.local_midnights(day, day + timedelta(days=1))
    count = (end - start) // QH
    pts = [Point(start + QH * (k + 1), D(value)) for k in range(count)]
    return Series(SeriesKey("m1", RT), pts, QH)


def test_dst_days_have_92_and_100_quarter_hours(calendar):
    assert len(local_day(calendar, date(2026, 3, 29))) == 92
    assert len(local_day(calendar, date(2026, 10, 25))) == 100
    assert len(local_day(calendar, date(2026, 3, 30))) == 96


def test_spring_forward_switch_inside_the_missing_hour(calendar):
    # Sunday 2026-03-29 in winter: the 02:30 switch never happens on the clock; the tariff
    # is "night" from 03:00 local (01:00 UTC).
    totals = bucket(local_day(calendar, date(2026, 3, 29)), calendar)
    # off 00:00-02:00 (8 QH), night 03:00-07:00 (16), peak 07:00-21:00 (56), off 21-24 (12)
    assert totals.counts == {"off": 20, "night": 16, "peak": 56}
    assert totals.totals == {"off": D(20), "night": D(16), "peak": D(56)}
    assert totals.straddling == []
    first_night = datetime(2026, 3, 29, 1, tzinfo=UTC)
    assert calendar.tariff_at(first_night) == "night"
    assert calendar.tariff_at(first_night - timedelta(microseconds=1)) == "off"


def test_fall_back_repeated_hour_counts_twice(calendar):
    totals = bucket(local_day(calendar, date(2026, 10, 25)), calendar)
    # 02:00-03:00 happens twice: off 00:00-02:30 plus 02:00-02:30 again (12 QH) and
    # 21:00-24:00 (12); night 02:30-07:00 plus 02:30-03:00 again (20); peak 07:00-21:00 (56)
    assert totals.counts == {"off": 24, "night": 20, "peak": 56}
    assert sum(totals.counts.values()) == 100


def test_holidays_fixed_and_recurring(calendar):
    # Good Friday 2026-04-03 (fixed date) and Christmas (every year) are flat.
    assert bucket(local_day(calendar, date(2026, 4, 3)), calendar).counts["peak"] == 0
    assert bucket(local_day(calendar, date(2027, 12, 25)), calendar).counts["peak"] == 0
    assert bucket(local_day(calendar, date(2026, 4, 2)), calendar).counts["peak"] == 48
    assert calendar.day_type(date(2026, 12, 25)) == "holiday"
    assert calendar.day_type(date(2026, 12, 26)) == "saturday"


def test_season_change_and_wrap_over_new_year(calendar):
    assert calendar.season(date(2026, 3, 31)).name == "winter"
    assert calendar.season(date(2026, 4, 1)).name == "summer"
    assert calendar.season(date(2026, 9, 30)).name == "summer"
    assert calendar.season(date(2027, 1, 5)).name == "winter"
    # Wed 2026-09-30 summer peak 08-20 (48 QH); Thu 2026-10-01 winter peak 07-21 (56 QH)
    assert bucket(local_day(calendar, date(2026, 9, 30)), calendar).counts["peak"] == 48
    assert bucket(local_day(calendar, date(2026, 10, 1)), calendar).counts["peak"] == 56


def test_straddling_interval_goes_to_tariff_at_its_start(calendar):
    hourly = timedelta(hours=1)
    # Thu 2026-10-01 05:30 UTC = 07:30 local: the hour 06:30-07:30 local straddles 07:00.
    end = datetime(2026, 10, 1, 5, 30, tzinfo=UTC)
    s = Series(SeriesKey("m1", RT), [Point(end, D(4))], hourly)
    totals = bucket(s, calendar)
    assert totals.totals["night"] == D(4) and totals.totals["peak"] == 0
    assert totals.straddling == [end]
    assert calendar.tariff_of_interval(end, hourly) == "night"


def test_bucket_skips_nulls_and_counts_estimates(calendar):
    start = datetime(2026, 10, 1, 10, tzinfo=UTC)
    pts = [
        Point(start + QH, D(1)),
        Point(start + QH * 2, None),
        Point(start + QH * 3, D(2), frozenset({QUALITY_ESTIMATED})),
    ]
    totals = bucket(Series(SeriesKey("m1", RT), pts, QH), calendar)
    assert totals.totals["peak"] == D(3) and totals.skipped == 1
    assert totals.estimated["peak"] == 1


def test_registers_from_intervals_per_tariff(calendar):
    days = [date(2026, 3, 29), date(2026, 3, 30)]
    pts = [p for d in days for p in local_day(calendar, d, "0.25").points]
    s = Series(SeriesKey("m1", RT), pts, QH)
    ends = calendar.local_midnights(days[0], days[-1] + timedelta(days=1))
    start_values = {None: D(1000), "peak": D(400)}
    regs = registers_from_intervals(s, ends, calendar=calendar, start_values=start_values)
    assert [p.value for p in regs[None]] == [D(1000), D(1023), D("1047")]
    assert [p.value for p in regs["peak"]] == [D(400), D(414), D(428)]
    assert [p.value for p in regs["night"]] == [D(0), D(4), D("8.5")]
    assert [p.timestamp for p in regs[None]] == ends
    assert all(p.qualities == {"2.11.0"} for p in regs[None])


def test_registers_flag_missing_and_estimated_intervals(calendar):
    day = date(2026, 6, 1)
    s = local_day(calendar, day)
    points = list(s.points)
    del points[10]
    points[20] = Point(points[20].timestamp, D(1), frozenset({QUALITY_ESTIMATED}))
    s = Series(s.key, points, QH)
    ends = calendar.local_midnights(day, day + timedelta(days=2))
    regs = registers_from_intervals(s, ends)[None]
    assert [p.value for p in regs] == [D(0), D(95), D(95)]
    assert regs[0].qualities == {"2.11.0"}
    assert regs[1].qualities == {"2.11.0", "2.10.0", "2.8.0"}
    assert regs[2].qualities == regs[1].qualities


def test_register_reading_type_for_a_tariff():
    assert register_reading_type(RT, tou=2) == "0.0.0.1.1.1.12.0.0.0.0.2.0.0.0.3.72.0"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seasons": []}, "at least one season"),
        ({"seasons": [{"name": "s", "days": {"weekday": FLAT}}]}, "no profile"),
        (
            {"seasons": [{"name": "s", "days": {"weekday": {}, "saturday": {}}}]},
            "00:00",
        ),
        ({"week": {"monday": "x"}}, "not one of"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_bad_calendars_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        TariffCalendar.from_dict({**CALENDAR, **change})
