"""Validation rules: each looks at one series (or a pair) and names the points that fail.

Rules are independent of each other: each sees the values as the meter sent them and
returns ``(index, quality code)`` flags; the engine merges the flags into the points'
qualities. Category 6 codes ("failed validation") make a point a candidate for estimation;
the other codes (status bits reported by the meter) only inform. See docs/vee.md.

Values are compared as Decimals against Decimal bounds, so every comparison is exact; the
products in the spike and tolerance tests are exact too while operands stay within the
28 significant digits of the default decimal context. The fast paths answer "nothing to
flag" from a few C-level passes (``max``, ``min``, ``list.count``) and fall back to a
per-point scan only where a bound is crossed.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Context, Decimal
from itertools import repeat
from operator import is_

from mdm.series import (
    QUALITY_CLOCK_CHANGED,
    QUALITY_FAILED_VALIDATION,
    QUALITY_POWER_FAIL,
    Point,
)

# Failed-validation sub-categories of IEC 61968-9 Annex D where the standard has one;
# 1001 and 1002 are OpenHES's own (vendor range) for checks the standard does not name.
QUALITY_ZERO_USAGE = "2.6.1"
QUALITY_ABOVE_MAXIMUM = "2.6.3"
QUALITY_BELOW_MINIMUM = "2.6.4"
QUALITY_SPIKE = "2.6.5"  # usage above maximum percentage (of the recent median)
QUALITY_REGISTER_MISMATCH = "2.6.1001"
QUALITY_MAIN_CHECK_MISMATCH = "2.6.1002"

# Quality codes the meter's status byte maps to (set by the end device, system 1).
QUALITY_DIAGNOSTICS = "1.1.0"
QUALITY_CLOCK_ERROR = "1.1.9"
QUALITY_SUSPECT = "1.5.258"
QUALITY_DST_IN_EFFECT = "1.4.16"

_FAILED_CATEGORY = "6"
_ZERO = Decimal(0)
_CEILING = Context(rounding=ROUND_CEILING)
# Ranges this short are checked point by point (see Spike._block).
_SPIKE_LEAF = 4

Flag = tuple[int, str]


def is_failure(code: str) -> bool:
    """Whether a quality code says "failed validation" (category 6, any system)."""
    parts = code.split(".")
    return len(parts) == 3 and parts[1] == _FAILED_CATEGORY


class Columns:
    """A series' values as a plain list, with optional history points in front.

    ``values[start:]`` are the series' own values; the ones before are history (earlier
    points of the same series) that windowed rules may look back on. Flags always index
    the series' own points.
    """

    __slots__ = ("_has_none", "_status", "points", "start", "values")

    def __init__(self, points: Sequence[Point], history: Sequence[Point] = ()) -> None:
        self.points = points
        self.start = len(history)
        values = [p.value for p in points]
        self.values = [p.value for p in history] + values if history else values
        self._status: list[int] | None = None
        self._has_none: bool | None = None

    @classmethod
    def of(cls, values: list[Decimal | None], status: list[int]) -> Columns:
        """The columns of a series given as plain lists (no history, no Point objects)."""
        cols = cls.__new__(cls)
        cols.points = ()
        cols.start = 0
        cols.values = values
        cols._status = status
        cols._has_none = None
        return cols

    @property
    def own_values(self) -> list[Decimal | None]:
        return self.values[self.start :] if self.start else self.values

    @property
    def has_none(self) -> bool:
        """Whether any value (history included) is null."""
        if self._has_none is None:
            self._has_none = has_none(self.values)
        return self._has_none

    @property
    def status(self) -> list[int]:
        if self._status is None:
            self._status = [p.status_bits for p in self.points]
        return self._status


def has_none(values: Sequence[Decimal | None]) -> bool:
    # ``None in values`` costs ten times more: Decimal.__eq__(None) is a slow path.
    return any(map(is_, values, repeat(None)))


def _extremes(values: list[Decimal | None], nulls: bool) -> tuple[Decimal, Decimal] | None:
    present = [v for v in values if v is not None] if nulls else values
    if not present:
        return None
    return max(present), min(present)  # type: ignore[type-var]


def _decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str | float):
        raise ValueError(f"{name}: {value!r} is not a number")
    try:
        result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except ArithmeticError:
        raise ValueError(f"{name}: {value!r} is not a number") from None
    if not result.is_finite():
        raise ValueError(f"{name}: {value!r} is not a finite number")
    return result


def _optional_decimal(value: object, name: str) -> Decimal | None:
    return None if value is None else _decimal(value, name)


@dataclass(frozen=True, slots=True)
class Limits:
    """Values below ``min`` get 2.6.4, values above ``max`` get 2.6.3 (bounds pass)."""

    min: Decimal | None = None
    max: Decimal | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "min", _optional_decimal(self.min, "limits.min"))
        object.__setattr__(self, "max", _optional_decimal(self.max, "limits.max"))
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"limits: min {self.min} is above max {self.max}")

    def check(self, cols: Columns) -> list[Flag]:
        values = cols.own_values
        extremes = _extremes(values, cols.has_none)
        if extremes is None:
            return []
        high, low = extremes
        top, bottom = self.max, self.min
        above = top is not None and high > top
        below = bottom is not None and low < bottom
        if not (above or below):
            return []
        flags: list[Flag] = []
        for index, value in enumerate(values):
            if value is None:
                continue
            if above and value > top:  # type: ignore[operator]
                flags.append((index, QUALITY_ABOVE_MAXIMUM))
            elif below and value < bottom:  # type: ignore[operator]
                flags.append((index, QUALITY_BELOW_MINIMUM))
        return flags


@dataclass(frozen=True, slots=True)
class Spike:
    """A value above ``factor`` times the median of the ``window`` values before it: 2.6.5.

    The window holds the most recent present (non-null) values, history included; points
    with fewer than ``window`` values before them are not judged. Values at or below
    ``floor`` are never spikes (without a floor, any use after a run of zeros would be).
    """

    factor: Decimal
    window: int = 8
    floor: Decimal = _ZERO

    def __post_init__(self) -> None:
        object.__setattr__(self, "factor", _decimal(self.factor, "spike.factor"))
        object.__setattr__(self, "floor", _decimal(self.floor, "spike.floor"))
        if self.factor <= 0:
            raise ValueError(f"spike.factor must be positive, not {self.factor}")
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"spike.window must be a positive integer, not {self.window!r}")

    def check(self, cols: Columns) -> list[Flag]:
        values = cols.values
        if not cols.has_none:
            return self._scan(values, None, cols.start)  # type: ignore[arg-type]
        where = [i for i, v in enumerate(values) if v is not None]
        return self._scan([values[i] for i in where], where, cols.start)

    def _scan(self, present: list[Decimal], where: list[int] | None, start: int) -> list[Flag]:
        size = self.window
        first = size
        if where is None:
            first = max(first, start)
        else:
            first = max(first, next((k for k, i in enumerate(where) if i >= start), len(where)))
        found: list[int] = []
        if first < len(present):
            self._block(present, first, len(present), found)
        return [((k if where is None else where[k]) - start, QUALITY_SPIKE) for k in found]

    def _block(self, present: list[Decimal], begin: int, end: int, found: list[int]) -> None:
        # Every window of a point in [begin, end) lies in present[begin - window : end - 1],
        # so each of their medians is at least the rank-th smallest value there. If fewer
        # than ``rank`` of those values are below top/factor (rounded up), every median is
        # >= top/factor and no point of the range exceeds factor x median. Otherwise halve
        # the range; the whole series usually passes at once.
        top = max(present[begin:end])
        if top <= self.floor:
            return
        bound = _CEILING.divide(top, self.factor)
        below = len([v for v in present[begin - self.window : end - 1] if v < bound])
        if below < (self.window + 1) // 2:
            return
        if end - begin > _SPIKE_LEAF:
            middle = (begin + end) // 2
            self._block(present, begin, middle, found)
            self._block(present, middle, end, found)
            return
        for k in range(begin, end):
            value = present[k]
            if value > self.floor and _is_spike(
                value, sorted(present[k - self.window : k]), self.factor
            ):
                found.append(k)


def _is_spike(value: Decimal, window: list[Decimal], factor: Decimal) -> bool:
    middle = len(window) // 2
    if len(window) % 2:
        return value > factor * window[middle]
    return value + value > factor * (window[middle - 1] + window[middle])


@dataclass(frozen=True, slots=True)
class ZeroRun:
    """``count`` or more consecutive zero values: every point of the run gets 2.6.1.

    Consecutive means adjacent in the series (history included); a null value ends a run.
    """

    count: int

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"zero_run.count must be a positive integer, not {self.count!r}")

    def check(self, cols: Columns) -> list[Flag]:
        values = cols.values
        if values.count(_ZERO) < self.count:
            return []
        flags: list[Flag] = []
        run_start = 0
        for index, value in enumerate([*values, None]):
            if value is not None and not value:
                continue
            if index - run_start >= self.count:
                own = range(max(run_start, cols.start), index)
                flags.extend((i - cols.start, QUALITY_ZERO_USAGE) for i in own)
            run_start = index + 1
        return flags


class StatusBit(enum.IntFlag):
    """Bits of the DLMS/IDIS profile status byte that OpenHES interprets."""

    CRITICAL_ERROR = 0x01
    CLOCK_INVALID = 0x02
    DATA_NOT_VALID = 0x04
    DAYLIGHT_SAVING = 0x08
    CLOCK_ADJUSTED = 0x20
    POWER_DOWN = 0x80


STATUS_QUALITIES: dict[StatusBit, str] = {
    StatusBit.CRITICAL_ERROR: QUALITY_DIAGNOSTICS,
    StatusBit.CLOCK_INVALID: QUALITY_CLOCK_ERROR,
    StatusBit.DATA_NOT_VALID: QUALITY_SUSPECT,
    StatusBit.DAYLIGHT_SAVING: QUALITY_DST_IN_EFFECT,
    StatusBit.CLOCK_ADJUSTED: QUALITY_CLOCK_CHANGED,
    StatusBit.POWER_DOWN: QUALITY_POWER_FAIL,
}
DEFAULT_FAIL_BITS = StatusBit.CRITICAL_ERROR | StatusBit.CLOCK_INVALID | StatusBit.DATA_NOT_VALID


@dataclass(frozen=True, slots=True)
class Status:
    """Each set status bit adds its quality code; bits in ``fail`` also add 2.6.0.

    Bits 4 and 6 (reserved in IDIS) are ignored.
    """

    fail: StatusBit = DEFAULT_FAIL_BITS

    def check(self, cols: Columns) -> list[Flag]:
        status = cols.status
        if not any(status):
            return []
        fail = int(self.fail)
        flags: list[Flag] = []
        for index, bits in enumerate(status):
            if not bits:
                continue
            flags.extend((index, code) for bit, code in STATUS_QUALITIES.items() if bits & bit)
            if bits & fail:
                flags.append((index, QUALITY_FAILED_VALIDATION))
        return flags


@dataclass(frozen=True, slots=True)
class Gaps:
    """Report grid intervals with no point (the engine lists them; estimation may fill)."""


def grid_range(start: datetime, end: datetime, interval: timedelta) -> list[datetime]:
    """Interval ends on the UTC-epoch-aligned grid in (start, end]."""
    step = interval // timedelta(microseconds=1)
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    offset = (start - epoch) // timedelta(microseconds=1)
    first = epoch + timedelta(microseconds=offset - offset % step + step)
    count = (end - first) // interval + 1
    return [first + interval * k for k in range(max(count, 0))]


def missing_timestamps(
    timestamps: Sequence[datetime],
    interval: timedelta,
    start: datetime | None = None,
    end: datetime | None = None,
) -> list[datetime]:
    """Grid interval ends in (start, end] with no timestamp in ``timestamps`` (sorted).

    Without ``start``/``end`` the window is the series' own first to last point, so only
    inner gaps show. Off-grid timestamps do not fill any grid slot.
    """
    if not timestamps:
        if start is None or end is None:
            return []
        return grid_range(start, end, interval)
    first, last = timestamps[0], timestamps[-1]
    if start is None:
        start = first - interval
    if end is None:
        end = last
    if (
        first - start <= interval
        and end - last < interval
        and _on_grid(first, interval)
        and timestamps == _grid_from(first, interval, len(timestamps))
    ):
        return []
    present = set(timestamps)
    return [t for t in grid_range(start, end, interval) if t not in present]


_GRIDS: dict[tuple[datetime, timedelta, int], list[datetime]] = {}
_GRIDS_KEPT = 256


def _grid_from(first: datetime, interval: timedelta, count: int) -> list[datetime]:
    # Comparing with a ready-made grid is the cheapest exact "no gap" test (list equality
    # runs in C); an ingest batch has many series on the same grid, so it is cached.
    key = (first, interval, count)
    grid = _GRIDS.get(key)
    if grid is None:
        if len(_GRIDS) >= _GRIDS_KEPT:
            _GRIDS.clear()
        grid = _GRIDS[key] = [first + interval * k for k in range(count)]
    return grid


def _on_grid(timestamp: datetime, interval: timedelta) -> bool:
    return (timestamp - datetime(1970, 1, 1, tzinfo=UTC)) % interval == timedelta(0)


def _outside(
    difference: Decimal, reference: Decimal, tolerance: Decimal, relative: Decimal
) -> bool:
    return abs(difference) > tolerance + relative * abs(reference)


@dataclass(frozen=True, slots=True)
class RegisterCheck:
    """Register advance between two reads versus the sum of the intervals between them.

    For consecutive register reads r0 at t0 and r1 at t1 (both on the interval grid), the
    intervals ending in (t0, t1] must all be present; then if
    ``|(r1 - r0) - sum| > tolerance + relative x |r1 - r0|`` the read r1 and those
    intervals get 2.6.1001. Pairs with a missing interval are not judged (the gap rule
    reports the gap). Register roll-over is not handled.
    """

    tolerance: Decimal = _ZERO
    relative: Decimal = _ZERO

    def __post_init__(self) -> None:
        _check_tolerances(self, "register_check")

    def compare(
        self, registers: Sequence[Point], intervals: Sequence[Point], interval: timedelta
    ) -> tuple[list[Flag], list[Flag]]:
        """Flags for (registers, intervals)."""
        position = {p.timestamp: i for i, p in enumerate(intervals)}
        register_flags: list[Flag] = []
        interval_flags: list[Flag] = []
        previous: tuple[datetime, Decimal] | None = None
        for index, read in enumerate(registers):
            if read.value is None:
                continue
            if previous is not None:
                covered = self._covered(previous[0], read.timestamp, interval, position)
                members = [intervals[i].value for i in covered]
                if covered and not has_none(members):
                    advance = read.value - previous[1]
                    total = sum(members, _ZERO)  # type: ignore[arg-type]
                    if _outside(advance - total, advance, self.tolerance, self.relative):
                        register_flags.append((index, QUALITY_REGISTER_MISMATCH))
                        interval_flags.extend((i, QUALITY_REGISTER_MISMATCH) for i in covered)
            previous = (read.timestamp, read.value)
        return register_flags, interval_flags

    @staticmethod
    def _covered(
        start: datetime, end: datetime, interval: timedelta, position: dict[datetime, int]
    ) -> list[int]:
        """Indices of the intervals ending in (start, end]; [] unless both reads are on the
        grid and every one of those intervals is present."""
        if not _on_grid(start, interval):
            return []
        grid = grid_range(start, end, interval)
        if not grid or grid[-1] != end:
            return []
        found = [position.get(t) for t in grid]
        return [] if None in found else found  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class MainCheck:
    """Main and check meter on the same point: where both have a value at a timestamp and
    ``|main - check| > tolerance + relative x |main|``, both points get 2.6.1002."""

    tolerance: Decimal = _ZERO
    relative: Decimal = _ZERO

    def __post_init__(self) -> None:
        _check_tolerances(self, "main_check")

    def compare(
        self, main: Sequence[Point], check: Sequence[Point]
    ) -> tuple[list[Flag], list[Flag]]:
        """Flags for (main, check)."""
        check_at = {p.timestamp: (i, p.value) for i, p in enumerate(check)}
        main_flags: list[Flag] = []
        check_flags: list[Flag] = []
        for index, point in enumerate(main):
            other = check_at.get(point.timestamp)
            if other is None or point.value is None or other[1] is None:
                continue
            if _outside(point.value - other[1], point.value, self.tolerance, self.relative):
                main_flags.append((index, QUALITY_MAIN_CHECK_MISMATCH))
                check_flags.append((other[0], QUALITY_MAIN_CHECK_MISMATCH))
        return main_flags, check_flags


def _check_tolerances(rule: RegisterCheck | MainCheck, name: str) -> None:
    for attr in ("tolerance", "relative"):
        value = _decimal(getattr(rule, attr), f"{name}.{attr}")
        if value < 0:
            raise ValueError(f"{name}.{attr} must not be negative, not {value}")
        object.__setattr__(rule, attr, value)
