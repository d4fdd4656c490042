"""Ingest on every database: idempotency, versioning, DST, exact scaling, bad input, atomicity,
and the validation hook."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from mdm_samples import OBIS_ENERGY, RT_15MIN_KWH, RT_REGISTER_KWH, T0, count, interval_rows
from sqlalchemy import event, text

from cim.errors import ErrorCode
from mdm.database import Store
from mdm.errors import MdmError
from mdm.history import versions
from mdm.ingest import ingest, store_points
from mdm.normalise import RawValue
from mdm.readings import read_one
from mdm.series import (
    QUALITY_ESTIMATED,
    QUALITY_FAILED_VALIDATION,
    Point,
    Series,
    SeriesKey,
)

pytest_plugins = ["mdm_conftest"]

DAY = (T0, T0 + timedelta(days=1))


def values_of(store: Store, device: str = "M1", rt: str = RT_15MIN_KWH) -> list[Decimal | None]:
    return [p.value for p in read_one(store, device, rt, *DAY)]


def assert_nothing_written(store: Store) -> None:
    assert count(store, "raw_values") == 0
    assert count(store, "readings") == 0
    assert count(store, "reading_history") == 0


# --- idempotency and versions ------------------------------------------------------------


def test_ingest_stores_raw_and_normalised_values(meters):
    result = ingest(meters, interval_rows(values=[1234, 0, 999_999, 5]))
    assert (result.rows, result.raw_stored, result.readings_new) == (4, 4, 4)
    assert values_of(meters) == [Decimal("1.234"), 0, Decimal("999.999"), Decimal("0.005")]
    with meters.connect() as conn:
        raw = conn.execute(
            text("SELECT value, scaler, unit, source_task, meter_time FROM raw_values ORDER BY ts")
        ).all()
    assert tuple(raw[0]) == (1234, 0, "Wh", "t1", None)


def test_reingesting_the_same_batch_creates_nothing(meters):
    rows = interval_rows(count=96)
    first = ingest(meters, rows)
    again = ingest(meters, rows)
    assert (first.raw_stored, first.readings_new) == (96, 96)
    assert (again.raw_stored, again.readings_new, again.readings_versioned) == (0, 0, 0)
    assert again.raw_duplicates == 96
    assert count(meters, "raw_values") == 96
    assert count(meters, "reading_history") == 0


def test_same_values_from_another_task_append_raw_but_no_version(meters):
    ingest(meters, interval_rows(task="t1"))
    result = ingest(meters, interval_rows(task="t2"))
    assert (result.raw_stored, result.readings_new, result.readings_versioned) == (4, 0, 0)
    assert count(meters, "raw_values") == 8


def test_a_changed_value_becomes_a_new_version_and_the_old_one_history(meters):
    ingest(meters, interval_rows(values=[1000, 2000, 3000, 4000]))
    result = ingest(
        meters,
        interval_rows(values=[1000, 2500, 3000, 4000], task="reread"),
        who="backfill",
        reason="re-read after gap",
    )
    assert (result.readings_new, result.readings_versioned) == (0, 1)
    assert values_of(meters) == [1, Decimal("2.5"), 3, 4]
    history = versions(meters, "M1", RT_15MIN_KWH, T0 + timedelta(minutes=30))
    assert [(v.version, v.value, v.source) for v in history] == [
        (1, Decimal("2"), "meter"),
        (2, Decimal("2.5"), "meter"),
    ]
    old = history[0]
    assert (old.superseded_by, old.reason) == ("backfill", "re-read after gap")
    assert old.superseded_at == history[1].recorded_at


def test_rows_in_any_order_and_several_devices(meters):
    rows = interval_rows("M1", 8) + interval_rows("M2", 8)
    ingest(meters, list(reversed(rows)))
    assert len(values_of(meters, "M1")) == 8
    assert values_of(meters, "M2") == [Decimal(1000 + k) / 1000 for k in range(8)]


def test_a_register_reading_without_interval(meters):
    row = RawValue(
        "M1",
        OBIS_ENERGY,
        T0 + timedelta(hours=1, minutes=7, seconds=3),
        123_456_789,
        "Wh",
        scaler=1,
    )
    ingest(meters, [row])
    series = read_one(meters, "M1", RT_REGISTER_KWH, *DAY)
    assert [p.value for p in series] == [Decimal("1234567.89")]
    assert series.interval is None


# --- exact normalisation -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "unit", "scaler", "expected"),
    [
        (1234, "Wh", 0, Decimal("1.234")),  # Wh into the kWh ReadingType: / 1000, exactly
        (1234, "kWh", 0, Decimal("1234")),
        (1234, "Wh", -2, Decimal("0.01234")),
        (-5, "Wh", 3, Decimal("-5")),
        (123_000, "Wh", -9, Decimal("0.000000123")),
        (9_223_372_036_854_775_807, "Wh", 0, Decimal("9223372036854775.807")),
        (7, "MWh", 2, Decimal("700000")),
    ],
)
def test_scaling_is_exact(meters, raw, unit, scaler, expected):
    row = RawValue(
        "M1", OBIS_ENERGY, T0 + timedelta(minutes=15), raw, unit, scaler=scaler, interval_minutes=15
    )
    ingest(meters, [row])
    (value,) = values_of(meters)
    assert value == expected
    assert value.as_tuple().exponent == -9  # stored as NUMERIC(28, 9): every digit kept


# --- DST ----------------------------------------------------------------------------------


def ams_rows(
    walls: list[tuple[int, int]], day: int, *, dst: list[bool | None] | None = None
) -> list[RawValue]:
    """AMS values at local wall times (hour, minute) on the given October/March day."""
    month = 10 if day == 27 else 3
    flags = dst or [None] * len(walls)
    return [
        RawValue(
            "AMS",
            OBIS_ENERGY,
            datetime(2024, month, day, h, m),
            100 + k,
            "Wh",
            interval_minutes=15,
            dst=flag,
        )
        for k, ((h, m), flag) in enumerate(zip(walls, flags, strict=True))
    ]


AUTUMN = [(1, 45), (2, 0), (2, 15), (2, 30), (2, 45), (2, 0), (2, 15), (2, 30), (2, 45), (3, 0)]
AUTUMN_UTC = [
    datetime(2024, 10, 26, 23, 45, tzinfo=UTC) + timedelta(minutes=15 * k) for k in range(10)
]


def autumn_series(store: Store) -> list[datetime]:
    window = (datetime(2024, 10, 26, tzinfo=UTC), datetime(2024, 10, 28, tzinfo=UTC))
    return [p.timestamp for p in read_one(store, "AMS", RT_15MIN_KWH, *window)]


def test_autumn_repeated_hour_with_dst_flag_is_two_distinct_intervals(meters):
    flags = [True, True, True, True, True, False, False, False, False, False]
    rows = ams_rows(AUTUMN, 27, dst=flags)
    ingest(meters, list(reversed(rows)))  # the flag does not depend on the order
    assert autumn_series(meters) == AUTUMN_UTC
    with meters.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT meter_time, meter_dst FROM raw_values "
                "WHERE meter_time = '2024-10-27T02:15:00' ORDER BY ts"
            )
        ).all()
    assert [tuple(r) for r in stored] == [("2024-10-27T02:15:00", 1), ("2024-10-27T02:15:00", 0)]


def test_autumn_repeated_hour_without_flag_is_resolved_by_series_order(meters):
    ingest(meters, ams_rows(AUTUMN, 27))
    assert autumn_series(meters) == AUTUMN_UTC


def test_autumn_repeated_hour_without_flag_out_of_order_is_refused(meters):
    rows = ams_rows(AUTUMN, 27)
    rows[5], rows[6] = rows[6], rows[5]  # 02:15 before 02:00 in the second hour
    with pytest.raises(MdmError) as caught:
        ingest(meters, rows)
    assert caught.value.error is ErrorCode.BAD_DATETIME
    assert "chronological" in caught.value.reason
    assert_nothing_written(meters)


def test_a_single_ambiguous_wall_time_without_flag_is_refused_naming_the_row(meters):
    rows = ams_rows([(1, 45), (2, 30)], 27)
    with pytest.raises(MdmError) as caught:
        ingest(meters, rows)
    assert caught.value.row == 1
    assert "repeated hour" in caught.value.reason and "AMS" in str(caught.value)
    assert_nothing_written(meters)


def test_spring_gap_wall_time_is_refused(meters):
    rows = ams_rows([(1, 45), (2, 30), (3, 0)], 31)
    with pytest.raises(MdmError) as caught:
        ingest(meters, rows)
    assert caught.value.row == 1 and "does not exist" in caught.value.reason
    assert_nothing_written(meters)


def test_spring_day_around_the_gap_is_continuous_in_utc(meters):
    ingest(meters, ams_rows([(1, 45), (3, 0), (3, 15)], 31))
    window = (datetime(2024, 3, 30, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC))
    stamps = [p.timestamp for p in read_one(meters, "AMS", RT_15MIN_KWH, *window)]
    assert stamps == [
        datetime(2024, 3, 31, 0, 45, tzinfo=UTC),
        datetime(2024, 3, 31, 1, 0, tzinfo=UTC),
        datetime(2024, 3, 31, 1, 15, tzinfo=UTC),
    ]


def test_wall_time_with_explicit_utc_offset(meters):
    summer = timezone(timedelta(hours=2))
    row = RawValue(
        "AMS",
        OBIS_ENERGY,
        datetime(2024, 10, 27, 2, 15, tzinfo=summer),
        5,
        "Wh",
        interval_minutes=15,
    )
    ingest(meters, [row])
    assert autumn_series(meters) == [datetime(2024, 10, 27, 0, 15, tzinfo=UTC)]


def test_dst_flag_contradicting_the_zone_is_refused(meters):
    rows = ams_rows([(1, 45)], 27, dst=[False])  # 01:45 on that day is summer time
    with pytest.raises(MdmError) as caught:
        ingest(meters, rows)
    assert "contradicts" in caught.value.reason


# --- bad input ----------------------------------------------------------------------------


def refused(store: Store, rows: list[RawValue]) -> MdmError:
    with pytest.raises(MdmError) as caught:
        ingest(store, rows)
    assert_nothing_written(store)
    return caught.value


def test_unknown_device(meters):
    rows = interval_rows() + interval_rows("NOPE")
    error = refused(meters, rows)
    assert (error.error, error.row) == (ErrorCode.UNKNOWN_DEVICE, 4)
    assert "'NOPE'" in error.key


def test_unknown_reading_type(meters):
    rows = interval_rows()
    rows[2] = RawValue("M1", "0.0.96.1.0.255", rows[2].time, 1, "")
    error = refused(meters, rows)
    assert (error.error, error.row) == (ErrorCode.BAD_READING_TYPE, 2)


def test_unit_that_does_not_convert(meters):
    error = refused(meters, interval_rows(unit="varh"))
    assert (error.error, error.row) == (ErrorCode.BAD_READING_TYPE, 0)
    assert "cannot be converted" in error.reason


def test_explicit_reading_type_inconsistent_with_the_obis_code(meters):
    row = RawValue(
        "M1",
        OBIS_ENERGY,
        T0 + timedelta(minutes=15),
        1,
        "Wh",
        interval_minutes=15,
        reading_type="0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0",
    )  # export, not import
    error = refused(meters, [row])
    assert "does not match OBIS" in error.reason


def test_timestamp_off_the_interval_grid(meters):
    rows = interval_rows()
    rows[3] = RawValue(
        "M1", OBIS_ENERGY, rows[3].time + timedelta(minutes=1), 1, "Wh", interval_minutes=15
    )
    error = refused(meters, rows)
    assert (error.error, error.row) == (ErrorCode.BAD_DATETIME, 3)
    assert "grid" in error.reason


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"value": 2**63}, "64 bits"),
        ({"value": 1.5}, "not an integer"),
        ({"scaler": 300}, "scaler"),
        ({"status": -1}, "status"),
        ({"source_task": "x" * 65}, "source task"),
        ({"unit": "furlong"}, "unit"),
    ],
)
def test_values_that_do_not_fit(meters, change, problem):
    rows = interval_rows()
    fields = {
        "device": "M1",
        "source_id": OBIS_ENERGY,
        "time": rows[1].time,
        "value": 1,
        "unit": "Wh",
        "interval_minutes": 15,
        **change,
    }
    rows[1] = RawValue(**fields)
    error = refused(meters, rows)
    assert error.row == 1 and problem in error.reason


def test_value_with_more_decimals_than_the_store_keeps(meters):
    row = RawValue(
        "M1", OBIS_ENERGY, T0 + timedelta(minutes=15), 1, "Wh", scaler=-9, interval_minutes=15
    )
    error = refused(meters, [row])
    assert error.row == 0 and "decimals" in error.reason


def test_value_beyond_the_numeric_column(meters):
    row = RawValue(
        "M1", OBIS_ENERGY, T0 + timedelta(minutes=15), 10**18, "Wh", scaler=6, interval_minutes=15
    )
    error = refused(meters, [row])
    assert "integer digits" in error.reason


def test_duplicate_rows_in_a_batch_with_different_values(meters):
    rows = [*interval_rows(), interval_rows(values=[1, 1234, 1, 1])[1]]
    error = refused(meters, rows)
    assert error.row == 4 and "duplicate of row 1" in error.reason


def test_duplicate_rows_in_a_batch_with_the_same_value_are_stored_once(meters):
    rows = interval_rows()
    same = RawValue("M1", OBIS_ENERGY, rows[0].time, 1, "kWh", interval_minutes=15)
    result = ingest(meters, [*rows, rows[0], same])
    assert result.readings_new == 4
    assert result.raw_stored == 5  # the exact duplicate once, the kWh form as its own raw row
    assert count(meters, "raw_values") == 5


def test_a_batch_failing_half_way_in_the_database_leaves_nothing(meters):
    ingest(meters, interval_rows("M2"))  # an accepted batch, which must survive

    def fail_on_readings(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("INSERT INTO readings"):
            raise RuntimeError("injected failure after the raw values were written")

    event.listen(meters.engine, "before_cursor_execute", fail_on_readings)
    try:
        with pytest.raises(RuntimeError, match="injected"):
            ingest(meters, interval_rows("M1"))
    finally:
        event.remove(meters.engine, "before_cursor_execute", fail_on_readings)
    assert count(meters, "raw_values") == 4
    assert count(meters, "readings") == 4
    assert values_of(meters, "M1") == []
    assert len(values_of(meters, "M2")) == 4
    assert ingest(meters, interval_rows("M1")).readings_new == 4  # and it can be retried


def test_a_database_error_is_reported_as_a_storage_error(meters):
    ingest(meters, interval_rows("M1"))

    def break_insert(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("INSERT INTO raw_values"):
            cursor.execute("SELECT * FROM no_such_table_anywhere")

    event.listen(meters.engine, "before_cursor_execute", break_insert)
    try:
        with pytest.raises(MdmError) as caught:
            ingest(meters, interval_rows("M1", start=T0 + timedelta(hours=1)))
    finally:
        event.remove(meters.engine, "before_cursor_execute", break_insert)
    assert caught.value.error is ErrorCode.STORAGE
    assert count(meters, "readings") == 4


# --- the validation hook ------------------------------------------------------------------


def flag_above(limit: Decimal):
    def validator(series: Series) -> Series:
        points = [
            p.with_qualities(QUALITY_FAILED_VALIDATION) if p.value > limit else p
            for p in series.points
        ]
        return Series(series.key, points, series.interval)

    return validator


def estimate_failed(limit: Decimal):
    """Flags values above ``limit`` and estimates them as the mean of their neighbours; fills
    a missing interval inside the series too."""

    def validator(series: Series) -> Series:
        flagged = flag_above(limit)(series)
        out = list(flagged.points)
        by_ts = {p.timestamp: p for p in series.points}
        step = series.interval
        first, last = series.points[0].timestamp, series.points[-1].timestamp
        t = first
        while t <= last:
            p = by_ts.get(t)
            if p is None or p.value > limit:
                out.append(Point(t, Decimal("0.5"), frozenset({QUALITY_ESTIMATED})))
            t += step
        return Series(series.key, out, series.interval)

    return validator


def test_validator_qualities_are_stored(meters):
    ingest(meters, interval_rows(values=[1000, 9000, 1000, 1000]), validator=flag_above(Decimal(5)))
    series = read_one(meters, "M1", RT_15MIN_KWH, *DAY)
    assert [sorted(p.qualities) for p in series] == [[], [QUALITY_FAILED_VALIDATION], [], []]


def test_estimates_are_versions_and_never_overwrite_what_the_meter_sent(meters):
    rows = interval_rows(values=[1000, 9000, 1000, 1000, 1000])
    del rows[3]  # a gap
    result = ingest(meters, rows, validator=estimate_failed(Decimal(5)))
    assert result.estimates_stored == 2
    series = read_one(meters, "M1", RT_15MIN_KWH, *DAY)
    assert [p.value for p in series] == [1, Decimal("0.5"), 1, Decimal("0.5"), 1]
    assert QUALITY_ESTIMATED in series.points[1].qualities
    spike = versions(meters, "M1", RT_15MIN_KWH, rows[1].time)
    assert [(v.source, v.value) for v in spike] == [("meter", 9), ("estimated", Decimal("0.5"))]
    assert QUALITY_FAILED_VALIDATION in spike[0].qualities
    gap = versions(meters, "M1", RT_15MIN_KWH, T0 + timedelta(minutes=60))
    assert [(v.version, v.source) for v in gap] == [(1, "estimated")]

    again = ingest(meters, rows, validator=estimate_failed(Decimal(5)))
    assert (again.readings_new, again.readings_versioned, again.raw_stored) == (0, 0, 0)


def test_a_meter_value_for_an_estimated_gap_replaces_the_estimate(meters):
    rows = interval_rows(values=[1000, 1000, 1000])
    ingest(meters, [rows[0], rows[2]], validator=estimate_failed(Decimal(5)))
    result = ingest(meters, rows, validator=estimate_failed(Decimal(5)))
    assert result.readings_versioned == 1
    gap = versions(meters, "M1", RT_15MIN_KWH, rows[1].time)
    assert [v.source for v in gap] == ["estimated", "meter"]


def test_estimates_never_replace_an_edit(meters):
    rows = interval_rows(values=[1000, 9000])
    ingest(meters, rows, validator=estimate_failed(Decimal(5)))
    edited = Series(
        SeriesKey("M1", RT_15MIN_KWH), [Point(rows[1].time, Decimal(2), frozenset({"2.7.0"}))]
    )
    counts = store_points(meters, [edited], source="edited", who="operator", reason="fix")
    assert counts.versioned == 1
    result = ingest(meters, rows, validator=estimate_failed(Decimal(5)))
    assert (result.readings_new, result.readings_versioned) == (0, 0)
    assert [v.source for v in versions(meters, "M1", RT_15MIN_KWH, rows[1].time)] == [
        "meter",
        "estimated",
        "edited",
    ]


def test_a_validator_that_changes_a_value_is_refused(meters):
    def cheat(series: Series) -> Series:
        points = [Point(p.timestamp, p.value + 1, p.qualities) for p in series.points]
        return Series(series.key, points, series.interval)

    with pytest.raises(MdmError) as caught:
        ingest(meters, interval_rows(), validator=cheat)
    assert caught.value.error is ErrorCode.INTERNAL
    assert_nothing_written(meters)


def test_the_validator_sees_one_ordered_series_per_device_and_reading_type(meters):
    seen: list[Series] = []

    def spy(series: Series) -> Series:
        seen.append(series)
        return series

    ingest(meters, list(reversed(interval_rows("M1", 3) + interval_rows("M2", 2))), validator=spy)
    assert sorted((s.key.device, len(s)) for s in seen) == [("M1", 3), ("M2", 2)]
    for s in seen:
        assert s.key.reading_type == RT_15MIN_KWH
        assert s.interval == timedelta(minutes=15)
        assert [p.timestamp for p in s] == sorted(p.timestamp for p in s)
