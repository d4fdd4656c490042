"""Exports of stored readings: devices x ReadingTypes x a window (start, end], as CIM
MeterReadings, CSV or JSON, streamed in bounded memory.

Rows come from the store's window query (:mod:`mdm.readings`: current values, or ``as_of`` a
past moment), streamed from the database cursor; memory holds one fetch batch, plus for
registers one chunk of at most 10,000 readings. Values are written exactly as stored
(fixed-point decimal text, never a float).

- **CIM**: one MeterReading per device and interval ReadingType, holding one IntervalBlock;
  register ReadingTypes become Readings, one MeterReading per device and ReadingType (per
  chunk). Quality codes become ReadingQualities. The document is byte for byte what
  :class:`cim.meter_readings_stream.MeterReadingsWriter` writes (which writes its frame, the
  registers and the quality codes), interval readings written as text straight from the
  driver's values as the rows come (:func:`export_cim`, bulk; :func:`meter_readings_xml`,
  one request's answer).
- **CSV**: header ``device,reading_type,timestamp,value,qualities,status``; timestamps ISO
  8601 UTC with ``Z``; qualities space-separated, sorted; an empty value is a null.
- **JSON**: one object per reading, as JSON lines (default) or one array; the value is a
  string (a JSON number would be read as a float by most consumers), null for no value.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import IO, Any, BinaryIO, TextIO

from sqlalchemy import Connection, Dialect, bindparam, select, type_coerce
from sqlalchemy.types import NullType

from cim.datetimes import format_datetime
from cim.errors import ErrorCode
from cim.meter_readings import MeterReading, Reading, ReadingQuality, value_text
from cim.meter_readings_stream import MeterReadingsWriter
from cim.model import ObjectRef
from mdm.database import Store, reading
from mdm.devices import device_ids
from mdm.errors import MdmError
from mdm.reading_types import lookup_reading_types
from mdm.readings import IdCache, interval_lengths, window_query
from mdm.schema import reading_types as reading_type_table
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

    This is the bulk path (scheduled exports, files): rows go from the database cursor
    straight to text, as MeterReadingsWriter writes it (the frame, registers and quality
    codes are written by it; see :class:`_Renderer`), in bounded memory.
    """
    head, tail, empty = _document_frame(envelope, header)
    owned = isinstance(out, (str, os.PathLike))
    sink: Any = open(out, "wb") if owned else out  # noqa: SIM115 - closed below
    try:
        with reading(db) as conn:
            batches, mrid_of, code_of, intervals = _window_rows(
                conn, devices, reading_types, start, end, as_of, fetch_size, untyped=True
            )
            cache = IdCache()
            cache.reading_type_codes.update(code_of)
            cache.intervals.update(intervals)
            parts: list[str] = [head]
            renderer = _Renderer(conn.dialect, parts, mrid_of, cache)
            for batch in batches:
                renderer.feed(conn, batch)
                if len(parts) >= _FLUSH_PARTS:
                    sink.write("".join(parts).encode("utf-8"))
                    parts.clear()
            renderer.finish()
        if renderer.count == 0 and len(parts) == 1 and parts[0] is head:
            parts[0] = empty
        else:
            parts.append(tail)
        sink.write("".join(parts).encode("utf-8"))
        if not owned and hasattr(sink, "flush"):
            sink.flush()
    finally:
        if owned:
            sink.close()
    return renderer.count


_FLUSH_PARTS = 4096


def _document_frame(envelope: Any, header: dict[str, Any]) -> tuple[str, str, str]:
    """MeterReadingsWriter's document with these envelope arguments: the text up to and
    including the MeterReadings start tag, the text after its end tag, and the whole
    document without MeterReadings content."""
    buffer = io.BytesIO()
    with MeterReadingsWriter(buffer, envelope, **header):
        pass
    empty = buffer.getvalue().decode("utf-8")
    root = _HEAD[_HEAD.index("<MeterReadings") :]
    at = empty.index(root[:-1] + "/>")
    return empty[:at] + root, _TAIL + empty[at + len(root) + 1 :], empty


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


# --- one request's answer: the same document, built for speed -----------------------------


def meter_readings_xml(
    db: Store | Connection,
    devices: Sequence[str],
    reading_types: Sequence[str] | None,
    start: datetime,
    end: datetime,
    *,
    fetch_size: int = 10_000,
    ids: IdCache | None = None,
) -> bytes:
    """The bare MeterReadings document :func:`export_cim` writes for these arguments, byte for
    byte, made for answering a request (GetMeterReadings): ids come from the store's
    :class:`~mdm.readings.IdCache`, the query is one prepared statement per chunk of devices,
    and readings are written as text straight from the driver's values (the text of each
    distinct timestamp and value cached across calls). ``reading_types`` None: every
    ReadingType the store holds for the devices in the window. Unknown devices raise
    MdmError (UNKNOWN_DEVICE), as in export_cim. ``ids``: the id cache to use with a
    Connection (the Store's, typically); a Store uses its own."""
    if end < start:
        raise MdmError(ErrorCode.BAD_DATETIME, "window end is before its start")
    cache = db.ids if isinstance(db, Store) else ids or IdCache()
    parts: list[str] = [_HEAD]
    with reading(db) as conn:
        device_ids = cache.devices(conn, devices)
        for mrid in devices:
            if mrid not in device_ids:
                raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no device {mrid!r}", key=mrid)
        rt_ids: list[int] | None = None
        if reading_types is not None:
            rt_ids = sorted(set(cache.reading_types(conn, reading_types).values()))
            if not rt_ids:
                return _EMPTY
        mrid_of = {id_: mrid for mrid, id_ in device_ids.items()}
        device_list = sorted(mrid_of)
        renderer = _Renderer(conn.dialect, parts, mrid_of, cache)
        span = (end - start).total_seconds()
        most = len(device_list) * (len(rt_ids) if rt_ids else 4) * span / 900.0
        for first in range(0, len(device_list), _DEVICE_CHUNK):
            chunk = device_list[first : first + _DEVICE_CHUNK]
            params: dict[str, Any] = {"start": start, "end": end}
            params["devices" if len(chunk) > 1 else "device"] = (
                chunk if len(chunk) > 1 else chunk[0]
            )
            if rt_ids is not None:
                params["types" if len(rt_ids) > 1 else "type"] = (
                    rt_ids if len(rt_ids) > 1 else rt_ids[0]
                )
            statement = _request_statement(
                len(chunk) > 1, 0 if rt_ids is None else min(len(rt_ids), 2)
            )
            if most > fetch_size:  # stream; else one fetch (no server-side cursor)
                result = conn.execution_options(yield_per=fetch_size).execute(statement, params)
                for batch in result.partitions():
                    renderer.feed(conn, batch)
            elif conn.dialect.name == "sqlite" and len(chunk) == len(device_list) == 1:
                renderer.feed(conn, _sqlite_rows(conn, statement, params))
            else:
                renderer.feed(conn, conn.execute(statement, params).all())
        renderer.finish()
    if len(parts) == 1:
        return _EMPTY
    parts.append(_TAIL)
    return "".join(parts).encode("utf-8")


_STATEMENTS: dict[tuple[bool, int], Any] = {}
_SQLITE: dict[int, tuple[str, list[tuple[str, Callable[[Any], Any] | None]]]] = {}


def _sqlite_rows(conn: Connection, statement: Any, params: dict[str, Any]) -> list[Any]:
    """The rows of one request statement (no expanding parameters) on SQLite, from the
    driver's cursor on ``conn``'s connection: compiled once, its parameters bound as the
    column types bind them. One SELECT is atomic by itself, so it needs no BEGIN (and none
    of the per-execution work of Connection.execute, which costs more than the query)."""
    prepared = _SQLITE.get(id(statement))
    if prepared is None:
        compiled = statement.compile(dialect=conn.dialect)
        binds = [
            (
                name,
                compiled.binds[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect),
            )
            for name in compiled.positiontup
        ]
        prepared = _SQLITE[id(statement)] = (compiled.string, binds)
    sql, binds = prepared
    args = [params[name] if process is None else process(params[name]) for name, process in binds]
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return cursor.execute(sql, args).fetchall()
    finally:
        cursor.close()


def _request_statement(many_devices: bool, types: int) -> Any:
    """The window query (current values, untyped columns) with bound parameters: device /
    devices, type / types (``types``: 0 every ReadingType, 1 one, 2 a list), start, end."""
    key = (many_devices, types)
    statement = _STATEMENTS.get(key)
    if statement is None:
        r = readings.c
        columns = [r.device_id, r.reading_type_id, r.ts, r.value, r.qualities, r.status]
        conditions = [
            r.device_id.in_(bindparam("devices", expanding=True))
            if many_devices
            else r.device_id == bindparam("device"),
            r.ts > bindparam("start"),
            r.ts <= bindparam("end"),
        ]
        if types == 1:
            conditions.append(r.reading_type_id == bindparam("type"))
        elif types == 2:
            conditions.append(r.reading_type_id.in_(bindparam("types", expanding=True)))
        else:  # every ReadingType: a seek per type on the key, not a scan of all the device's
            conditions.append(
                r.reading_type_id.in_(select(reading_type_table.c.id).scalar_subquery())
            )
        statement = _STATEMENTS[key] = (
            select(*(type_coerce(c, NullType()) for c in columns))
            .where(*conditions)
            .order_by(r.device_id, r.reading_type_id, r.ts)
        )
    return statement


def _writer_text(write: Callable[[MeterReadingsWriter], None]) -> str:
    """What MeterReadingsWriter writes inside the root element of a bare document."""
    buffer = io.BytesIO()
    with MeterReadingsWriter(buffer) as writer:
        write(writer)
    text = buffer.getvalue().decode("utf-8")
    if not (text.startswith(_HEAD) and text.endswith(_TAIL)):  # pragma: no cover - writer changed
        raise AssertionError("unexpected MeterReadingsWriter document frame")
    return text[len(_HEAD) : -len(_TAIL)]


def _frame() -> tuple[str, bytes]:
    buffer = io.BytesIO()
    with MeterReadingsWriter(buffer):
        pass
    empty = buffer.getvalue()
    text = empty.decode("utf-8")
    assert text.endswith("/>")
    return text[:-2] + ">", empty


_HEAD, _EMPTY = _frame()
_TAIL = "</MeterReadings>"
_BLOCK_OPEN = "<MeterReading><IntervalBlocks>"
_ANY_INTERVAL = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
_ANY_TIME = datetime(2000, 1, 1, tzinfo=UTC)


class _TextCache(dict[Any, str]):
    """A bounded cache: key -> text, computed by ``make`` once per key."""

    def __init__(self, make: Callable[[Any], str], limit: int = _CACHE_LIMIT) -> None:
        super().__init__()
        self.make = make
        self.limit = limit

    def __missing__(self, key: Any) -> str:
        if len(self) >= self.limit:
            self.clear()
        text = self[key] = self.make(key)
        return text


def _block_tail(key: tuple[str, str]) -> str:
    """The end of a MeterReading of one IntervalBlock (ReadingType, Meter), as written."""
    mrid, code = key
    body = _writer_text(lambda w: w.write_interval_block(ObjectRef(mrid=mrid), code, ()))
    if not body.startswith(_BLOCK_OPEN):  # pragma: no cover - writer changed
        raise AssertionError("unexpected MeterReading frame")
    return body[len(_BLOCK_OPEN) :]


def _qualities_text(stored: str) -> str:
    """The ReadingQualities of an IntervalReading for the stored quality codes, as written."""
    codes = sorted(stored.split(","))
    body = _writer_text(
        lambda w: w.write_interval_block(None, _ANY_INTERVAL, ((_ANY_TIME, None, codes),))
    )
    opened = body.index("</timeStamp>") + len("</timeStamp>")
    return body[opened : body.rindex("</IntervalReadings>")]


_BLOCK_TAILS = _TextCache(_block_tail, 10_000)
_QUALITIES = _TextCache(_qualities_text, 10_000)


class _Texts:
    """The text of driver values as MeterReadingsWriter writes them, per dialect: timestamps
    through a cache keyed by the driver's value; values through a cache keyed by the stored
    text on SQLite, value_text of the Decimal on PostgreSQL, else through the column type."""

    def __init__(self, dialect: Dialect) -> None:
        process_ts = _result_processor(readings.c.ts, dialect) or (lambda value: value)
        self.timestamp = _TextCache(lambda raw: format_datetime(process_ts(raw)))
        if dialect.name == "postgresql":  # NUMERIC comes as the Decimal ExactDecimal returns
            self.value: Callable[[Any], str] = value_text
            return
        process = _result_processor(readings.c.value, dialect) or (lambda value: value)
        if dialect.name == "sqlite":  # the stored text is the key
            self.value = _TextCache(lambda raw: value_text(process(raw))).__getitem__
        else:
            self.value = lambda raw: value_text(process(raw))


_TEXTS: dict[str, _Texts] = {}


def _texts(dialect: Dialect) -> _Texts:
    texts = _TEXTS.get(dialect.name)
    if texts is None:
        texts = _TEXTS[dialect.name] = _Texts(dialect)
    return texts


class _Renderer:
    """Untyped window rows (ordered by device, ReadingType, time) -> the text export_cim
    writes: an interval ReadingType's rows as one MeterReading with one IntervalBlock, a
    register ReadingType's through MeterReadingsWriter (chunks of _REGISTER_CHUNK)."""

    def __init__(
        self, dialect: Dialect, parts: list[str], mrid_of: dict[int, str], cache: IdCache
    ) -> None:
        self.parts = parts
        self.mrid_of = mrid_of
        self.cache = cache
        self.dialect = dialect
        self.texts = _texts(dialect)
        self.counter: _Counter | None = None  # for registers, made when needed
        self.key: tuple[int, int] | None = None
        self.tail = ""  # the end of the open interval MeterReading
        self.registers: list[Any] = []  # rows of the open register group
        self.count = 0

    def feed(self, conn: Connection, batch: Sequence[Any]) -> None:
        if not batch:
            return
        self.count += len(batch)
        cache = self.cache
        code_of = cache.reading_type_codes
        append = self.parts.append
        timestamp = self.texts.timestamp
        value = self.texts.value
        qualities_text = _QUALITIES
        device, rt = self.key if self.key is not None else (None, None)
        interval = rt is not None and not self.registers and bool(self.tail)
        for row in batch:
            d, r, ts, v, q, _ = row
            if r != rt or d != device:
                self._close()
                device, rt = self.key = (d, r)
                code = code_of.get(r)
                if code is None:  # a ReadingType this process has not seen yet
                    code = cache.codes(conn, [r])[r]
                interval = cache.intervals.get(r) is not None
                if interval:
                    append(_BLOCK_OPEN)
                    self.tail = _BLOCK_TAILS[(self.mrid_of[d], code)]
            if not interval:
                self.registers.append(row)
                if len(self.registers) >= _REGISTER_CHUNK:
                    self._write_registers()
            elif q or v is None:
                append(
                    f"<IntervalReadings><timeStamp>{timestamp[ts]}</timeStamp>"
                    + ("" if v is None else f"<value>{value(v)}</value>")
                    + (qualities_text[q] if q else "")
                    + "</IntervalReadings>"
                )
            else:
                append(
                    f"<IntervalReadings><timeStamp>{timestamp[ts]}</timeStamp>"
                    f"<value>{value(v)}</value></IntervalReadings>"
                )

    def _close(self) -> None:
        if self.registers:
            self._write_registers()
        elif self.tail:
            self.parts.append(self.tail)
        self.tail = ""

    def _write_registers(self) -> None:
        rows, self.registers = self.registers, []
        assert self.key is not None
        device, code = self.mrid_of[self.key[0]], self.cache.reading_type_codes[self.key[1]]
        if self.counter is None:
            self.counter = _Counter(self.dialect)
        items = [item for _, item in self.counter.items([rows])]
        self.parts.append(_writer_text(lambda w: w.write(_register_reading(device, code, items))))

    def finish(self) -> None:
        self._close()
        self.key = None
