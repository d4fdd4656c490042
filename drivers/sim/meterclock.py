"""A meter's clock (the state behind COSEM interface class 8): a time source, the offset
set by clients, drift, and the meter's own time-zone and DST rules expressed the way the
Clock object holds them (standard deviation, DST deviation, begin/end as recurring
date-times). Local times come from these rules, so a client that changes them sees the
change everywhere (clock, profiles, logs)."""

from __future__ import annotations

import calendar
import struct
import time as _time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

from drivers.sim.axdr import DEVIATION_UNSPECIFIED, STATUS_DST_ACTIVE, CosemDateTime

WILD = 0xFF
_DT_STRUCT = struct.Struct(">HBBBBBBBhB")
LAST_DAY = 0xFE  # day of month: last (with a weekday: the last such weekday)


@dataclass(frozen=True, slots=True)
class DstRule:
    """A recurring local date-time: ``day`` with ``weekday`` (1 = Monday) means that
    weekday on or after ``day``; ``day`` LAST_DAY with a weekday means the last one."""

    month: int
    day: int
    weekday: int
    hour: int
    minute: int = 0

    def to_cosem(self) -> CosemDateTime:
        return CosemDateTime(
            0xFFFF,
            self.month,
            self.day,
            self.weekday,
            self.hour,
            self.minute,
            0,
            0,
            DEVIATION_UNSPECIFIED,
            WILD,
        )

    @classmethod
    def from_cosem(cls, dt: CosemDateTime) -> DstRule:
        if not 1 <= dt.month <= 12 or not (1 <= dt.day <= 31 or dt.day == LAST_DAY):
            raise ValueError("a DST rule needs a month and a day (or last day)")
        if dt.day_of_week != WILD and not 1 <= dt.day_of_week <= 7:
            raise ValueError("bad day of week")
        if not 0 <= dt.hour <= 23 or not 0 <= dt.minute <= 59:
            raise ValueError("a DST rule needs an hour and a minute")
        return cls(dt.month, dt.day, dt.day_of_week, dt.hour, dt.minute)

    def local_date(self, year: int) -> datetime:
        """The naive local date-time the rule names in ``year``."""
        last = calendar.monthrange(year, self.month)[1]
        if self.day == LAST_DAY:
            day = last
            if self.weekday != WILD:
                day -= (datetime(year, self.month, last).isoweekday() - self.weekday) % 7
        else:
            day = min(self.day, last)
            if self.weekday != WILD:
                day += (self.weekday - datetime(year, self.month, day).isoweekday()) % 7
                day = min(day, last)
        return datetime(year, self.month, day, self.hour, self.minute)


@lru_cache(maxsize=64)
def rules_for_zone(name: str) -> tuple[int, int, DstRule | None, DstRule | None]:
    """(standard UTC offset min, DST deviation min, begin, end) derived from an IANA zone
    by looking at this year's transitions."""
    zone = ZoneInfo(name)
    year = datetime.now(UTC).year
    jan = datetime(year, 1, 15, 12, tzinfo=zone)
    jul = datetime(year, 7, 15, 12, tzinfo=zone)
    offsets = {int(d.utcoffset().total_seconds() // 60): d for d in (jan, jul)}
    if len(offsets) == 1:
        return next(iter(offsets)), 0, None, None
    standard = jan if not jan.dst() else jul
    std_offset = int(standard.utcoffset().total_seconds() // 60)
    dst_offset = int((jul if standard is jan else jan).utcoffset().total_seconds() // 60)
    begin = end = None
    hour = datetime(year, 1, 1, tzinfo=UTC)
    prev = hour.astimezone(zone).dst()
    for _ in range(366 * 24):
        hour += timedelta(hours=1)
        local = hour.astimezone(zone)
        if bool(local.dst()) != bool(prev):
            # The rule is in the local time that was in force just before the change.
            before = (hour - timedelta(hours=1)).astimezone(zone) + timedelta(hours=1)
            naive = before.replace(tzinfo=None)
            rule = _rule_for(naive)
            if local.dst():
                begin = rule
            else:
                end = rule
        prev = local.dst()
    return std_offset, dst_offset - std_offset, begin, end


def _rule_for(d: datetime) -> DstRule:
    last = calendar.monthrange(d.year, d.month)[1]
    if d.day > last - 7:
        return DstRule(d.month, LAST_DAY, d.isoweekday(), d.hour, d.minute)
    return DstRule(d.month, (d.day - 1) // 7 * 7 + 1, d.isoweekday(), d.hour, d.minute)


@dataclass(slots=True)
class MeterClock:
    """Meter time = source time + ``offset`` + drift since ``drift_origin``."""

    standard_offset: int  # minutes east of UTC
    dst_deviation: int = 0  # minutes added while DST is active
    dst_begin: DstRule | None = None
    dst_end: DstRule | None = None
    dst_enabled: bool = False
    source: Callable[[], float] = _time.time
    offset: float = 0.0
    drift_ppm: float = 0.0
    drift_origin: float = 0.0
    status: int = 0
    _years: dict[int, tuple[float, float] | None] = field(default_factory=dict)
    _year_span: tuple[float, float, int] = (0.0, 0.0, 0)

    @classmethod
    def for_zone(cls, name: str, source: Callable[[], float] = _time.time) -> MeterClock:
        std, dev, begin, end = rules_for_zone(name)
        return cls(std, dev, begin, end, begin is not None, source, drift_origin=source())

    def now(self) -> float:
        t = self.source()
        return t + self.offset + (t - self.drift_origin) * self.drift_ppm * 1e-6

    def set_time(self, utc_seconds: float) -> float:
        """Set the meter time; returns the meter time it replaced."""
        old = self.now()
        t = self.source()
        self.offset = utc_seconds - t
        self.drift_origin = t
        return old

    def shift(self, seconds: float) -> None:
        self.offset += seconds

    def rules_changed(self) -> None:
        self._years.clear()

    def _dst_window(self, year: int) -> tuple[float, float] | None:
        if year not in self._years:
            window = None
            if self.dst_enabled and self.dst_begin and self.dst_end and self.dst_deviation:
                std = timezone(timedelta(minutes=self.standard_offset))
                dst = timezone(timedelta(minutes=self.standard_offset + self.dst_deviation))
                begin = self.dst_begin.local_date(year).replace(tzinfo=std).timestamp()
                end = self.dst_end.local_date(year).replace(tzinfo=dst).timestamp()
                window = (begin, end)
            self._years[year] = window
        return self._years[year]

    def utc_offset(self, utc_seconds: float) -> tuple[int, bool]:
        """(minutes east of UTC, DST active) at a UTC instant."""
        lo, hi, year = self._year_span
        if not lo <= utc_seconds < hi:
            year = _time.gmtime(utc_seconds).tm_year
            lo = calendar.timegm((year, 1, 1, 0, 0, 0))
            self._year_span = (lo, calendar.timegm((year + 1, 1, 1, 0, 0, 0)), year)
        window = self._dst_window(year)
        if window is None:
            return self.standard_offset, False
        begin, end = window
        active = begin <= utc_seconds < end if begin < end else not end <= utc_seconds < begin
        return self.standard_offset + (self.dst_deviation if active else 0), active

    def local(self, utc_seconds: float) -> datetime:
        minutes, _ = self.utc_offset(utc_seconds)
        return datetime.fromtimestamp(utc_seconds, timezone(timedelta(minutes=minutes)))

    def cosem(self, utc_seconds: float, status: int = 0) -> CosemDateTime:
        minutes, active = self.utc_offset(utc_seconds)
        tm = _time.gmtime(utc_seconds + minutes * 60)
        hundredths = int((utc_seconds - int(utc_seconds)) * 100) if utc_seconds >= 0 else 0
        return CosemDateTime(
            tm.tm_year,
            tm.tm_mon,
            tm.tm_mday,
            tm.tm_wday + 1,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            hundredths,
            -minutes,
            status | (STATUS_DST_ACTIVE if active else 0),
        )

    def cosem_bytes(self, utc_seconds: float, status: int = 0) -> bytes:
        """``cosem(...).to_bytes()`` without the intermediate object (profile rows)."""
        minutes, active = self.utc_offset(utc_seconds)
        tm = _time.gmtime(utc_seconds + minutes * 60)
        hundredths = int((utc_seconds - int(utc_seconds)) * 100) if utc_seconds >= 0 else 0
        return _DT_STRUCT.pack(
            tm.tm_year,
            tm.tm_mon,
            tm.tm_mday,
            tm.tm_wday + 1,
            tm.tm_hour,
            tm.tm_min,
            tm.tm_sec,
            hundredths,
            -minutes,
            status | (STATUS_DST_ACTIVE if active else 0),
        )

    def to_utc(self, dt: CosemDateTime) -> float:
        """A client's date-time as a UTC instant; without a deviation it is meter local
        time (standard or DST as the status bit or the rules say)."""
        if dt.deviation != DEVIATION_UNSPECIFIED:
            return dt.to_utc_seconds()
        guess = dt.to_utc_seconds(self.standard_offset)
        minutes, _ = self.utc_offset(guess)
        if dt.status != WILD and dt.status & STATUS_DST_ACTIVE:
            minutes = self.standard_offset + self.dst_deviation
        return dt.to_utc_seconds(minutes)
