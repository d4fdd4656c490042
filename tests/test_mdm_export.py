"""Exports from a store (SQLite, PostgreSQL): CIM MeterReadings parse back to the stored
values; CSV and JSON carry exact decimals."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from mdm_conftest import DATABASES, open_test_store
from sqlalchemy import select

from cim.meter_readings import value_text
from cim.meter_readings_stream import iter_meter_readings
from cim.validation import validate_bytes
from mdm.database import Store
from mdm.devices import Device, create_devices
from mdm.export import export_cim, export_csv, export_json
from mdm.ingest import ingest, store_points
from mdm.normalise import RawValue
from mdm.readings import read, window_query
from mdm.schema import devices, reading_types
from mdm.series import Point, Series, SeriesKey

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QH = timedelta(minutes=15)
INTERVAL = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
REGISTER = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
WINDOW = (T0, T0 + timedelta(hours=2))
INGESTED = T0 + timedelta(hours=3)
ODD = 'meter "7", ä\\b'  # JSON and CSV must quote and escape it
ESTIMATED = T0 + timedelta(hours=4)


@pytest.fixture(scope="module", params=DATABASES)
def store(request):
    for db in open_test_store(request.param, request):
        yield _populated(db)


def _populated(db: Store) -> Store:
    create_devices(db, [Device("m1"), Device("m2"), Device(ODD)], who="test")
    rows = [
        RawValue(
            device, "1-0:1.8.0", T0 + QH * (k + 1), 1000 * k + 7 * n, "Wh", interval_minutes=15
        )
        for n, device in enumerate(["m1", "m2"])
        for k in range(8)
        if not (device == "m2" and k == 5)
    ]
    rows += [
        RawValue(d, "1-0:1.8.0", T0 + timedelta(hours=1), 123456789, "Wh", scaler=-1)
        for d in ("m1", "m2")
    ]
    rows.append(RawValue(ODD, "1-0:1.8.0", T0 + QH, 5, "Wh", interval_minutes=15))
    ingest(db, rows, who="test", received_at=INGESTED)
    estimate = Point(T0 + QH * 6, D("5.125"), frozenset({"2.8.0"}))
    nulled = Point(T0 + QH * 3, None, frozenset({"2.8.0", "2.5.259"}))
    store_points(
        db,
        [Series(SeriesKey("m2", INTERVAL), [nulled, estimate], QH)],
        source="estimated",
        who="vee",
        reason="test",
        at=ESTIMATED,
    )
    assert {s.key.reading_type for s in read(db, ["m1"], [INTERVAL, REGISTER], *WINDOW)} == {
        INTERVAL,
        REGISTER,
    }
    return db


def stored(store):
    return {
        (s.key.device, s.key.reading_type, p.timestamp): (p.value, p.qualities)
        for s in read(store, ["m1", "m2"], [INTERVAL, REGISTER], *WINDOW)
        for p in s.points
    }


def test_cim_export_parses_back_to_the_stored_values(store):
    out = io.BytesIO()
    count = export_cim(store, out, ["m1", "m2"], [INTERVAL, REGISTER], *WINDOW)
    expected = stored(store)
    assert count == len(expected) == 8 + 8 + 1 + 1  # m2: 7 sent, 1 gap estimated
    assert validate_bytes(out.getvalue()) == []
    out.seek(0)
    got = {}
    for mr in iter_meter_readings(out):
        for block in mr.interval_blocks:
            for r in block.readings:
                got[(mr.meter_key, block.reading_type, r.timestamp)] = (
                    r.value,
                    frozenset(q.quality_type for q in r.qualities),
                )
        for r in mr.readings:
            got[(mr.meter_key, r.reading_type, r.timestamp)] = (
                r.value,
                frozenset(q.quality_type for q in r.qualities),
            )
    assert got == expected
    assert got[("m2", INTERVAL, T0 + QH * 3)] == (None, {"2.8.0", "2.5.259"})
    assert got[("m1", REGISTER, T0 + timedelta(hours=1))][0] == D("12345.6789")


def test_cim_export_inside_an_event_message(store):
    out = io.BytesIO()
    export_cim(store, out, ["m1"], [INTERVAL], *WINDOW, message_id="abc", source="OpenHES")
    text = out.getvalue()
    assert b"<EventMessage" in text and b"<MessageID>abc</MessageID>" in text
    assert validate_bytes(text) == []


def test_csv_export_is_exact(store):
    out = io.StringIO(newline="")
    count = export_csv(store, out, ["m1", "m2"], [INTERVAL], *WINDOW)
    out.seek(0)
    rows = list(csv.DictReader(out))
    assert count == len(rows) == 8 + 8
    first = rows[0]
    assert first == {
        "device": "m1",
        "reading_type": INTERVAL,
        "timestamp": "2026-01-01T00:15:00Z",
        "value": "0.000000000",
        "qualities": "",
        "status": "0",
    }
    values = {(r["device"], r["timestamp"]): r for r in rows}
    assert D(values[("m2", "2026-01-01T01:30:00Z")]["value"]) == D("5.125")
    assert values[("m2", "2026-01-01T01:30:00Z")]["qualities"] == "2.8.0"
    assert values[("m2", "2026-01-01T00:45:00Z")]["value"] == ""
    assert D(values[("m1", "2026-01-01T02:00:00Z")]["value"]) == D("7.000")


@pytest.mark.parametrize("lines", [True, False])
def test_json_export_lines_and_array(store, lines):
    out = io.StringIO()
    count = export_json(store, out, ["m2"], [INTERVAL], *WINDOW, lines=lines)
    text = out.getvalue()
    items = [json.loads(line) for line in text.splitlines()] if lines else json.loads(text)
    assert count == len(items) == 8
    by_time = {i["timestamp"]: i for i in items}
    assert by_time["2026-01-01T00:30:00Z"]["value"] == "1.007000000"
    assert by_time["2026-01-01T00:45:00Z"]["value"] is None
    assert by_time["2026-01-01T00:45:00Z"]["qualities"] == ["2.5.259", "2.8.0"]


def test_empty_exports(store):
    out = io.StringIO()
    assert export_json(store, out, ["m1"], [INTERVAL], T0, T0, lines=False) == 0
    assert json.loads(out.getvalue()) == []
    raw = io.BytesIO()
    assert export_cim(store, raw, ["m1"], [INTERVAL], T0, T0) == 0
    assert validate_bytes(raw.getvalue()) == []


def test_as_of_export_shows_the_meter_value_before_the_estimate(store):
    def values(as_of):
        out = io.StringIO()
        export_json(store, out, ["m2"], [INTERVAL], *WINDOW, as_of=as_of)
        return {i["timestamp"]: i["value"] for i in map(json.loads, out.getvalue().splitlines())}

    before = values(INGESTED + timedelta(minutes=30))
    after = values(ESTIMATED + timedelta(minutes=30))
    assert len(before) == 7 and len(after) == 8
    assert before["2026-01-01T00:45:00Z"] == "2.007000000"
    assert after["2026-01-01T00:45:00Z"] is None
    assert values(T0) == {}


def test_awkward_device_ids_are_quoted(store):
    text = io.StringIO()
    export_json(store, text, [ODD], [INTERVAL], *WINDOW)
    (item,) = map(json.loads, text.getvalue().splitlines())
    assert item["device"] == ODD and item["value"] == "0.005000000"
    table = io.StringIO(newline="")
    export_csv(store, table, [ODD], [INTERVAL], *WINDOW)
    table.seek(0)
    assert [row["device"] for row in csv.DictReader(table)] == [ODD]
    raw = io.BytesIO()
    export_cim(store, raw, [ODD], [INTERVAL], *WINDOW)
    raw.seek(0)
    assert [mr.meter_key for mr in iter_meter_readings(raw)] == [ODD]


def test_cim_export_writes_each_value_as_the_typed_read_does(store):
    """The bulk path converts driver values itself (cached per distinct value): the text of
    every value equals that of the value read through the column types, scale included."""
    out = io.BytesIO()
    export_cim(store, out, ["m1", "m2"], [INTERVAL, REGISTER], *WINDOW)
    text = out.getvalue().decode()
    written = sorted(re.findall(r"<value>([^<]*)</value>", text))
    typed = sorted(value_text(v) for v, _ in stored(store).values() if v is not None)
    assert written == typed


@pytest.mark.parametrize("kind", DATABASES)
def test_cim_export_keeps_the_scale_of_equal_values(kind, request):
    for db in open_test_store(kind, request):
        create_devices(db, [Device("s1"), Device("s2")], who="test")
        values = {"s1": [D("1.5"), D("0.000000100")], "s2": [D("1.500"), D("0.0000001")]}
        for device, (first, second) in values.items():
            points = [Point(T0 + QH, first), Point(T0 + 2 * QH, second)]
            store_points(
                db,
                [Series(SeriesKey(device, INTERVAL), points, QH)],
                source="estimated",
                who="test",
                reason="test",
            )
        out = io.BytesIO()
        assert export_cim(db, out, ["s1", "s2"], [INTERVAL], *WINDOW) == 4
        written = re.findall(r"<value>([^<]*)</value>", out.getvalue().decode())
        typed = [
            value_text(p.value)
            for s in read(db, ["s1", "s2"], [INTERVAL], *WINDOW)
            for p in s.points
        ]
        assert written == typed


@pytest.mark.parametrize("as_of", [None, ESTIMATED + timedelta(minutes=30)])
def test_untyped_window_query_gives_the_driver_values(store, as_of):
    with store.connect() as conn:
        ids = [
            conn.execute(select(devices.c.id).where(devices.c.mrid == m)).scalar_one()
            for m in ("m1", "m2")
        ]
        rt = [conn.execute(select(reading_types.c.id)).scalars().all()]
        typed = conn.execute(window_query(ids, rt[0], *WINDOW, as_of)).all()
        raw = conn.execute(window_query(ids, rt[0], *WINDOW, as_of, untyped=True)).all()
    assert len(raw) == len(typed) > 0
    assert [r[:2] + r[4:] for r in raw] == [t[:2] + t[4:] for t in typed]
    if store.engine.dialect.name == "sqlite":
        assert all(type(r.ts) is str for r in raw)
        assert {type(r.value) for r in raw} <= {str, type(None)}


def test_untyped_rows_of_other_databases_go_through_the_column_types():
    from sqlalchemy.dialects import oracle

    from mdm.export import _Counter

    counter = _Counter(oracle.dialect())
    naive = T0.replace(tzinfo=None)
    batch = [
        (1, 2, naive + QH, D("1.5"), None, 0),
        (1, 2, naive + 2 * QH, None, "2.8.0,2.5.259", 0),
    ]
    items = list(counter.items([batch]))
    assert items == [
        ((1, 2), (T0 + QH, D("1.5"))),
        ((1, 2), (T0 + 2 * QH, None, ["2.5.259", "2.8.0"])),
    ]
    assert str(items[0][1][1]) == "1.500000000" and items[0][1][0].tzinfo is UTC
    assert counter.count == 2
