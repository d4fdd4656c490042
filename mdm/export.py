"""Exports of stored readings: devices x ReadingTypes x a window (start, end], as CIM
MeterReadings, CSV or JSON, streamed in bounded memory.

Rows come from the store's window query (:mod:`mdm.readings`: current values, or ``as_of`` a
past moment), streamed from the database cursor; memory holds one fetch batch, plus for
registers one chunk of at most 10,000 readings. Values are written exactly as stored
(fixed-point decimal text, never a float).

- **CIM**: one MeterReading per device and interval ReadingType, holding one IntervalBlock
  (through :class:`cim.meter_readings_stream.MeterReadingsWriter`, written as the rows
  come); register ReadingTypes become Readings, one MeterReading per device and ReadingType
  (per chunk). Quality codes become ReadingQualities.
- **CSV**: header ``device,reading_type,timestamp,value,qualities,status``; timestamps ISO
  8601 UTC with ``Z``; qualities space-separated, sorted; an empty value is a null.
- **JSON**: one object per reading, as JSON lines (default) or one array; the value is a
  string (a JSON number would be read as a float by most consumers), null for no value.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import groupby
from operator import itemgetter
from typing import IO, Any, BinaryIO, TextIO

from sqlalchemy import Connection

from cim.errors import ErrorCode
from cim.meter_readings import MeterReading, Reading, ReadingQuality
from cim.meter_readings_stream import MeterReadingsWriter
from cim.model import ObjectRef
from mdm.database import Store, reading
from mdm.devices import device_ids
from mdm.errors import MdmError
from mdm.reading_types import lookup_reading_types
from mdm.readings import interval_lengths, window_query

CSV_HEADER = ("device", "reading_type", "timestamp", "value", "qualities", "status")


def export_cim(
    db: Store | Connection,
    out: BinaryIO | IO[bytes] | str | os.PathLike[str],
    devices: Sequence[str],
    reading_types: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    as_of: datetime | None = None,
    envelope: Any = None,
    fetch_size: int = 10_000,
    **header: Any,
) -> int:
    """Write a MeterReadings document (inside an EventMessage when ``envelope`` or header
    fields are given, see MeterReadingsWriter); returns the number of readings written.

    Interval rows go from the database cursor to the writer as tuples, without building
    Points: this is the bulk path (GetMeterReadings replies, scheduled exports).
    """
    counter = _Counter()
    with MeterReadingsWriter(out, envelope, **header) as writer, reading(db) as conn:
        rows, mrid_of, code_of, intervals = _window_rows(
            conn, devices, reading_types, start, end, as_of, fetch_size
        )
        for (device_id, rt_id), group in groupby(rows, key=_KEY):
            code = code_of[rt_id]
            if intervals.get(rt_id) is None:
                for chunk in _chunks(group, _REGISTER_CHUNK):
                    writer.write(_register_reading(mrid_of[device_id], code, chunk))
                    counter.count += len(chunk)
                continue
            meter = ObjectRef(mrid=mrid_of[device_id])
            writer.write_interval_block(meter, code, counter.items(group))
    return counter.count


_KEY = itemgetter(0, 1)
_REGISTER_CHUNK = 10_000


def _window_rows(
    conn: Connection,
    devices: Sequence[str],
    reading_types: Sequence[str],
    start: datetime,
    end: datetime,
    as_of: datetime | None,
    fetch_size: int,
) -> tuple[Iterator[Any], dict[int, str], dict[int, str], dict[int, timedelta | None]]:
    """The rows of :func:`mdm.readings.window_query` for every chunk of devices, streamed:
    ``(device id, ReadingType id, ts, value, qualities text, status)``."""
    if end < start:
        raise MdmError(ErrorCode.BAD_DATETIME, "window end is before its start")
    ids = device_ids(conn, devices)
    for mrid in devices:
        if mrid not in ids:
            raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no device {mrid!r}", key=mrid)
    rt_ids = lookup_reading_types(conn, reading_types)
    mrid_of = {id_: mrid for mrid, (id_, _) in ids.items()}
    code_of = {id_: code for code, id_ in rt_ids.items()}
    intervals = interval_lengths(conn, code_of) if code_of else {}
    streaming = conn.execution_options(yield_per=fetch_size)
    device_list, rt_list = sorted(mrid_of), sorted(code_of)

    def rows() -> Iterator[Any]:
        if not rt_list:
            return
        for first in range(0, len(device_list), _DEVICE_CHUNK):
            chunk = device_list[first : first + _DEVICE_CHUNK]
            yield from streaming.execute(window_query(chunk, rt_list, start, end, as_of))

    return rows(), mrid_of, code_of, intervals


_DEVICE_CHUNK = 500


class _Counter:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def items(self, rows: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
        count = 0
        for _, _, ts, value, qualities, _ in rows:
            count += 1
            if qualities:
                yield (ts, value, sorted(qualities.split(",")))
            else:
                yield (ts, value)
        self.count += count


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _register_reading(device: str, code: str, rows: list[Any]) -> MeterReading:
    return MeterReading(
        meter=ObjectRef(mrid=device),
        readings=[
            Reading(
                code,
                value=value,
                timestamp=ts,
                qualities=[ReadingQuality(q) for q in sorted(qualities.split(","))]
                if qualities
                else [],
            )
            for _, _, ts, value, qualities, _ in rows
        ],
    )


def iter_rows(
    db: Store | Connection,
    devices: Sequence[str],
    reading_types: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    as_of: datetime | None = None,
    fetch_size: int = 10_000,
) -> Iterator[tuple[str, str, str, str, str, int]]:
    """``(device, reading_type, timestamp, value, qualities, status)`` as text (value ""
    for none, qualities space-separated and sorted), ordered by device, ReadingType, time."""
    with reading(db) as conn:
        rows, mrid_of, code_of, _ = _window_rows(
            conn, devices, reading_types, start, end, as_of, fetch_size
        )
        spaced: dict[str | None, str] = {None: ""}
        for device_id, rt_id, ts, value, qualities, status in rows:
            text = spaced.get(qualities)
            if text is None:
                text = spaced[qualities] = " ".join(sorted(qualities.split(",")))
            yield (
                mrid_of[device_id],
                code_of[rt_id],
                timestamp_text(ts),
                "" if value is None else decimal_text(value),
                text,
                status,
            )


def export_csv(
    db: Store | Connection,
    out: TextIO,
    devices: Sequence[str],
    reading_types: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    as_of: datetime | None = None,
) -> int:
    """CSV with a header line; ``out`` is a text file opened with ``newline=""``."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    count = 0
    for row in iter_rows(db, devices, reading_types, start, end, as_of=as_of):
        writer.writerow(row)
        count += 1
    return count


def export_json(
    db: Store | Connection,
    out: TextIO,
    devices: Sequence[str],
    reading_types: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    as_of: datetime | None = None,
    lines: bool = True,
) -> int:
    """JSON lines (one object per line), or with ``lines=False`` one JSON array."""
    count = 0
    quoted: dict[str, str] = {}
    listed: dict[str, str] = {"": "[]"}

    def q(text: str) -> str:
        found = quoted.get(text)
        if found is None:
            found = quoted[text] = json.dumps(text, ensure_ascii=False)
        return found

    if not lines:
        out.write("[")
    separator = "\n" if lines else ",\n"
    for device, code, ts, value, qualities, status in iter_rows(
        db, devices, reading_types, start, end, as_of=as_of
    ):
        codes = listed.get(qualities)
        if codes is None:
            codes = listed[qualities] = json.dumps(qualities.split(" "))
        number = f'"{value}"' if value else "null"
        item = (
            f'{{"device":{q(device)},"reading_type":{q(code)},"timestamp":"{ts}",'
            f'"value":{number},"qualities":{codes},"status":{status}}}'
        )
        if lines:
            out.write(item + separator)
        else:
            out.write(("\n" if not count else separator) + item)
        count += 1
    if not lines:
        out.write("\n]\n" if count else "]\n")
    return count


def timestamp_text(moment: datetime) -> str:
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def decimal_text(value: Decimal) -> str:
    """Fixed-point text of an exact decimal (no exponent), as stored."""
    return format(value, "f")
