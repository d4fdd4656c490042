"""Recurring schedules: cron expressions or every N minutes/hours/days, in an IANA time zone,
with a start and end window and exception dates; and the runtime parameters a firing derives
(the data window).

Cron: five fields ``minute hour day-of-month month day-of-week`` with ``*``, lists ``1,15``,
ranges ``1-5``, steps ``*/15`` or ``8-18/2``, month names ``jan``..``dec`` and day names
``sun``..``sat`` (0 and 7 are Sunday). As in Vixie cron, when both day-of-month and
day-of-week are restricted a day matches if either does.

Local times across DST. Cron times and ``every N days`` are wall-clock times in the
schedule's zone:

- spring gap: a wall time that does not exist that day (02:30 in Europe/Amsterdam on the last
  Sunday of March) fires once, at the first valid instant after it (03:00 CEST, the moment
  of the change); several times in the same gap all map to that instant and fire once.
- autumn repeat: a wall time that occurs twice (02:30 on the last Sunday of October) fires
  once, at its first occurrence (CEST).

``every N minutes/hours`` counts elapsed time from the start, not wall-clock time.

Bad input is refused when the schedule is made (:class:`ScheduleError`): a cron that does not
parse (the message names the field), a schedule that never fires (``0 0 30 2 *``), one that
fires more often than ``min_interval``, a time zone that does not exist.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
)
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_LOOKAHEAD_DAYS = 8 * 366  # covers Feb 29 (every 4 years, skipping 2100)


class ScheduleError(ValueError):
    """A schedule that cannot be used; the message says why."""


def _parse_value(text: str, name: str, low: int, high: int) -> int:
    lowered = text.lower()
    if name == "month" and lowered in _MONTHS:
        return _MONTHS[lowered]
    if name == "day-of-week" and lowered in _DAYS:
        return _DAYS[lowered]
    if not text.isdigit():
        raise ScheduleError(f"cron {name} field: {text!r} is not a number or name")
    value = int(text)
    if not low <= value <= high:
        raise ScheduleError(f"cron {name} field: {value} is outside {low}-{high}")
    return value


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise ScheduleError(f"cron {name} field: empty list item in {text!r}")
        body, _, step_text = part.partition("/")
        step = 1
        if step_text or part.endswith("/"):
            if not step_text.isdigit() or int(step_text) < 1:
                raise ScheduleError(f"cron {name} field: step {step_text!r} is not a number >= 1")
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _parse_value(a, name, low, high), _parse_value(b, name, low, high)
            if first > last:
                raise ScheduleError(f"cron {name} field: range {body!r} runs backwards")
        else:
            first = _parse_value(body, name, low, high)
            last = high if step_text else first
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    dom_any: bool
    dow_any: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        parts = expression.split()
        if len(parts) != 5:
            raise ScheduleError(
                f"cron {expression!r} has {len(parts)} fields; expected 5 "
                "(minute hour day-of-month month day-of-week)"
            )
        sets = [_parse_field(p, n, lo, hi) for p, (n, lo, hi) in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(
            expression,
            *sets[:4],
            weekdays,
            dom_any=parts[2] == "*",
            dow_any=parts[4] == "*",
        )

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = (day.isoweekday() % 7) in self.weekdays
        if self.dom_any or self.dow_any:
            return dom and dow
        return dom or dow

    def wall_times(self, day: date) -> Iterator[datetime]:
        if self.matches_day(day):
            for hour in sorted(self.hours):
                for minute in sorted(self.minutes):
                    yield datetime.combine(day, time(hour, minute))


class Unit(enum.StrEnum):
    MINUTES = "minutes"
    HOURS = "hours"
    DAYS = "days"


@dataclass(frozen=True)
class Every:
    n: int
    unit: Unit

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ScheduleError(f"every: n must be a whole number >= 1, not {self.n!r}")
        object.__setattr__(self, "unit", Unit(self.unit))

    @property
    def seconds(self) -> float:
        return self.n * {Unit.MINUTES: 60, Unit.HOURS: 3600, Unit.DAYS: 86400}[self.unit]


def _instant(wall: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant a local wall time fires at: the first occurrence when repeated, the
    first valid instant after it when it falls in a gap."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # a gap: find the transition instant between the two readings of the wall time
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    low, high = min(first, second), max(first, second)
    while high - low > timedelta(seconds=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).replace(tzinfo=None) >= wall:
            high = mid
        else:
            low = mid
    return high.replace(microsecond=0)


@dataclass(frozen=True)
class Schedule:
    """When a job fires. ``start`` and ``end`` are aware datetimes (the window, end exclusive);
    ``exceptions`` are local dates on which it does not fire."""

    recurrence: Cron | Every
    zone: ZoneInfo
    start: datetime
    end: datetime | None = None
    exceptions: frozenset[date] = field(default_factory=frozenset)

    @classmethod
    def create(
        cls,
        recurrence: str | Every,
        *,
        zone: str,
        start: datetime,
        end: datetime | None = None,
        exceptions: tuple[date, ...] | frozenset[date] = (),
        min_interval: timedelta = timedelta(minutes=5),
    ) -> Schedule:
        """Check and build a schedule. Raises ScheduleError on bad input."""
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ScheduleError(f"time zone {zone!r} is not an IANA time zone") from exc
        if start.tzinfo is None or (end is not None and end.tzinfo is None):
            raise ScheduleError("start and end must be aware datetimes")
        if end is not None and end <= start:
            raise ScheduleError("the end of the window is not after its start")
        rule = Cron.parse(recurrence) if isinstance(recurrence, str) else recurrence
        if isinstance(rule, Every) and rule.seconds < min_interval.total_seconds():
            raise ScheduleError(
                f"every {rule.n} {rule.unit} fires more often than the minimum interval "
                f"{min_interval}"
            )
        schedule = cls(rule, tz, start.astimezone(UTC), end, frozenset(exceptions))
        firings = list(itertools.islice(schedule.firings(), 200))
        if not firings:
            raise ScheduleError(f"the schedule {_describe(rule)} never fires in its window")
        gaps = [b - a for a, b in itertools.pairwise(firings)]
        if gaps and min(gaps) < min_interval:
            raise ScheduleError(
                f"the schedule {_describe(rule)} fires every {min(gaps)}, more often than the "
                f"minimum interval {min_interval}"
            )
        return schedule

    def next_after(self, after: datetime) -> datetime | None:
        """The first firing strictly after ``after`` (aware), in UTC; None when there is none."""
        return next(self.firings(after), None)

    def firings(self, after: datetime | None = None) -> Iterator[datetime]:
        """Firing instants (UTC) strictly after ``after`` (default: from ``start``, inclusive)."""
        floor = self.start - timedelta(microseconds=1) if after is None else after
        floor = max(floor, self.start - timedelta(microseconds=1))
        for instant in self._raw(floor):
            if self.end is not None and instant >= self.end:
                return
            if instant.astimezone(self.zone).date() in self.exceptions:
                continue
            yield instant

    def _raw(self, floor: datetime) -> Iterator[datetime]:
        rule = self.recurrence
        if isinstance(rule, Every) and rule.unit is not Unit.DAYS:
            step = timedelta(seconds=rule.seconds)
            k = max(0, int((floor - self.start) // step))
            while True:
                instant = self.start + k * step
                if instant > floor:
                    yield instant
                k += 1
        last: datetime | None = None
        day = floor.astimezone(self.zone).date() - timedelta(days=1)
        empty_days = 0
        while empty_days < _LOOKAHEAD_DAYS and day < date.max - timedelta(days=2):
            found = False
            for wall in self._walls(day):
                instant = _instant(wall, self.zone)
                if instant > floor and (last is None or instant > last):
                    last = instant
                    found = True
                    yield instant
            empty_days = 0 if found else empty_days + 1
            day += timedelta(days=1)

    def _walls(self, day: date) -> Iterator[datetime]:
        rule = self.recurrence
        if isinstance(rule, Cron):
            yield from rule.wall_times(day)
            return
        anchor = self.start.astimezone(self.zone)
        offset = (day - anchor.date()).days
        if offset >= 0 and offset % rule.n == 0:
            yield datetime.combine(day, anchor.time().replace(tzinfo=None))


def _describe(rule: Cron | Every) -> str:
    return repr(rule.expression) if isinstance(rule, Cron) else f"every {rule.n} {rule.unit}"


# ---------------------------------------------------------------------------------------------
# Runtime parameters


class Window(enum.StrEnum):
    YESTERDAY = "yesterday"  # the previous local day, midnight to midnight, in the job's zone
    SINCE_LAST_SUCCESS = "since_last_success"  # from the last successful read to the firing
    NONE = "none"


def data_window(
    kind: Window,
    fired_at: datetime,
    zone: ZoneInfo,
    last_success: datetime | None = None,
    fallback: timedelta = timedelta(days=1),
) -> tuple[datetime, datetime] | None:
    """The (start, end) of the data to read for a firing, as UTC instants. "yesterday" follows
    the zone's calendar (a 23- or 25-hour day across DST); "since last success" falls back to
    ``fallback`` before the firing when the meter was never read."""
    if kind is Window.NONE:
        return None
    if kind is Window.YESTERDAY:
        today = fired_at.astimezone(zone).date()
        start = _instant(datetime.combine(today - timedelta(days=1), time()), zone)
        return start, _instant(datetime.combine(today, time()), zone)
    end = fired_at.astimezone(UTC)
    start = last_success if last_success is not None else end - fallback
    return start.astimezone(UTC), end


@dataclass
class ScheduledJob:
    """A schedule with what to run when it fires. ``template`` is opaque here (the job
    definition: command, targets, priority); ``next_fire`` advances as firings are taken."""

    name: str
    schedule: Schedule
    template: object
    window: Window = Window.NONE
    next_fire: datetime | None = None

    def __post_init__(self) -> None:
        if self.next_fire is None:
            self.next_fire = self.schedule.next_after(
                self.schedule.start - timedelta(microseconds=1)
            )


class Scheduler:
    """Scheduled jobs; :meth:`due` returns the firings up to a given time, each once."""

    def __init__(self) -> None:
        self.jobs: dict[str, ScheduledJob] = {}

    def add(self, job: ScheduledJob) -> None:
        if job.name in self.jobs:
            raise ScheduleError(f"a scheduled job named {job.name!r} exists")
        self.jobs[job.name] = job

    def due(self, now: datetime) -> list[tuple[ScheduledJob, datetime]]:
        """Every firing at or before ``now``; a scheduler that was down fires each missed
        job once (at its latest missed time), not once per missed firing."""
        fired: list[tuple[ScheduledJob, datetime]] = []
        for job in self.jobs.values():
            latest: datetime | None = None
            while job.next_fire is not None and job.next_fire <= now:
                latest = job.next_fire
                job.next_fire = job.schedule.next_after(latest)
            if latest is not None:
                fired.append((job, latest))
        return sorted(fired, key=lambda pair: pair[1])


__all__ = [
    "Cron",
    "Every",
    "Schedule",
    "ScheduleError",
    "ScheduledJob",
    "Scheduler",
    "Unit",
    "Window",
    "data_window",
]
