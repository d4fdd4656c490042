"""Time-of-use: tariff calendars, bucketing interval data into TOU registers, and register
values built from intervals.

A calendar is in one IANA zone. Seasons start on a month-day and last until the next
season's start (the last one wraps over New Year); each season has a day profile per day
type; a day profile lists switching times in local wall-clock time with the tariff that
starts at each. The day type of a date is the holiday type if the date is a holiday (a fixed
date, or a month-day every year), else the weekday's type.

The tariff of an instant is the one the profile gives for its local wall-clock time, so DST
needs no special case: a switch at 02:30 on the spring-forward day (a time that never
happens) is in force from 03:00; on the fall-back day both 02:15s read the 02:15 tariff.

Straddle rule: an interval belongs, whole, to the tariff active at its *start* (local
time); it is never split. Intervals during which the tariff changes are reported in
:attr:`TouTotals.straddling` so a misaligned calendar (a switch off the interval grid) shows.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from cim.codelists.readingtype import ReadingType
from mdm.calculations import QUALITY_INCOMPLETE
from mdm.series import QUALITY_DERIVED, QUALITY_ESTIMATED, Point, Series

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_WEEK = ("weekday",) * 5 + ("saturday", "sunday")
_EPSILON = timedelta(microseconds=1)
_ACCUMULATION_BULK = 1


@dataclass(frozen=True, slots=True)
class DayProfile:
    """Switching times (local wall clock) and the tariff each one starts; the first is 00:00."""

    switches: tuple[tuple[time, str], ...]
    _times: tuple[time, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        switches = tuple(sorted(self.switches))
        if not switches or switches[0][0] != time(0):
            raise ValueError("a day profile must start with a switch at 00:00")
        times = tuple(t for t, _ in switches)
        if len(set(times)) != len(times):
            raise ValueError("a day profile lists a switching time twice")
        object.__setattr__(self, "switches", switches)
        object.__setattr__(self, "_times", times)

    def tariff_at(self, moment: time) -> str:
        return self.switches[bisect_right(self._times, moment) - 1][1]

    @property
    def tariffs(self) -> frozenset[str]:
        return frozenset(t for _, t in self.switches)


@dataclass(frozen=True, slots=True)
class Season:
    name: str
    start: tuple[int, int]  # (month, day) on which the season begins
    days: Mapping[str, DayProfile]  # day type -> profile

    def __post_init__(self) -> None:
        month, day = self.start
        date(2024, month, day)  # a leap year, so 02-29 is accepted


@dataclass(frozen=True)
class TariffCalendar:
    zone: str
    seasons: tuple[Season, ...]
    holidays: frozenset[date] = frozenset()
    recurring_holidays: frozenset[tuple[int, int]] = frozenset()  # (month, day) every year
    week: tuple[str, ...] = DEFAULT_WEEK  # day type of Monday .. Sunday
    holiday_day_type: str = "holiday"
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)
    _starts: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    _by_date: dict[date, DayProfile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_tz", ZoneInfo(self.zone))
        seasons = tuple(sorted(self.seasons, key=lambda s: s.start))
        if not seasons:
            raise ValueError("a tariff calendar needs at least one season")
        if len(self.week) != 7:
            raise ValueError("week must name the day type of each of the 7 weekdays")
        needed = set(self.week)
        if self.holidays or self.recurring_holidays:
            needed.add(self.holiday_day_type)
        for season in seasons:
            lacking = needed - set(season.days)
            if lacking:
                raise ValueError(f"season {season.name!r} has no profile for {sorted(lacking)}")
        object.__setattr__(self, "seasons", seasons)
        object.__setattr__(self, "_starts", tuple(s.start for s in seasons))
        object.__setattr__(self, "_by_date", {})

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    @property
    def tariffs(self) -> tuple[str, ...]:
        """Every tariff the calendar can give, sorted."""
        names = {t for s in self.seasons for p in s.days.values() for t in p.tariffs}
        return tuple(sorted(names))

    def is_holiday(self, day: date) -> bool:
        return day in self.holidays or (day.month, day.day) in self.recurring_holidays

    def day_type(self, day: date) -> str:
        return self.holiday_day_type if self.is_holiday(day) else self.week[day.weekday()]

    def season(self, day: date) -> Season:
        # Before the first start of the year, the last season (from the year before) runs.
        return self.seasons[bisect_right(self._starts, (day.month, day.day)) - 1]

    def profile(self, day: date) -> DayProfile:
        found = self._by_date.get(day)
        if found is None:
            found = self._by_date[day] = self.season(day).days[self.day_type(day)]
        return found

    def tariff_at(self, instant: datetime) -> str:
        """The tariff in force at an aware instant (read on the local wall clock)."""
        local = instant.astimezone(self._tz)
        return self.profile(local.date()).tariff_at(local.time())

    def tariff_of_interval(self, end: datetime, interval: timedelta) -> str:
        """The tariff of the interval ending at ``end``: the one active at its start."""
        return self.tariff_at(end - interval)

    def local_midnights(self, first: date, last: date) -> list[datetime]:
        """UTC instants of local midnight on each date from first to last (day boundaries,
        23 or 25 hours apart across DST)."""
        days = (last - first).days
        return [
            datetime.combine(first + timedelta(days=k), time(0), self._tz).astimezone(UTC)
            for k in range(days + 1)
        ]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TariffCalendar:
        """From a plain mapping (e.g. parsed JSON)::

        {"zone": "Europe/Berlin",
         "week": {"sat": "weekend", "sun": "weekend"},      # optional, per weekday
         "holidays": ["2026-12-25", "01-01"],              # a date, or MM-DD every year
         "seasons": [{"name": "winter", "start": "10-01",
                      "days": {"weekday": {"00:00": "T2", "07:00": "T1", "21:00": "T2"},
                               "saturday": {"00:00": "T2"}, ...}}]}
        """
        allowed = {"zone", "week", "holidays", "holiday_day_type", "seasons"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"tariff calendar: unknown key(s) {sorted(unknown)}")
        week = list(DEFAULT_WEEK)
        for name, day_type in dict(data.get("week", {})).items():
            if name not in WEEKDAYS:
                raise ValueError(f"week: {name!r} is not one of {list(WEEKDAYS)}")
            week[WEEKDAYS.index(name)] = day_type
        fixed: set[date] = set()
        recurring: set[tuple[int, int]] = set()
        for text in data.get("holidays", []):
            if len(text) == 5:
                recurring.add(_month_day(text))
            else:
                fixed.add(date.fromisoformat(text))
        seasons = tuple(
            Season(
                name=item["name"],
                start=_month_day(item.get("start", "01-01")),
                days={
                    day_type: DayProfile(
                        tuple((time.fromisoformat(t), tariff) for t, tariff in switches.items())
                    )
                    for day_type, switches in item["days"].items()
                },
            )
            for item in data["seasons"]
        )
        return cls(
            zone=data["zone"],
            seasons=seasons,
            holidays=frozenset(fixed),
            recurring_holidays=frozenset(recurring),
            week=tuple(week),
            holiday_day_type=data.get("holiday_day_type", "holiday"),
        )


def _month_day(text: str) -> tuple[int, int]:
    month, day = (int(part) for part in text.split("-"))
    date(2024, month, day)
    return month, day


@dataclass(slots=True)
class TouTotals:
    """Sum and interval count per tariff; ``straddling``: ends of intervals during which
    the tariff changed (counted whole under the tariff at their start)."""

    totals: dict[str, Decimal]
    counts: dict[str, int]
    straddling: list[datetime]
    estimated: dict[str, int]  # intervals per tariff whose value is an estimate
    skipped: int = 0  # points without a value


def bucket(
    series: Series | Iterable[Point], calendar: TariffCalendar, interval: timedelta | None = None
) -> TouTotals:
    """Sum interval values per tariff (interval ends are the points' timestamps)."""
    if isinstance(series, Series):
        interval = interval or series.interval
        points: Iterable[Point] = series.points
    else:
        points = series
    if interval is None:
        raise ValueError("bucketing needs interval data (a series with an interval)")
    result = TouTotals(
        {t: Decimal(0) for t in calendar.tariffs},
        dict.fromkeys(calendar.tariffs, 0),
        [],
        dict.fromkeys(calendar.tariffs, 0),
    )
    for point in points:
        if point.value is None:
            result.skipped += 1
            continue
        tariff = calendar.tariff_at(point.timestamp - interval)
        result.totals[tariff] += point.value
        result.counts[tariff] += 1
        if point.is_estimated:
            result.estimated[tariff] += 1
        if calendar.tariff_at(point.timestamp - _EPSILON) != tariff:
            result.straddling.append(point.timestamp)
    return result


def registers_from_intervals(
    series: Series,
    period_ends: Sequence[datetime],
    *,
    calendar: TariffCalendar | None = None,
    start_values: Mapping[str | None, Decimal] | None = None,
) -> dict[str | None, list[Point]]:
    """Cumulative register values at each period end, from interval deltas.

    Key None is the total register; with a calendar there is one more per tariff. A
    register at period end ``e`` is its start value plus every interval ending at or
    before ``e`` (and after the first period end, which is the reading's start: its own
    value is the start value). Values are derived (2.11.0); a period with a missing or
    null interval makes that and every later value questionable (2.10.0), and estimated
    intervals make them estimated (2.8.0).
    """
    interval = series.interval
    if interval is None:
        raise ValueError("registers are built from interval data (a series with an interval)")
    ends = sorted(period_ends)
    keys: list[str | None] = [None, *(calendar.tariffs if calendar else ())]
    starts = start_values or {}
    running = {k: Decimal(starts.get(k, 0)) for k in keys}
    flags: set[str] = {QUALITY_DERIVED}
    out: dict[str | None, list[Point]] = {k: [] for k in keys}
    if not ends:
        return out
    by_time = {p.timestamp: p for p in series.points}
    previous = ends[0]
    for k in keys:
        out[k].append(Point(previous, running[k], frozenset(flags)))
    for end in ends[1:]:
        t = previous + interval
        while t <= end:
            point = by_time.get(t)
            if point is None or point.value is None:
                flags.add(QUALITY_INCOMPLETE)
            else:
                running[None] += point.value
                if calendar is not None:
                    running[calendar.tariff_at(t - interval)] += point.value
                if point.is_estimated:
                    flags.add(QUALITY_ESTIMATED)
            t += interval
        for k in keys:
            out[k].append(Point(end, running[k], frozenset(flags)))
        previous = end
    return out


def register_reading_type(interval_code: str, tou: int = 0) -> str:
    """The bulk register ReadingType matching an interval ReadingType (same quantity and
    unit, no measuring period), for tariff number ``tou`` (0: total)."""
    rt = ReadingType.parse(interval_code)
    return rt.replace(
        macro_period=0, measuring_period=0, accumulation=_ACCUMULATION_BULK, tou=tou
    ).code
