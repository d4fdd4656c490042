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
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import groupby
from operator import itemgetter
from typing import IO, Any, BinaryIO, TextIO

from sqlalchemy import Connection, Dialect

from cim.errors import ErrorCode
from cim.meter_readings import MeterReading, Reading, ReadingQuality
from cim.meter_readings_stream import MeterReadingsWriter
from cim.model import ObjectRef
from mdm.database import Store, reading
from mdm.devices import device_ids
from mdm.errors import MdmError
from mdm.reading_types import lookup_reading_types
from mdm.readings import interval_lengths, window_query
from mdm.schema import readings

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
    with MeterReadingsWriter(out, envelope, **header) as writer, reading(db) as conn:
        batches, mrid_of, code_of, intervals = _window_rows(
            conn, devices, reading_types, start, end, as_of, fetch_size, untyped=True
        )
        counter = _Counter(conn.dialect)
        for (device_id, rt_id), group in groupby(counter.items(batches), key=_FIRST):
            code = code_of[rt_id]
            items = map(_SECOND, group)
            if intervals.get(rt_id) is None:
                for chunk in _chunks(items, _REGISTER_CHUNK):
                    writer.write(_register_reading(mrid_of[device_id], code, chunk))
                continue
            meter = ObjectRef(mrid=mrid_of[device_id])
            writer.write_interval_block(meter, code, items)
    return counter.count


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)
_REGISTER_CHUNK = 10_000


def _window_rows(
    conn: Connection,
    devices: Sequence[str],
    reading_types: Sequence[str],
    start: datetime,
    end: datetime,
    as_of: datetime | None,
    fetch_size: int,
    *,
    untyped: bool = False,
) -> tuple[Iterator[Any], dict[int, str], dict[int, str], dict[int, timedelta | None]]:
    """The rows of :func:`mdm.readings.window_query` for every chunk of devices, streamed:
    ``(device id, ReadingType id, ts, value, qualities text, status)``; ``untyped``: lists
    of such rows (one per fetch), ts and value as the driver returns them (see
    :class:`_Counter`)."""
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
            query = window_query(chunk, rt_list, start, end, as_of, untyped=untyped)
            if untyped:
                yield from streaming.execute(query).partitions()
            else:
                yield from streaming.execute(query)

    return rows(), mrid_of, code_of, intervals


_DEVICE_CHUNK = 500


class _Converted(dict[Any, Any]):
    """Driver value -> the column type's result value, computed once per distinct value
    (timestamps and values repeat across devices); bounded."""

    def __init__(self, process: Callable[[Any], Any] | None) -> None:
        super().__init__()
        self.process = process or (lambda value: value)

    def __missing__(self, raw: Any) -> Any:
        if len(self) >= _CACHE_LIMIT:
            self.clear()
        value = self[raw] = self.process(raw)
        return value


_CACHE_LIMIT = 100_000


def _result_processor(column: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    return column.type.dialect_impl(dialect).result_processor(dialect, None)  # type: ignore[no-any-return]


class _Counter:
    """Counts the readings of untyped row batches, converting driver values exactly as the
    column types would: timestamps through a cache keyed by the driver's value; values
    through a cache keyed by the stored text on SQLite (a TEXT column there), as they are on
    PostgreSQL (NUMERIC comes as a Decimal, which ExactDecimal returns unchanged), else
    through the type's processor. A Decimal is never a cache key: equal Decimals of
    different scales would share an entry."""

    __slots__ = ("count", "mode", "process_value", "ts_of", "value_of")

    def __init__(self, dialect: Dialect) -> None:
        self.count = 0
        self.ts_of = _Converted(_result_processor(readings.c.ts, dialect))
        self.mode = dialect.name if dialect.name in ("postgresql", "sqlite") else ""
        self.process_value = None
        self.value_of = _Converted(None)
        if self.mode != "postgresql":
            self.process_value = _result_processor(readings.c.value, dialect)
            self.value_of = _Converted(self.process_value)
            self.value_of[None] = None

    def items(self, batches: Iterable[list[Any]]) -> Iterator[tuple[tuple[int, int], tuple]]:
        """``((device id, ReadingType id), item)``, item ``(ts, value)`` or, with quality
        codes, ``(ts, value, sorted codes)``: what write_interval_block takes."""
        ts_of = self.ts_of
        value_of = self.value_of
        process = self.process_value
        mode = self.mode
        for batch in batches:
            self.count += len(batch)
            for d, r, ts, v, q, _ in batch:
                if mode == "postgresql":
                    pass
                elif mode == "sqlite":
                    v = value_of[v]
                elif v is not None:
                    assert process is not None
                    v = process(v)
                if q:
                    yield (d, r), (ts_of[ts], v, sorted(q.split(",")))
                else:
                    yield (d, r), (ts_of[ts], v)


def _chunks(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _register_reading(device: str, code: str, items: list[tuple]) -> MeterReading:
    return MeterReading(
        meter=ObjectRef(mrid=device),
        readings=[
            Reading(
                code,
                value=item[1],
                timestamp=item[0],
                qualities=[ReadingQuality(q) for q in item[2]] if len(item) > 2 else [],
            )
            for item in items
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
