"""KPIs on crafted stores (SQLite, PostgreSQL): read success per day and device, silent
devices; the statements compile for Oracle too."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal as D

import pytest
from mdm_conftest import DATABASES, open_test_store
from sqlalchemy.dialects import oracle, postgresql, sqlite

from mdm.database import Store
from mdm.devices import Device, create_devices
from mdm.ingest import ingest, store_points
from mdm.kpi import (
    DaySuccess,
    SilentDevice,
    read_success,
    silent_devices,
    silent_query,
    success_query,
)
from mdm.normalise import RawValue
from mdm.series import Point, Series, SeriesKey

QH = timedelta(minutes=15)
INTERVAL = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
DAY1 = datetime(2026, 3, 28, tzinfo=UTC)  # a Saturday; Berlin springs forward on the 29th


def raw(device, ts, value=100):
    return RawValue(device, "1-0:1.8.0", ts, value, "Wh", interval_minutes=15)


@pytest.fixture(scope="module", params=DATABASES)
def store(request):
    for db in open_test_store(request.param, request):
        yield _populated(db)


def _populated(db: Store) -> Store:
    create_devices(
        db,
        [Device("a"), Device("b"), Device("d"), Device("off", status="inactive")],
        who="test",
    )
    day1 = [DAY1 + QH * (k + 1) for k in range(96)]
    rows = [raw("a", t) for t in day1]
    rows += [raw("a", DAY1 + timedelta(days=1) + QH * (k + 1)) for k in range(48)]
    rows += [raw("b", t) for k, t in enumerate(day1) if k % 16]  # 6 intervals missing
    rows += [raw("off", t) for t in day1]
    ingest(db, rows, who="test")
    # b: one meter value replaced by an estimate (still delivered), two gaps filled (not).
    estimates = [
        Point(day1[1], D(1), frozenset({"2.8.0"})),
        Point(day1[0], D(1), frozenset({"2.8.0"})),
        Point(day1[16], D(1), frozenset({"2.8.0"})),
    ]
    store_points(
        db,
        [Series(SeriesKey("b", INTERVAL), estimates, QH)],
        source="estimated",
        who="vee",
        reason="test",
    )
    return db


def test_read_success_per_device_and_overall(store):
    result = read_success(store, INTERVAL, DAY1.date(), DAY1.date() + timedelta(days=1))
    by_key = {(s.device, s.day): s for s in result.per_device}
    d1, d2 = DAY1.date(), DAY1.date() + timedelta(days=1)
    assert by_key[("a", d1)] == DaySuccess(d1, "a", 96, 96)
    assert by_key[("a", d2)].present == 48 and by_key[("a", d2)].rate == 0.5
    assert by_key[("b", d1)].present == 90
    assert by_key[("d", d1)].present == 0 and by_key[("d", d1)].expected == 96
    assert ("off", d1) not in by_key  # inactive devices are not expected to report
    assert [s.device for s in result.per_device] == ["a", "a", "b", "b", "d", "d"]
    assert result.overall == [
        DaySuccess(d1, None, 96 + 90, 3 * 96),
        DaySuccess(d2, None, 48, 3 * 96),
    ]
    fleet = read_success(store, INTERVAL, d1, d2, per_device=False)
    assert fleet.per_device == [] and fleet.overall == result.overall


def test_read_success_in_local_days_across_dst(store):
    result = read_success(
        store, INTERVAL, date(2026, 3, 29), date(2026, 3, 29), zone="Europe/Berlin", devices=["a"]
    )
    (only,) = result.per_device
    # The local day 2026-03-29 is 23 hours long: 92 quarter-hours, from 2026-03-28T23:00Z.
    # "a" sent 2026-03-28T23:15Z ... 2026-03-29T12:00Z: 4 + 48 intervals.
    assert only.expected == 92 and only.present == 52


def test_read_success_for_an_unseen_reading_type(store):
    unseen = "0.0.2.4.19.1.12.0.0.0.0.0.0.0.0.3.72.0"
    result = read_success(store, unseen, DAY1.date(), DAY1.date())
    assert [s.present for s in result.overall] == [0]
    with pytest.raises(ValueError, match="not interval data"):
        read_success(store, "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0", DAY1.date(), DAY1.date())


def test_silent_devices(store):
    now = DAY1 + timedelta(days=3)
    assert silent_devices(store, 1, now=now) == [
        SilentDevice("a", DAY1 + timedelta(days=1, hours=12)),
        SilentDevice("b", DAY1 + timedelta(days=1)),
        SilentDevice("d", None),
    ]
    assert silent_devices(store, 2, now=now) == [
        SilentDevice("b", DAY1 + timedelta(days=1)),
        SilentDevice("d", None),
    ]
    assert [s.device for s in silent_devices(store, 2, now=now, statuses=["inactive"])] == ["off"]
    by_type = silent_devices(store, 2, now=now, reading_type=INTERVAL)
    assert [s.device for s in by_type] == ["b", "d"]
    unseen = silent_devices(store, 2, now=now, reading_type="0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0")
    assert [s.device for s in unseen] == ["a", "b", "d"]


@pytest.mark.parametrize("dialect", [oracle.dialect(), postgresql.dialect(), sqlite.dialect()])
def test_kpi_statements_compile_for_every_dialect(dialect):
    bounds = [DAY1 + timedelta(days=k) for k in range(3)]
    success = str(success_query([1, 2], 7, bounds).compile(dialect=dialect))
    assert "CASE WHEN" in success and "EXISTS" in success
    silent = str(silent_query(DAY1, 7, ["active"]).compile(dialect=dialect))
    assert "max(" in silent.lower()
