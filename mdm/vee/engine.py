"""The VEE engine: run the configured rules over a series, then estimate what failed.

``VeeEngine(config).validate(series)`` returns the meter's points unchanged in value, with
the quality codes the rules added, plus estimated points as separate, new points. When no
rule flags anything and nothing is missing, the result's series is the input series itself
(no copy), which is what makes validation cheap on the ingest path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cim.codelists.readingtype import ReadingType
from cim.errors import CimError
from mdm.series import QUALITY_KNOWN_MISSING, Point, Series, SeriesKey
from mdm.vee.config import RuleSet, VeeConfig
from mdm.vee.estimation import Method, estimate
from mdm.vee.rules import Columns, Flag, has_none, is_failure, missing_timestamps

Window = tuple[datetime, datetime]


@dataclass(slots=True)
class VeeResult:
    """Outcome of validating one series.

    ``series``: the meter's points with quality codes added (values untouched);
    ``estimates``: new points for failed or missing intervals (2.8.0; "null" ones have no
    value and 2.5.259 too), sorted; ``missing``: grid interval ends with no point;
    ``failed``: indices in ``series`` of points that failed a rule or carry no value.
    """

    series: Series
    estimates: list[Point]
    missing: list[datetime]
    failed: tuple[int, ...]
    rules: RuleSet

    @property
    def method(self) -> Method:
        return self.rules.estimation.method

    @property
    def clean(self) -> bool:
        """Nothing failed and nothing is missing."""
        return not self.failed and not self.missing

    def current(self) -> Series:
        """The series as it reads after estimation: an estimate stands in for the meter's
        point at its timestamp (which stays in ``series``, and in the store as history)."""
        if not self.estimates:
            return self.series
        replaced = {p.timestamp: p for p in self.estimates}
        points = [replaced.pop(p.timestamp, p) for p in self.series.points]
        points.extend(replaced.values())
        points.sort(key=lambda p: p.timestamp)
        return Series(self.series.key, points, self.series.interval)


class VeeEngine:
    def __init__(self, config: VeeConfig | Mapping[str, Any] | None = None) -> None:
        if config is None:
            config = VeeConfig()
        elif not isinstance(config, VeeConfig):
            config = VeeConfig.from_dict(config)
        self.config = config

    def rules_for(self, reading_type: str, group: str | None = None) -> RuleSet:
        return self.config.select(reading_type, group)

    def validate(
        self,
        series: Series,
        *,
        group: str | None = None,
        window: Window | None = None,
        history: Sequence[Point] = (),
    ) -> VeeResult:
        """Validate ``series`` (sorted by timestamp) with the rules for its ReadingType and
        ``group``.

        ``window`` (start, end] is where grid intervals are expected (default: the series'
        first to last point, so gaps at either end need a window). ``history`` are earlier
        points of the same series: the spike and zero-run rules look back on them, and
        estimation may use them as anchors; they are not flagged.
        """
        rules = self.config.select(series.key.reading_type, group)
        points = series.points
        cols = Columns(points, history)
        flags: list[Flag] = []
        for rule in rules.point_rules:
            flags.extend(rule.check(cols))
        missing: list[datetime] = []
        if rules.gaps is not None and series.interval is not None:
            start, end = window if window is not None else (None, None)
            missing = missing_timestamps([p.timestamp for p in points], series.interval, start, end)
        nulls = has_none(cols.own_values)
        if not flags and not missing and not nulls:
            return VeeResult(series, [], [], (), rules)

        added: dict[int, set[str]] = {}
        for index, code in flags:
            added.setdefault(index, set()).add(code)
        if nulls:
            for index, point in enumerate(points):
                if point.value is None:
                    added.setdefault(index, set()).add(QUALITY_KNOWN_MISSING)
        failed = tuple(
            sorted(
                index
                for index, codes in added.items()
                if points[index].value is None or any(map(is_failure, codes))
            )
        )
        validated = _with_codes(series, added)

        estimates: list[Point] = []
        if rules.estimation.method is not Method.NONE and (failed or missing):
            excluded = set(failed)
            anchors = [
                (p.timestamp, p.value)
                for p in history
                if p.value is not None and not any(map(is_failure, p.qualities))
            ]
            anchors += [
                (p.timestamp, p.value)
                for index, p in enumerate(points)
                if p.value is not None and index not in excluded
            ]
            targets = sorted([points[i].timestamp for i in failed] + missing)
            estimates = estimate(anchors, targets, rules.estimation)  # type: ignore[arg-type]
        return VeeResult(validated, estimates, missing, failed, rules)

    def validate_register(
        self, registers: Series, intervals: Series, *, group: str | None = None
    ) -> tuple[Series, Series]:
        """The register-versus-intervals check (configured on the register's ReadingType).

        Returns both series with 2.6.1001 on the reads and intervals that disagree.
        """
        rule = self.config.select(registers.key.reading_type, group).register_check
        if rule is None or intervals.interval is None:
            return registers, intervals
        _check_same_quantity(registers.key.reading_type, intervals.key.reading_type)
        register_flags, interval_flags = rule.compare(
            registers.points, intervals.points, intervals.interval
        )
        return _flagged(registers, register_flags), _flagged(intervals, interval_flags)

    def validate_main_check(
        self, main: Series, check: Series, *, group: str | None = None
    ) -> tuple[Series, Series]:
        """The main/check comparison (configured on the main meter's ReadingType).

        Returns both series with 2.6.1002 on the points that disagree.
        """
        rule = self.config.select(main.key.reading_type, group).main_check
        if rule is None:
            return main, check
        _check_same_quantity(main.key.reading_type, check.key.reading_type)
        main_flags, check_flags = rule.compare(main.points, check.points)
        return _flagged(main, main_flags), _flagged(check, check_flags)

    def as_ingest_hook(
        self,
        group_of: Callable[[str], str | None] | None = None,
        window_of: Callable[[Series], Window | None] | None = None,
    ) -> Callable[[Series], Series]:
        """The validator for :func:`mdm.ingest.ingest`: ``Series -> Series``.

        It returns the meter's points in their order, with quality codes added and values
        untouched, followed by the estimates (each carrying 2.8.0), which ingest stores as
        newer versions. ``group_of(device)`` names the device's VEE group; ``window_of``
        gives the window in which intervals are expected (e.g. the read task's window), so
        gaps at the ends of a batch are found too. The hook also answers ``is_clean`` on
        plain columns, which ingest asks first (a clean series then needs no Points).
        """
        return _IngestHook(self, group_of, window_of)

    def is_clean(
        self,
        reading_type: str,
        interval: timedelta | None,
        timestamps: Sequence[datetime],
        values: list[Decimal | None],
        status: list[int],
        *,
        group: str | None = None,
    ) -> bool:
        """Whether :meth:`validate` would return the series of these columns untouched
        (nothing flagged, nothing missing, no null value) without a window or history,
        computed on the columns alone (no Point objects: the ingest fast path)."""
        rules = self.config.select(reading_type, group)
        cols = Columns.of(values, status)
        for rule in rules.point_rules:
            if rule.check(cols):
                return False
        gaps = rules.gaps is not None and interval is not None
        if gaps and missing_timestamps(timestamps, interval):  # type: ignore[arg-type]
            return False
        return not cols.has_none


class _IngestHook:
    """``VeeEngine.as_ingest_hook()``: ``Series -> Series``, plus ``is_clean`` on columns,
    which ingest asks first so that a clean series needs no Points."""

    __slots__ = ("engine", "group_of", "window_of")

    def __init__(
        self,
        engine: VeeEngine,
        group_of: Callable[[str], str | None] | None,
        window_of: Callable[[Series], Window | None] | None,
    ) -> None:
        self.engine = engine
        self.group_of = group_of
        self.window_of = window_of

    def __call__(self, series: Series) -> Series:
        group = self.group_of(series.key.device) if self.group_of is not None else None
        window = self.window_of(series) if self.window_of is not None else None
        result = self.engine.validate(series, group=group, window=window)
        if not result.estimates:
            return result.series
        points = result.series.points + result.estimates
        return Series(series.key, points, series.interval)

    def is_clean(
        self,
        key: SeriesKey,
        interval: timedelta | None,
        timestamps: Sequence[datetime],
        values: list[Decimal | None],
        status: list[int],
    ) -> bool:
        """True: calling the hook on this series would return it unchanged. False: call
        it (a window callback needs the Series, so it always answers False)."""
        if self.window_of is not None:
            return False
        group = self.group_of(key.device) if self.group_of is not None else None
        return self.engine.is_clean(
            key.reading_type, interval, timestamps, values, status, group=group
        )


def _flagged(series: Series, flags: list[Flag]) -> Series:
    if not flags:
        return series
    added: dict[int, set[str]] = {}
    for index, code in flags:
        added.setdefault(index, set()).add(code)
    return _with_codes(series, added)


def _with_codes(series: Series, added: Mapping[int, set[str]]) -> Series:
    points = list(series.points)
    for index, codes in added.items():
        point = points[index]
        if not codes <= point.qualities:
            points[index] = Point(
                point.timestamp, point.value, point.qualities | codes, point.status_bits
            )
    return Series(series.key, points, series.interval)


_QUANTITY_FIELDS = ("commodity", "flow_direction", "unit", "multiplier")


def _check_same_quantity(first: str, second: str) -> None:
    """Refuse to compare, say, kWh with Wh or import with export (vendor codes pass)."""
    try:
        a, b = ReadingType.parse(first), ReadingType.parse(second)
    except CimError:
        return
    for name in _QUANTITY_FIELDS:
        if getattr(a, name) != getattr(b, name):
            raise ValueError(
                f"cannot compare {first} with {second}: {name} differs "
                f"({getattr(a, name)} vs {getattr(b, name)})"
            )
