"""The CIM exports written straight from database rows (mdm.export.export_cim, the bulk path,
and meter_readings_xml, the request path of GetMeterReadings) are byte for byte the document
MeterReadingsWriter writes from the typed read (mdm.readings.read), for every shape of data:
intervals, registers, qualities, values cleared, several devices and ReadingTypes, awkward
names, long register runs, an envelope, as_of."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from mdm_conftest import DATABASES, open_test_store

from cim.meter_readings import MeterReading, Reading, ReadingQuality
from cim.meter_readings_stream import MeterReadingsWriter
from cim.model import ObjectRef
from mdm import export as export_module
from mdm.database import Store
from mdm.devices import Device, create_devices
from mdm.errors import MdmError
from mdm.export import export_cim, meter_readings_xml
from mdm.ingest import ingest, store_points
from mdm.normalise import RawValue
from mdm.readings import IdCache, read
from mdm.series import Point, Series, SeriesKey

T0 = datetime(2026, 1, 1, tzinfo=UTC)
QH = timedelta(minutes=15)
INTERVAL = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
REGISTER = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
UNKNOWN = "0.0.0.1.4.1.12.0.0.0.0.0.0.0.0.3.72.0"  # a valid code the store never saw
WINDOW = (T0, T0 + timedelta(hours=2))
ODD = 'meter "7" <&> ä'


@pytest.fixture(scope="module", params=DATABASES)
def store(request):
    for db in open_test_store(request.param, request):
        create_devices(db, [Device("m1"), Device("m2"), Device(ODD), Device("empty")], who="t")
        rows = [
            RawValue(
                dev, "1-0:1.8.0", T0 + QH * (k + 1), 1000 * k + 7 * n, "Wh", interval_minutes=15
            )
            for n, dev in enumerate(["m1", "m2", ODD])
            for k in range(8)
            if not (dev == "m2" and k == 5)
        ]
        rows += [
            RawValue(d, "1-0:1.8.0", T0 + timedelta(minutes=m), 123456789 + m, "Wh", scaler=-1)
            for d in ("m1", ODD)
            for m in (20, 60)
        ]
        ingest(db, rows, who="test", received_at=T0 + timedelta(hours=3))
        estimate = Point(T0 + QH * 6, D("5.125"), frozenset({"2.8.0"}))
        nulled = Point(T0 + QH * 3, None, frozenset({"2.8.0", "2.5.259"}))
        tiny = Point(T0 + QH * 2, D("0.0000001"))
        store_points(
            db,
            [Series(SeriesKey("m2", INTERVAL), [tiny, nulled, estimate], QH)],
            source="estimated",
            who="vee",
            reason="test",
            at=T0 + timedelta(hours=4),
        )
        yield db


def reference(db, devices, codes, start=WINDOW[0], end=WINDOW[1], **options) -> bytes:
    """The document MeterReadingsWriter writes for the typed read of the window."""
    as_of = options.pop("as_of", None)
    out = io.BytesIO()
    with MeterReadingsWriter(out, options.pop("envelope", None), **options) as writer:
        for series in read(db, devices, codes, start, end, as_of=as_of, max_points=1 << 62):
            items = [
                (p.timestamp, p.value, sorted(p.qualities))
                if p.qualities
                else (p.timestamp, p.value)
                for p in series.points
            ]
            meter = ObjectRef(mrid=series.key.device)
            if series.interval is not None:
                writer.write_interval_block(meter, series.key.reading_type, items)
                continue
            for first in range(0, len(items), export_module._REGISTER_CHUNK):
                chunk = items[first : first + export_module._REGISTER_CHUNK]
                readings = [
                    Reading(
                        series.key.reading_type,
                        value=item[1],
                        timestamp=item[0],
                        qualities=[ReadingQuality(q) for q in item[2]] if len(item) > 2 else [],
                    )
                    for item in chunk
                ]
                writer.write(MeterReading(meter=meter, readings=readings))
    return out.getvalue()


@pytest.mark.parametrize(
    ("devices", "codes"),
    [
        (["m1", "m2", ODD], [INTERVAL, REGISTER]),
        (["m2"], [INTERVAL]),
        ([ODD, "m1"], [REGISTER, UNKNOWN]),
        (["empty"], [INTERVAL]),
        (["m1"], []),
    ],
)
def test_export_cim_writes_what_the_writer_writes(store, devices, codes):
    assert cim(store, devices, codes) == reference(store, devices, codes)


def test_export_cim_envelope_as_of_and_files(store, tmp_path):
    header = {"message_id": "abc", "source": "OpenHES", "verb": "created"}
    out = io.BytesIO()
    assert export_cim(store, out, ["m1", "m2"], [INTERVAL, REGISTER], *WINDOW, **header) == 18
    assert out.getvalue() == reference(store, ["m1", "m2"], [INTERVAL, REGISTER], **header)
    empty = io.BytesIO()
    export_cim(store, empty, ["empty"], [INTERVAL], *WINDOW, envelope={"message_id": "x"})
    assert empty.getvalue() == reference(store, ["empty"], [INTERVAL], envelope={"message_id": "x"})
    before = T0 + timedelta(hours=3, minutes=30)  # before the estimates of m2
    out = io.BytesIO()
    export_cim(store, out, ["m2"], [INTERVAL], *WINDOW, as_of=before)
    assert out.getvalue() == reference(store, ["m2"], [INTERVAL], as_of=before)
    assert out.getvalue() != cim(store, ["m2"], [INTERVAL])
    path = tmp_path / "export.xml"
    export_cim(store, path, ["m1"], [INTERVAL], *WINDOW, fetch_size=2)
    assert path.read_bytes() == reference(store, ["m1"], [INTERVAL])
    with pytest.raises(MdmError):
        export_cim(store, tmp_path / "bad.xml", ["nope"], [INTERVAL], *WINDOW)
    assert (tmp_path / "bad.xml").read_bytes() == b""


def test_export_cim_flushes_in_bounded_pieces(store, monkeypatch):
    monkeypatch.setattr(export_module, "_FLUSH_PARTS", 3)
    writes: list[bytes] = []

    class Sink:
        def write(self, data: bytes) -> int:
            writes.append(data)
            return len(data)

    export_cim(store, Sink(), ["m1", "m2", ODD], [INTERVAL, REGISTER], *WINDOW, fetch_size=4)
    assert len(writes) > 3
    assert b"".join(writes) == reference(store, ["m1", "m2", ODD], [INTERVAL, REGISTER])


def cim(db, devices, codes, start=WINDOW[0], end=WINDOW[1]) -> bytes:
    out = io.BytesIO()
    export_cim(db, out, devices, codes, start, end)
    return out.getvalue()


def stored_codes(db: Store, devices, start=WINDOW[0], end=WINDOW[1]) -> list[str]:
    codes = {s.key.reading_type for s in read(db, devices, [INTERVAL, REGISTER], start, end)}
    return sorted(codes)


@pytest.mark.parametrize(
    ("devices", "codes"),
    [
        (["m1"], [INTERVAL]),
        (["m1"], [REGISTER]),
        (["m2"], [INTERVAL]),  # an estimate, a cleared value with two qualities, 1E-7
        (["m1", "m2", ODD], [INTERVAL, REGISTER]),
        ([ODD, "m1"], [REGISTER, INTERVAL, UNKNOWN]),
        (["empty"], [INTERVAL]),
        (["m1"], [UNKNOWN]),
        (["m1"], []),
    ],
)
def test_same_document_as_export_cim(store, devices, codes):
    assert meter_readings_xml(store, devices, codes, *WINDOW) == cim(store, devices, codes)


@pytest.mark.parametrize("devices", [["m1"], ["m2"], ["m1", "m2", ODD, "empty"], ["empty"]])
def test_without_reading_types_every_stored_one(store, devices):
    expected = cim(store, devices, stored_codes(store, devices))
    assert meter_readings_xml(store, devices, None, *WINDOW) == expected
    # twice: from the caches now
    assert meter_readings_xml(store, devices, None, *WINDOW) == expected


def test_on_a_connection_with_fresh_caches_and_streamed(store):
    with store.connect() as conn:
        got = meter_readings_xml(conn, ["m1", "m2"], None, *WINDOW, fetch_size=3)
    assert got == cim(store, ["m1", "m2"], [INTERVAL, REGISTER])
    assert isinstance(store.ids, IdCache)


def test_long_register_runs_are_chunked_as_export_cim_does(store, monkeypatch):
    monkeypatch.setattr(export_module, "_REGISTER_CHUNK", 1)
    expected = cim(store, ["m1", ODD], [REGISTER, INTERVAL])
    assert expected == reference(store, ["m1", ODD], [REGISTER, INTERVAL])
    assert expected.count(b"<MeterReading>") == 2 * 2 + 2
    assert meter_readings_xml(store, ["m1", ODD], None, *WINDOW, fetch_size=1) == expected


def test_windows_and_unknown_devices(store):
    empty = meter_readings_xml(store, ["m1"], None, T0 - timedelta(days=1), T0)
    assert empty == cim(store, ["empty"], [INTERVAL])
    assert empty.endswith(b"/>")
    with pytest.raises(MdmError) as caught:
        meter_readings_xml(store, ["m1", "nope"], None, *WINDOW)
    assert caught.value.key == "nope"
    with pytest.raises(MdmError):
        meter_readings_xml(store, ["m1"], None, WINDOW[1], WINDOW[0])


def test_many_devices_in_chunks(store, monkeypatch):
    monkeypatch.setattr(export_module, "_DEVICE_CHUNK", 1)
    devices = ["m1", "m2", ODD]
    expected = cim(store, devices, [INTERVAL, REGISTER])
    assert meter_readings_xml(store, devices, None, *WINDOW) == expected
    assert meter_readings_xml(store, devices, [INTERVAL, REGISTER], *WINDOW) == expected
