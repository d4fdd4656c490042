"""Interval consumption from the captures of a cumulative register in a load profile.

A DLMS load profile captures energy registers (``1-0:1.8.0``...) as running totals. The
consumption of an interval is the difference of two consecutive captures, stamped at the
interval's END (IEC 61968-9 interval readings are end-stamped):
``delta(end) = cumulative(end) - cumulative(end - step)``.

The rules, all on UTC instants:

- a delta needs both captures, exactly one ``step`` apart. A capture missing in the middle
  (a power failure, a lost row) leaves the interval(s) it would have closed absent: a gap for
  VEE to estimate or a re-read to fill, never a value spanning two intervals under a
  one-interval ReadingType;
- a negative difference (meter replaced, register reset or rolled over) is not consumption:
  no delta is produced and the pair is reported as a :class:`Reset`;
- the delta carries the status bits of the capture that closes the interval (a profile's
  status describes the interval that ended at its capture);
- values are exact: two captures with different scalers are brought to the finer one.

Pure: no database, no time zones (the caller resolves the meter's wall times first).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Capture:
    """One captured total: ``raw * 10**scaler`` in ``unit`` at the UTC instant ``at``."""

    at: datetime
    raw: int
    scaler: int
    unit: str
    status: int = 0

    @property
    def value(self) -> Decimal:
        return Decimal(self.raw).scaleb(self.scaler)


@dataclass(frozen=True, slots=True)
class Delta:
    """The consumption of the interval ending at ``end``: ``raw * 10**scaler`` in ``unit``."""

    end: datetime
    raw: int
    scaler: int
    unit: str
    status: int

    @property
    def value(self) -> Decimal:
        return Decimal(self.raw).scaleb(self.scaler)


@dataclass(frozen=True, slots=True)
class Reset:
    """A capture lower than the one before it: no delta for the interval ending at ``end``."""

    end: datetime
    before: Decimal
    after: Decimal


def difference(start: Capture, end: Capture) -> tuple[int, int]:
    """``end - start`` exactly, as (raw, scaler) at the finer of the two scalers."""
    scaler = min(start.scaler, end.scaler)
    raw = end.raw * 10 ** (end.scaler - scaler) - start.raw * 10 ** (start.scaler - scaler)
    return raw, scaler


#: A capture or a delta as a plain tuple: (UTC instant, raw, scaler, unit, status). The
#: head-end builds these per value (a tuple is far cheaper than a frozen dataclass).
Point = tuple[datetime, int, int, str, int]


def point_deltas(ordered: Sequence[Point], step: timedelta) -> tuple[list[Point], list[Reset]]:
    """The deltas (as points stamped at the interval end) of one channel's captures, already
    ordered by time (a stored previous capture first): the rules of the module docstring.
    ``step`` must be positive."""
    deltas: list[Point] = []
    resets: list[Reset] = []
    if not ordered:
        return deltas, resets
    append = deltas.append
    start_at, start_raw, start_scaler, start_unit, _ = ordered[0]
    for index in range(1, len(ordered)):
        at, raw, scaler, unit, status = ordered[index]
        if at - start_at == step and unit == start_unit:
            if scaler == start_scaler:
                diff, finer = raw - start_raw, scaler
            else:
                finer = min(start_scaler, scaler)
                diff = raw * 10 ** (scaler - finer) - start_raw * 10 ** (start_scaler - finer)
            if diff < 0:
                resets.append(
                    Reset(at, Decimal(start_raw).scaleb(start_scaler), Decimal(raw).scaleb(scaler))
                )
            else:
                append((at, diff, finer, unit, status))
        start_at, start_raw, start_scaler, start_unit = at, raw, scaler, unit
    return deltas, resets


def interval_deltas(
    captures: Iterable[Capture], step: timedelta, previous: Capture | None = None
) -> tuple[list[Delta], list[Reset]]:
    """The deltas of one channel's captures (see the module docstring), ordered by time.

    ``previous``: a capture from before these (the last one stored), used for the first
    interval when it is exactly one ``step`` before the first capture. Captures at the same
    instant as an earlier one, or in another unit, close no interval."""
    if step <= timedelta(0):
        raise ValueError(f"the capture period must be positive, not {step}")
    ordered = sorted(captures, key=lambda c: c.at)
    if previous is not None and (not ordered or previous.at < ordered[0].at):
        ordered.insert(0, previous)
    points = [(c.at, c.raw, c.scaler, c.unit, c.status) for c in ordered]
    found, resets = point_deltas(points, step)
    return [Delta(*point) for point in found], resets


__all__ = ["Capture", "Delta", "Point", "Reset", "difference", "interval_deltas", "point_deltas"]
