"""Queries on every database: devices x ReadingTypes x window, ordered, streamed, bounded."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from mdm_samples import RT_15MIN_KWH, RT_REGISTER_KWH, T0, interval_rows

from cim.errors import ErrorCode
from mdm.devices import Device, create_devices
from mdm.errors import MdmError
from mdm.ingest import ingest
from mdm.normalise import RawValue
from mdm.readings import read, read_one

pytest_plugins = ["mdm_conftest"]

DAY = (T0, T0 + timedelta(days=1))


@pytest.fixture
def loaded(meters):
    ingest(meters, interval_rows("M2", 96) + interval_rows("M1", 96))
    ingest(meters, [RawValue("M1", "1-0:1.8.0", T0 + timedelta(hours=6), 5_000_000, "Wh")])
    return meters


def test_series_are_ordered_by_device_reading_type_and_time(loaded):
    series = list(read(loaded, ["M2", "M1"], [RT_REGISTER_KWH, RT_15MIN_KWH], *DAY))
    assert [(s.key.device, s.key.reading_type, len(s)) for s in series] == [
        ("M1", RT_15MIN_KWH, 96),
        ("M1", RT_REGISTER_KWH, 1),
        ("M2", RT_15MIN_KWH, 96),
    ]
    for s in series:
        stamps = [p.timestamp for p in s]
        assert stamps == sorted(stamps)
    assert series[0].interval == timedelta(minutes=15)
    assert series[1].interval is None
    assert series[1].points[0].value == Decimal(5000)


def test_the_window_is_start_exclusive_end_inclusive(loaded):
    s = read_one(loaded, "M1", RT_15MIN_KWH, T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    assert [p.timestamp for p in s] == [
        T0 + timedelta(hours=1, minutes=15 * k) for k in (1, 2, 3, 4)
    ]


def test_long_runs_come_in_bounded_pieces(loaded):
    pieces = list(read(loaded, ["M1"], [RT_15MIN_KWH], *DAY, max_points=40, fetch_size=7))
    assert [len(s) for s in pieces] == [40, 40, 16]
    assert {s.key.device for s in pieces} == {"M1"}
    stamps = [p.timestamp for s in pieces for p in s]
    assert stamps == sorted(stamps) and len(set(stamps)) == 96


def test_many_devices_are_read_in_chunks(store):
    create_devices(store, [Device(f"D{i:04d}") for i in range(1203)], who="t")
    rows = [r for i in range(1203) for r in interval_rows(f"D{i:04d}", 2)]
    ingest(store, rows)
    series = list(read(store, [f"D{i:04d}" for i in range(1203)], [RT_15MIN_KWH], *DAY))
    assert len(series) == 1203 and all(len(s) == 2 for s in series)


def test_unknown_devices_are_refused_and_unknown_reading_types_are_empty(loaded):
    with pytest.raises(MdmError) as caught:
        list(read(loaded, ["M1", "GHOST"], [RT_15MIN_KWH], *DAY))
    assert caught.value.error is ErrorCode.UNKNOWN_DEVICE
    assert list(read(loaded, ["M1"], ["0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"], *DAY)) == []
    assert len(read_one(loaded, "M2", RT_REGISTER_KWH, *DAY)) == 0


def test_naive_or_reversed_windows_are_refused(loaded):
    with pytest.raises(MdmError):
        read_one(loaded, "M1", RT_15MIN_KWH, T0.replace(tzinfo=None), DAY[1])
    with pytest.raises(MdmError):
        read_one(loaded, "M1", RT_15MIN_KWH, DAY[1], DAY[0])
