"""Calculations over many series: aggregates over a device group or a hierarchy, and the
difference between a main and a check meter.

Aggregate points are derived (2.11.0). A point for which some expected device has no value
is incomplete: with ``missing="partial"`` (the default) it aggregates the devices that have
one and carries 2.10.0 (questionable); with ``missing="null"`` it has no value (and
2.5.259, known missing). A point built from any estimated value carries 2.8.0 as well.
``AggregateResult.counts`` says how many devices contributed to each point.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from mdm.series import (
    QUALITY_DERIVED,
    QUALITY_ESTIMATED,
    QUALITY_KNOWN_MISSING,
    Point,
    Series,
    SeriesKey,
)
from mdm.vee.rules import grid_range

QUALITY_INCOMPLETE = "2.10.0"
# Means are rounded half even to the store's scale (NUMERIC(28, 9)).
MEAN_QUANTUM = Decimal("1e-9")


class Aggregation(enum.StrEnum):
    SUM = "sum"
    MEAN = "mean"
    MAX = "max"


class Missing(enum.StrEnum):
    PARTIAL = "partial"
    NULL = "null"


@dataclass(slots=True)
class AggregateResult:
    series: Series
    counts: list[int]  # contributing devices per point, parallel to series.points
    expected: int  # devices expected per point

    @property
    def complete(self) -> bool:
        return all(c == self.expected for c in self.counts)


class _Cell:
    __slots__ = ("count", "estimated", "maximum", "total")

    def __init__(self) -> None:
        self.total = Decimal(0)
        self.maximum: Decimal | None = None
        self.count = 0
        self.estimated = False

    def add(self, value: Decimal, estimated: bool) -> None:
        self.total += value
        if self.maximum is None or value > self.maximum:
            self.maximum = value
        self.count += 1
        self.estimated = self.estimated or estimated

    def merge(self, other: _Cell) -> None:
        self.total += other.total
        if other.maximum is not None and (self.maximum is None or other.maximum > self.maximum):
            self.maximum = other.maximum
        self.count += other.count
        self.estimated = self.estimated or other.estimated


def aggregate(
    series: Mapping[str, Series],
    devices: Iterable[str] | None = None,
    *,
    how: Aggregation | str = Aggregation.SUM,
    name: str = "aggregate",
    window: tuple[datetime, datetime] | None = None,
    missing: Missing | str = Missing.PARTIAL,
) -> AggregateResult:
    """Aggregate the interval series of ``devices`` (default: every key of ``series``).

    ``series`` maps device mRID to its series; an expected device absent from it, or
    without a value at a timestamp, is missing there. All series must share ReadingType
    and interval. Timestamps are the grid of ``window`` (start, end] when given, else every
    timestamp any device has. The result's key is (``name``, the ReadingType).
    """
    expected = list(series) if devices is None else list(dict.fromkeys(devices))
    present = [series[d] for d in expected if d in series]
    reading_type, interval = _common(present)
    cells = _cells(present)
    timestamps = _timestamps(window, interval, cells)
    return _result(cells, timestamps, len(expected), reading_type, interval, how, name, missing)


def aggregate_hierarchy(
    children: Mapping[str, Sequence[str]],
    series: Mapping[str, Series],
    *,
    how: Aggregation | str = Aggregation.SUM,
    window: tuple[datetime, datetime] | None = None,
    missing: Missing | str = Missing.PARTIAL,
) -> dict[str, AggregateResult]:
    """Aggregate every node of a hierarchy over the devices below it.

    ``children`` maps a node name to its children, which are nodes (keys of ``children``)
    or devices (anything else). The mean and max of a node are over its devices, not over
    its child nodes' results. Every node has the same timestamps: the window's grid, else
    every timestamp any device has. Each device's points are read once.
    """
    device_cells: dict[str, dict[datetime, _Cell]] = {}
    leaves: dict[str, list[str]] = {}
    present: list[Series] = []

    def visit(node: str, path: tuple[str, ...]) -> list[str]:
        if node in path:
            raise ValueError(f"hierarchy has a cycle through {node!r}")
        if node not in leaves:
            found: list[str] = []
            for child in children[node]:
                found += visit(child, (*path, node)) if child in children else [child]
            leaves[node] = list(dict.fromkeys(found))
        return leaves[node]

    for node in children:
        visit(node, ())
    for device in {d for ds in leaves.values() for d in ds}:
        if device in series:
            present.append(series[device])
            device_cells[device] = _cells([series[device]])
    reading_type, interval = _common(present)
    timestamps = _timestamps(window, interval, {t for c in device_cells.values() for t in c})
    results: dict[str, AggregateResult] = {}
    for node, devices in leaves.items():
        cells: dict[datetime, _Cell] = {}
        for device in devices:
            for t, cell in device_cells.get(device, {}).items():
                cells.setdefault(t, _Cell()).merge(cell)
        results[node] = _result(
            cells, timestamps, len(devices), reading_type, interval, how, node, missing
        )
    return results


def _common(present: Sequence[Series]) -> tuple[str, timedelta | None]:
    if not present:
        return "", None
    first = present[0]
    for other in present[1:]:
        if other.key.reading_type != first.key.reading_type:
            raise ValueError(
                f"cannot aggregate {other.key.reading_type} with {first.key.reading_type}"
            )
        if other.interval != first.interval:
            raise ValueError(f"cannot aggregate intervals {other.interval} and {first.interval}")
    return first.key.reading_type, first.interval


def _cells(present: Iterable[Series]) -> dict[datetime, _Cell]:
    cells: dict[datetime, _Cell] = {}
    for one in present:
        for point in one.points:
            if point.value is not None:
                cell = cells.get(point.timestamp)
                if cell is None:
                    cell = cells[point.timestamp] = _Cell()
                cell.add(point.value, point.is_estimated)
    return cells


def _timestamps(
    window: tuple[datetime, datetime] | None,
    interval: timedelta | None,
    present: Iterable[datetime],
) -> list[datetime]:
    if window is None:
        return sorted(present)
    if interval is None:
        raise ValueError("a window needs interval data")
    return grid_range(window[0], window[1], interval)


def _result(
    cells: Mapping[datetime, _Cell],
    timestamps: list[datetime],
    expected: int,
    reading_type: str,
    interval: timedelta | None,
    how: Aggregation | str,
    name: str,
    missing: Missing | str,
) -> AggregateResult:
    how, missing = Aggregation(how), Missing(missing)
    empty = _Cell()
    points: list[Point] = []
    counts: list[int] = []
    for t in timestamps:
        cell = cells.get(t, empty)
        qualities = {QUALITY_DERIVED}
        if cell.estimated:
            qualities.add(QUALITY_ESTIMATED)
        value: Decimal | None
        if cell.count == 0 or (cell.count < expected and missing is Missing.NULL):
            value = None
            qualities.add(QUALITY_KNOWN_MISSING)
        else:
            value = _value(cell, how)
            if cell.count < expected:
                qualities.add(QUALITY_INCOMPLETE)
        points.append(Point(t, value, frozenset(qualities)))
        counts.append(cell.count)
    key = SeriesKey(name, reading_type)
    return AggregateResult(Series(key, points, interval), counts, expected)


def _value(cell: _Cell, how: Aggregation) -> Decimal | None:
    if how is Aggregation.SUM:
        return cell.total
    if how is Aggregation.MAX:
        return cell.maximum
    return (cell.total / cell.count).quantize(MEAN_QUANTUM)


def difference(main: Series, check: Series, *, name: str | None = None) -> Series:
    """Main minus check at every timestamp either has; where one lacks a value the point
    has none (2.5.259). Points are derived (2.11.0), and estimated (2.8.0) if either is."""
    if main.key.reading_type != check.key.reading_type:
        raise ValueError(f"cannot subtract {check.key.reading_type} from {main.key.reading_type}")
    mains = {p.timestamp: p for p in main.points}
    checks = {p.timestamp: p for p in check.points}
    points = []
    for t in sorted(mains.keys() | checks.keys()):
        a, b = mains.get(t), checks.get(t)
        qualities = {QUALITY_DERIVED}
        if (a is not None and a.is_estimated) or (b is not None and b.is_estimated):
            qualities.add(QUALITY_ESTIMATED)
        if a is None or b is None or a.value is None or b.value is None:
            points.append(Point(t, None, frozenset(qualities | {QUALITY_KNOWN_MISSING})))
        else:
            points.append(Point(t, a.value - b.value, frozenset(qualities)))
    key = SeriesKey(name or f"{main.key.device}-{check.key.device}", main.key.reading_type)
    return Series(key, points, main.interval)
