"""Oracle, which cannot run here: every statement mdm issues compiles for the Oracle dialect,
and the portable statements of the Oracle path give the right results (run on SQLite)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from mdm_samples import OBIS_ENERGY, RT_15MIN_KWH, T0, count, interval_rows
from sqlalchemy import event
from sqlalchemy.dialects import oracle
from sqlalchemy.sql import ClauseElement

from mdm import bulk
from mdm.audit import entries
from mdm.database import Store, open_store
from mdm.devices import (
    Device,
    UsagePoint,
    add_name,
    add_to_group,
    create_devices,
    create_group,
    create_usage_point,
    find_device,
    group_members,
    names,
    remove_from_group,
    remove_name,
    update_device,
)
from mdm.history import as_of, restore, versions
from mdm.ingest import ingest, store_points
from mdm.normalise import RawValue
from mdm.reading_types import _insert_missing
from mdm.readings import read, read_one
from mdm.series import QUALITY_ESTIMATED, QUALITY_FAILED_VALIDATION, Point, Series, SeriesKey

DAY = (T0, T0 + timedelta(days=1))
ORACLE = oracle.dialect()


def validator(series: Series) -> Series:
    points = []
    for p in series.points:
        if p.value > 5:
            points.append(p.with_qualities(QUALITY_FAILED_VALIDATION))
            points.append(Point(p.timestamp, Decimal(1), frozenset({QUALITY_ESTIMATED})))
        else:
            points.append(p)
    return Series(series.key, points, series.interval)


@pytest.fixture
def portable(monkeypatch: pytest.MonkeyPatch) -> Store:
    """An in-memory SQLite store that writes through the Oracle path's statements."""
    monkeypatch.setattr(bulk, "PORTABLE_ON_SQLITE", True)
    store = open_store("sqlite://")
    create_devices(
        store, [Device("M1"), Device("M2"), Device("AMS", time_zone="Europe/Amsterdam")], who="test"
    )
    yield store
    store.close()


def exercise_everything(store: Store) -> None:
    """One pass over the public API of mdm's storage modules."""
    create_usage_point(store, UsagePoint("UP1"), who="a")
    create_devices(store, [Device("M3", usage_point="UP1")], who="a")
    update_device(store, "M1", who="a", usage_point="UP1", firmware_version="2")
    add_name(store, "M1", "serial", "S1", who="a")
    find_device(store, "S1", "serial")
    find_device(store, "M1")
    names(store, "M1")
    remove_name(store, "M1", "serial", "S1", who="a")
    create_group(store, "g", who="a")
    create_group(store, "g2", who="a", parent="g")
    add_to_group(store, "g", ["M1", "M2"], who="a")
    group_members(store, "g", recursive=True)
    remove_from_group(store, "g", ["M2"], who="a")
    rows = interval_rows(values=[1000, 9000, 1000])
    ingest(store, rows, validator=validator)
    ingest(store, interval_rows(values=[1000, 9000, 2000], task="t2"), validator=validator)
    ingest(
        store,
        [
            RawValue(
                "AMS",
                OBIS_ENERGY,
                datetime(2024, 10, 27, 2, 15),
                1,
                "Wh",
                interval_minutes=15,
                dst=True,
            )
        ],
    )
    ts = rows[2].time
    store_points(
        store,
        [Series(SeriesKey("M1", RT_15MIN_KWH), [Point(ts, Decimal(3))])],
        source="edited",
        who="ed",
        reason="fix",
    )
    restore(store, "M1", RT_15MIN_KWH, ts, 1, who="ed")
    versions(store, "M1", RT_15MIN_KWH, ts)
    list(read(store, ["M1", "M2"], [RT_15MIN_KWH], *DAY))
    list(as_of(store, ["M1"], [RT_15MIN_KWH], *DAY, datetime.now(UTC)))
    read_one(store, "M1", RT_15MIN_KWH, *DAY, as_of=datetime.now(UTC) - timedelta(hours=1))
    entries(store, object_type="device", object_id="M1", since=T0)


def test_every_statement_mdm_issues_compiles_for_oracle(portable):
    seen: list[ClauseElement] = []

    def capture(conn: Any, clause: Any, multiparams: Any, params: Any, options: Any) -> None:
        if isinstance(clause, ClauseElement):
            seen.append(clause)

    event.listen(portable.engine, "before_execute", capture)
    try:
        exercise_everything(portable)
    finally:
        event.remove(portable.engine, "before_execute", capture)

    compiled = []
    for clause in seen:
        if bulk.DIALECT_SPECIFIC in clause.get_execution_options():
            continue  # a SQLite or PostgreSQL statement; the Oracle path has its own
        compiled.append(str(clause.compile(dialect=ORACLE)))
    text = "\n".join(compiled)
    for table in (
        "raw_values",
        "readings",
        "reading_history",
        "audit_log",
        "devices",
        "device_names",
        "device_groups",
        "device_group_members",
        "usage_points",
    ):
        assert f"INSERT INTO {table}" in text, table
    assert "UPDATE readings SET" in text
    assert "DECODE(" in text  # null-safe comparisons the Oracle way
    assert "SELECT DISTINCT" in text  # the raw values' portable insert


def test_the_oracle_only_statements_compile():
    stamp = bulk.Stamp(datetime.now(UTC), "who", "why", "note")
    for source in ("meter", "estimated", "edited"):
        for statement in bulk.portable_statements(source, stamp):
            sql = str(statement.compile(dialect=ORACLE))
            assert ("ON CONFLICT" not in sql and "FROM mdm_stage_readings" in sql) or (
                sql.startswith("DELETE FROM mdm_stage_readings")
            )
    insert_sql = bulk.oracle_stage_insert_sql()
    assert insert_sql.startswith("INSERT INTO mdm_stage_readings (device_id,")
    assert insert_sql.count(":") == len(bulk.STAGE_FIELDS)
    assert len(bulk.oracle_input_sizes()) == len(bulk.STAGE_FIELDS)
    str(_insert_missing("oracle").compile(dialect=ORACLE))


def test_the_portable_path_is_idempotent_and_versions(portable):
    rows = interval_rows(values=[1000, 9000, 1000])
    first = ingest(portable, [*rows, rows[0]], validator=validator)
    assert (first.raw_stored, first.readings_new, first.readings_versioned) == (3, 3, 1)
    assert first.estimates_stored == 1
    again = ingest(portable, rows, validator=validator)
    assert (again.raw_stored, again.readings_new, again.readings_versioned) == (0, 0, 0)
    changed = ingest(portable, interval_rows(values=[1000, 9000, 2000]), validator=validator)
    assert (changed.raw_stored, changed.readings_versioned) == (1, 1)
    assert [p.value for p in read_one(portable, "M1", RT_15MIN_KWH, *DAY)] == [1, 1, 2]
    assert [v.source for v in versions(portable, "M1", RT_15MIN_KWH, rows[1].time)] == [
        "meter",
        "estimated",
    ]
    assert count(portable, "reading_history") == 2
