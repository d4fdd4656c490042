"""Ingest: a batch of raw values -> normalised -> validated -> stored, all or nothing.

``ingest(db, rows, validator=...)`` checks and normalises the whole batch first (any problem
raises :class:`MdmError` naming the row, before anything is written), then writes raw
values, readings and superseded versions in one transaction (:mod:`mdm.bulk`).

Idempotent: raw values identical to stored ones are not stored again, readings identical to
what the meter sent before create no version. A changed value for an interval becomes a new
version; the old one moves to ``reading_history`` with who, when and why.

**The validation hook.** ``validator: Callable[[Series], Series]`` is called once per device
and ReadingType of the batch with the normalised points, ordered by time (``Series.interval``
set for interval data). It returns the series with ReadingQuality codes added to the points
(``Point.with_qualities``); it must not change a point's timestamp, value or status bits, nor
drop one. It may add estimated points (``QUALITY_ESTIMATED`` 2.8.0 among their qualities),
for gaps or to stand in for a value that failed validation: they are stored as versions with
source ``estimated``, after the meter's value, which therefore stays in the history and is
never overwritten. An estimate never replaces a manual edit. The VEE engine (mdm.vee)
provides the validator; ingest has no rules of its own.

A validator may also offer ``is_clean(key, interval, timestamps, values, status) -> bool``
(the series' SeriesKey, interval, and its columns as lists): True promises that calling it
on that series would return the series unchanged, so ingest skips building the Points
(``VeeEngine.as_ingest_hook()`` does; most series pass validation untouched).
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from cim.codelists.readingtype import ReadingType
from cim.errors import ErrorCode
from mdm import bulk
from mdm.audit import check_who
from mdm.database import Store, transaction
from mdm.devices import device_ids
from mdm.errors import MdmError
from mdm.normalise import (
    RAW_MAX,
    RAW_MIN,
    STATUS_MAX,
    Ambiguous,
    Channel,
    RawValue,
    Refused,
    channel,
    check_raw,
    resolve_repeated_hour,
    to_utc,
)
from mdm.reading_types import ensure_reading_types
from mdm.schema import (
    SOURCE_EDITED,
    SOURCE_ESTIMATED,
    SOURCE_METER,
    qualities_text,
)
from mdm.series import QUALITY_ESTIMATED, Point, Series, SeriesKey

Validator = Callable[[Series], Series]
#: device id, ReadingType id, group, (UTC, row) items, Decimal values, quality codes
_Validated = tuple[
    int, int, "_Group", list[tuple[datetime, int]], list[Decimal] | None, list[str | None] | None
]
_NUMERIC = bulk.PgNumericCache()
_DECIMALS: dict[int, dict[int, Decimal]] = {}  # exponent -> raw -> Decimal(raw).scaleb(e)
_DECIMALS_LIMIT = 1 << 18
#: exponent -> raw -> the canonical SQLite text of its value (same bound as _DECIMALS)
_VALUE_TEXTS: dict[int, dict[int, str]] = {}
_READING_HEAD = struct.Struct(">hiiii")  # field count, device id, ReadingType id
_RAW_HEAD = struct.Struct(">hii")  # field count, device id
_INT8_FIELD = struct.Struct(">iq")  # length 8, int8
#: COPY data is handed to the loader thread in chunks of about 64 kB (this many pieces)
_CHUNK_PARTS = 5000
INGEST_WHO = "ingest"
_EMPTY: frozenset[str] = frozenset()
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class IngestResult:
    rows: int = 0
    raw_stored: int = 0  # raw values new to the store (the others were exact duplicates)
    readings_new: int = 0  # intervals the store had no value for
    readings_versioned: int = 0  # intervals that got a new version
    estimates_stored: int = 0  # estimated versions written from the validator's points
    #: code -> id of the batch's ReadingTypes (registered in the same transaction when new)
    reading_type_ids: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def raw_duplicates(self) -> int:
        return self.rows - self.raw_stored


def ingest(
    db: Store | Connection,
    rows: Iterable[RawValue],
    *,
    validator: Validator | None = None,
    who: str = INGEST_WHO,
    reason: str = "meter data",
    received_at: datetime | None = None,
    reading_type_ids: Mapping[str, int] | None = None,
    devices: Mapping[str, tuple[int, str]] | None = None,
) -> IngestResult:
    """Normalise, validate and store one batch (see the module docstring).

    A caller storing many batches in transactions of its own (``db`` a Connection) may pass
    what it knows, to save a query each: ``reading_type_ids`` (code -> id of committed
    ReadingTypes; a Store keeps its own) and ``devices`` (mRID -> (device id, time zone),
    as :func:`mdm.devices.device_ids` gives them)."""
    check_who(who)
    batch = rows if isinstance(rows, Sequence) else list(rows)
    if not batch:
        return IngestResult()
    stamp = bulk.Stamp(at=received_at or datetime.now(UTC), who=who, reason=reason)
    known = _Known(reading_type_ids, devices)
    try:
        return _ingest(db, batch, validator, stamp, fresh=True, known=known)
    except bulk.FreshConflict:  # rolled back: a concurrent writer stored some of it first
        return _ingest(db, batch, validator, stamp, fresh=False, known=known)


@dataclass(frozen=True, slots=True)
class _Known:
    reading_type_ids: Mapping[str, int] | None = None
    devices: Mapping[str, tuple[int, str]] | None = None


def _ingest(
    db: Store | Connection,
    batch: Sequence[RawValue],
    validator: Validator | None,
    stamp: bulk.Stamp,
    *,
    fresh: bool,
    known: _Known = _Known(),
) -> IngestResult:
    store = db if isinstance(db, Store) else None
    with transaction(db) as conn:
        plan = _Batch(conn, batch, store, known)
        plan.normalise()
        plan.register_reading_types()
        failed: list[int] = []
        try:
            meter = plan.write_fresh(validator, stamp, failed) if fresh else None
            if meter is None:
                meter_rows, estimate_rows = plan.stage_rows(validator)
                meter = bulk.write(conn, meter_rows, SOURCE_METER, stamp, failed_row=failed)
            else:
                estimate_rows = plan.estimate_rows
            estimates = bulk.write(conn, estimate_rows, SOURCE_ESTIMATED, stamp)
        except (DBAPIError, conn.dialect.loaded_dbapi.Error) as exc:
            # The bulk path also talks to the driver directly (COPY, executemany).
            row = plan.stage_index[failed[0]] if failed else None
            key = plan.describe(row) if row is not None else None
            reason = f"the database refused the batch: {getattr(exc, 'orig', exc)}"
            raise MdmError(ErrorCode.STORAGE, reason, row=row, key=key) from exc
    if store is not None:
        store.reading_type_ids.update(plan.rt_ids)
    return IngestResult(
        rows=len(batch),
        raw_stored=meter.raw_stored,
        readings_new=meter.new + estimates.new,
        readings_versioned=meter.versioned + estimates.versioned,
        estimates_stored=estimates.new + estimates.versioned,
        reading_type_ids=plan.rt_ids,
    )


def store_points(
    db: Store | Connection,
    series: Iterable[Series],
    *,
    source: str,
    who: str,
    reason: str,
    note: str | None = None,
    at: datetime | None = None,
) -> bulk.Counts:
    """Store values that did not come from a meter as new versions: estimates made after
    ingest (source ``estimated``) or manual edits (``edited``). Same versioning rules."""
    check_who(who)
    if source not in (SOURCE_ESTIMATED, SOURCE_EDITED):
        raise ValueError(f"source must be {SOURCE_ESTIMATED!r} or {SOURCE_EDITED!r}")
    stamp = bulk.Stamp(at=at or datetime.now(UTC), who=who, reason=reason, note=note)
    with transaction(db) as conn:
        fmt = bulk.StageFormat(conn.dialect.name)
        items = list(series)
        devices = device_ids(conn, [s.key.device for s in items])
        rt_ids = ensure_reading_types(conn, [ReadingType.parse(s.key.reading_type) for s in items])
        rows: list[tuple[Any, ...]] = []
        seen: set[tuple[int, int, datetime]] = set()
        for s in items:
            if s.key.device not in devices:
                raise MdmError(
                    ErrorCode.UNKNOWN_DEVICE, f"no device {s.key.device!r}", key=s.key.device
                )
            device_id = devices[s.key.device][0]
            rt_id = rt_ids[s.key.reading_type]
            for p in s.points:
                if (device_id, rt_id, p.timestamp) in seen:
                    raise MdmError(
                        ErrorCode.BAD_VALUE,
                        "two values for one interval",
                        key=_key_text(s.key.device, s.key.reading_type, p.timestamp),
                    )
                seen.add((device_id, rt_id, p.timestamp))
                rows.append(_reading_only_row(fmt, device_id, rt_id, p))
        counts = bulk.write(conn, rows, source, stamp)
    return counts


def _reading_only_row(
    fmt: bulk.StageFormat, device_id: int, rt_id: int, point: Point
) -> tuple[Any, ...]:
    return (
        device_id,
        rt_id,
        fmt.ts(point.timestamp),
        fmt.value(point.value),
        qualities_text(point.qualities),
        point.status_bits,
        None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


def _key_text(device: str, what: str, ts: datetime | None) -> str:
    when = ts.isoformat().replace("+00:00", "Z") if ts is not None else "?"
    return f"device {device!r}, {what}, {when}"


class _Group:
    """The rows of one device and ReadingType in a batch: UTC timestamp -> row."""

    __slots__ = ("channel", "device_id", "last", "mixed", "ordered", "stamps")

    def __init__(self, device_id: int, channel: Channel) -> None:
        self.device_id = device_id
        self.channel = channel  # the first row's; rows with another are in _Batch.row_channel
        self.mixed = False
        self.ordered = True
        self.last = _EPOCH
        self.stamps: dict[datetime, int] = {}


class _Batch:
    """One batch on its way through normalisation and validation."""

    def __init__(
        self, conn: Connection, rows: Sequence[RawValue], store: Store | None, known: _Known
    ) -> None:
        self.conn = conn
        self.rows = rows
        self.store = store
        self.known = known
        self.fmt = bulk.StageFormat(conn.dialect.name)
        self.devices: dict[str, tuple[int, str]] = {}
        self.groups: dict[tuple[int, str], _Group] = {}
        self.channels: dict[tuple[Any, ...], Channel] = {}
        self.row_channel: dict[int, Channel] = {}  # rows whose channel is not their group's
        # (row, UTC) of rows whose reading another row of the batch carries
        self.raw_only: list[tuple[int, datetime]] = []
        self.rt_ids: dict[str, int] = {}
        self.stage_index: list[int] = []  # staged (or COPYed) meter row -> batch row
        self.estimate_rows: list[tuple[Any, ...]] = []  # the validator's, fresh path
        self.ts_bytes: dict[datetime, bytes] = {}  # UTC -> binary COPY timestamptz

    def fail(self, row: int, error: ErrorCode, reason: str) -> MdmError:
        return MdmError(error, reason, row=row, key=self.describe(row))

    def describe(self, row: int) -> str:
        raw = self.rows[row]
        time = raw.time.isoformat() if isinstance(raw.time, datetime) else repr(raw.time)
        return f"device {raw.device!r}, {raw.source_id}, {time}"

    def normalise(self) -> None:
        """Check every row and sort it into its group; nothing is written."""
        rows = self.rows
        try:
            self.devices = devices = self._device_ids([r.device for r in rows])
        except AttributeError:
            for index, raw in enumerate(rows):
                if not isinstance(raw, RawValue):
                    raise MdmError(
                        ErrorCode.BAD_VALUE, f"{type(raw).__name__} is not a RawValue", row=index
                    ) from None
            raise
        channels = self.channels
        tasks: set[str] = set()
        on_grid: set[tuple[datetime, int]] = set()
        ambiguous: dict[int, Ambiguous] = {}
        utc = UTC
        groups = self.groups
        last_device, last_channel, last_group = -1, None, None
        for index, raw in enumerate(rows):
            device = devices.get(raw.device)
            if device is None:
                raise self.fail(
                    index, ErrorCode.UNKNOWN_DEVICE, f"no device {raw.device!r} is registered"
                )
            key = (raw.source_id, raw.interval_minutes, raw.reading_type, raw.unit, raw.scaler)
            ch = channels.get(key)
            if ch is None:
                ch = channels[key] = self._channel(index, raw)
            value = raw.value
            status = raw.status
            if (
                type(value) is not int
                or not RAW_MIN <= value <= RAW_MAX
                or type(status) is not int
                or not 0 <= status <= STATUS_MAX
                or raw.source_task not in tasks
            ):
                self._check(index, raw, tasks)
            time = raw.time
            if type(time) is datetime and time.tzinfo is utc:
                ts = time
            else:
                try:
                    ts = to_utc(time, raw.dst, device[1])
                except Ambiguous as exc:
                    ambiguous[index] = exc
                    continue
                except Refused as exc:
                    raise self.fail(index, exc.error, exc.reason) from None
                except (AttributeError, TypeError):
                    self._check(index, raw, tasks)
                    raise
            # _accept, inlined for the common case (one call per row is measurable here)
            step = ch.step
            if (step and (ts, step) not in on_grid) or ch.may_not_fit:
                self._accept(index, device[0], ch, ts, value, status, on_grid)
                continue
            device_id = device[0]
            if device_id == last_device and ch is last_channel:
                group = last_group
            else:
                group = groups.get((device_id, ch.code))
                if group is None or ch is not group.channel:
                    self._accept(index, device_id, ch, ts, value, status, on_grid)
                    continue
                last_device, last_channel, last_group = device_id, ch, group
            stamps = group.stamps
            first = stamps.setdefault(ts, index)
            if first != index:
                self._duplicate(group, first, index, ts)
            elif ts > group.last:
                group.last = ts
            else:
                group.ordered = False
        if ambiguous:
            self._resolve_ambiguous(ambiguous, on_grid)

    def _device_ids(self, mrids: list[str]) -> dict[str, tuple[int, str]]:
        known = self.known.devices
        if known:
            wanted = set(mrids)
            if all(m in known for m in wanted):
                return {m: known[m] for m in wanted}
        return device_ids(self.conn, mrids)

    def _accept(
        self,
        index: int,
        device_id: int,
        ch: Channel,
        ts: datetime,
        value: int,
        status: int,
        on_grid: set[tuple[datetime, int]],
    ) -> None:
        step = ch.step
        if step and (ts, step) not in on_grid:
            if int(ts.timestamp()) % step or ts.microsecond:
                raise self.fail(
                    index,
                    ErrorCode.BAD_DATETIME,
                    f"{ts.isoformat()} is not on the {ch.interval} grid of {ch.code}",
                )
            on_grid.add((ts, step))
        if ch.may_not_fit:
            problem = ch.fit_problem(value)
            if problem:
                raise self.fail(index, ErrorCode.BAD_VALUE, problem)
        group = self.groups.get((device_id, ch.code))
        if group is None:
            group = self.groups[(device_id, ch.code)] = _Group(device_id, ch)
        elif ch is not group.channel:
            group.mixed = True
            self.row_channel[index] = ch
        stamps = group.stamps
        first = stamps.setdefault(ts, index)
        if first != index:
            self._duplicate(group, first, index, ts)
        elif ts > group.last:
            group.last = ts
        else:
            group.ordered = False

    def channel_of(self, group: _Group, index: int) -> Channel:
        return self.row_channel.get(index, group.channel) if group.mixed else group.channel

    def _duplicate(self, group: _Group, first: int, index: int, ts: datetime) -> None:
        a, b = self.rows[first], self.rows[index]
        va = self.channel_of(group, first).scale(a.value)
        vb = self.channel_of(group, index).scale(b.value)
        if va != vb or a.status != b.status:
            raise self.fail(
                index,
                ErrorCode.BAD_VALUE,
                f"duplicate of row {first} with a different value ({vb} status {b.status} "
                f"against {va} status {a.status})",
            )
        self.raw_only.append((index, ts))

    def _channel(self, index: int, raw: RawValue) -> Channel:
        try:
            check_raw(raw)
            return channel(
                raw.source_id, raw.interval_minutes, raw.reading_type, raw.unit, raw.scaler
            )
        except Refused as exc:
            raise self.fail(index, exc.error, exc.reason) from None
        except TypeError as exc:
            raise self.fail(index, ErrorCode.BAD_VALUE, str(exc)) from None

    def _check(self, index: int, raw: RawValue, tasks: set[str]) -> None:
        try:
            check_raw(raw)
        except Refused as exc:
            raise self.fail(index, exc.error, exc.reason) from None
        tasks.add(raw.source_task)

    def _resolve_ambiguous(
        self, ambiguous: dict[int, Ambiguous], on_grid: set[tuple[datetime, int]]
    ) -> None:
        """Second pass over the channels that have repeated-hour wall times."""
        affected = {(self.rows[i].device, self.rows[i].source_id) for i in ambiguous}
        by_channel: dict[tuple[str, str], list[tuple[int, datetime | Ambiguous]]] = defaultdict(
            list
        )
        for index, raw in enumerate(self.rows):
            ident = (raw.device, raw.source_id)
            if ident in affected:
                if index in ambiguous:
                    by_channel[ident].append((index, ambiguous[index]))
                else:
                    tz = self.devices[raw.device][1]
                    by_channel[ident].append((index, to_utc(raw.time, raw.dst, tz)))

        def fail(row: int, reason: str) -> MdmError:
            return self.fail(row, ErrorCode.BAD_DATETIME, reason)

        for items in by_channel.values():
            for index, ts in sorted(resolve_repeated_hour(items, fail).items()):
                raw = self.rows[index]
                key = (raw.source_id, raw.interval_minutes, raw.reading_type, raw.unit, raw.scaler)
                device_id = self.devices[raw.device][0]
                self._accept(
                    index, device_id, self.channels[key], ts, raw.value, raw.status, on_grid
                )

    def register_reading_types(self) -> None:
        types = {ch.code: ch.reading_type for ch in self.channels.values()}
        known = (
            self.store.reading_type_ids if self.store is not None else self.known.reading_type_ids
        )
        self.rt_ids = ensure_reading_types(self.conn, types.values(), known)

    def _ordered(self) -> list[tuple[int, str, _Group, list[tuple[datetime, int]]]]:
        """The groups in key order, each with its (UTC, row) items ordered by time."""
        out = []
        for (device_id, code), group in sorted(self.groups.items()):
            items = list(group.stamps.items())
            if not group.ordered:
                items.sort(key=_first)
            out.append((device_id, code, group, items))
        return out

    def _validated(
        self,
        validator: Validator | None,
        estimates: list[tuple[Any, ...]],
        order: list[tuple[int, str, _Group, list[tuple[datetime, int]]]] | None = None,
    ) -> Iterator[_Validated]:
        """Each group in key order, its (UTC, row) items ordered by time, validated: the
        Decimal values (None without a validator) and quality codes (None: none)."""
        rows = self.rows
        mrid_of = {id_: mrid for mrid, (id_, _) in self.devices.items()}
        no_qualities = _EMPTY
        is_clean = getattr(validator, "is_clean", None)
        for device_id, code, group, items in order or self._ordered():
            rt_id = self.rt_ids[code]
            ch = group.channel
            values: list[Decimal] | None = None
            qualities: list[str | None] | None = None
            if validator is not None:
                values = self._values(group, items)
                key = SeriesKey(mrid_of[device_id], code)
                if is_clean is None or not is_clean(
                    key,
                    ch.interval,
                    [ts for ts, _ in items],
                    values,
                    [rows[i].status for _, i in items],
                ):
                    points = [
                        Point(ts, value, no_qualities, rows[i].status)
                        for (ts, i), value in zip(items, values, strict=True)
                    ]
                    qualities = self._validate(
                        validator, Series(key, points, ch.interval), device_id, rt_id, estimates
                    )
            yield device_id, rt_id, group, items, values, qualities

    def _values(self, group: _Group, items: list[tuple[datetime, int]]) -> list[Decimal]:
        rows = self.rows
        ch = group.channel
        if group.mixed:
            return [self.channel_of(group, i).scale(rows[i].value) for _, i in items]
        # Decimals are immutable: one object per distinct (raw, exponent), as meter values
        # repeat (cheaper than Decimal(raw).scaleb(exponent) for every row)
        e = ch.exponent
        table = _DECIMALS.get(e)
        if table is None or len(table) > _DECIMALS_LIMIT:
            table = _DECIMALS[e] = {}
        out = []
        append = out.append
        get = table.get
        for _, i in items:
            raw = rows[i].value
            value = get(raw)
            if value is None:
                value = table[raw] = Decimal(raw).scaleb(e) if e else Decimal(raw)
            append(value)
        return out

    def _value_texts(
        self,
        group: _Group,
        items: list[tuple[datetime, int]],
        values: list[Decimal],
        fmt_value: Callable[[Decimal], Any],
    ) -> list[Any]:
        """The staged form of ``values`` (SQLite: canonical text), once per distinct raw
        (kept across batches, as the Decimals of ``_values``)."""
        if group.mixed or not self.fmt.decimal_as_text:
            return [fmt_value(v) for v in values]
        e = group.channel.exponent
        texts = _VALUE_TEXTS.get(e)
        if texts is None or len(texts) > _DECIMALS_LIMIT:
            texts = _VALUE_TEXTS[e] = {}
        out = []
        rows = self.rows
        for (_, i), value in zip(items, values, strict=True):
            raw = rows[i].value
            text = texts.get(raw)
            if text is None:
                text = texts[raw] = fmt_value(value)
            out.append(text)
        return out

    # --- the fresh-data path (PostgreSQL) ----------------------------------------------

    def write_fresh(
        self, validator: Validator | None, stamp: bulk.Stamp, failed: list[int]
    ) -> bulk.Counts | None:
        """COPY the batch straight into readings and raw_values when the store has nothing
        in its ranges (``bulk.fresh_postgresql``); None: take the staged path."""
        if (
            self.fmt.dialect != "postgresql"
            or self.raw_only
            or not self.groups
            or len(self.rows) < bulk.FRESH_MIN_ROWS
        ):
            return None
        group_ranges: list[tuple[int, int, datetime, datetime]] = []
        device_ranges: dict[int, tuple[datetime, datetime]] = {}
        for (device_id, code), group in self.groups.items():
            if group.ordered:
                lo = next(iter(group.stamps))
                hi = group.last
            else:
                lo, hi = min(group.stamps), max(group.stamps)
            group_ranges.append((device_id, self.rt_ids[code], lo, hi))
            known = device_ranges.get(device_id)
            if known is not None:
                lo, hi = min(lo, known[0]), max(hi, known[1])
            device_ranges[device_id] = (lo, hi)
        devices = [(d, lo, hi) for d, (lo, hi) in device_ranges.items()]
        if not bulk.fresh_postgresql(self.conn, group_ranges, devices):
            return None
        order = self._ordered()
        stage_index = self.stage_index
        for _, _, _, items in order:
            stage_index.extend(index for _, index in items)
        # raw values first: they need no validation, so the database has work at once
        bulk.copy_fresh_postgresql(
            self.conn,
            [
                (bulk.COPY_RAW_VALUES, self._copy_raw_values(stamp, order)),
                (bulk.COPY_READINGS, self._copy_readings(validator, stamp, order)),
            ],
            failed,
        )
        count = len(self.stage_index)
        return bulk.Counts(raw_stored=count, new=count, versioned=0)

    def _copy_readings(
        self,
        validator: Validator | None,
        stamp: bulk.Stamp,
        order: list[tuple[int, str, _Group, list[tuple[datetime, int]]]],
    ) -> Iterator[bytes]:
        """Binary COPY data of the readings (version 1, source meter), in chunks, validating
        group by group as the database loads the previous chunk."""
        rows = self.rows
        ts_bytes = self.ts_bytes
        numeric = _NUMERIC
        null = bulk.PG_NULL
        tail = bulk.pg_int4(1) + bulk.pg_text(SOURCE_METER) + bulk.pg_timestamp(stamp.at)
        status_zero = bulk.pg_int8(0)
        # the usual row ends the same way: no quality codes, status 0, version 1, meter...
        plain_tail = null + status_zero + tail
        int8 = bulk.pg_int8
        quality_bytes: dict[str | None, bytes] = {None: null}
        out: list[bytes] = [bulk.PG_COPY_SIGNATURE]
        for device_id, rt_id, group, items, _values, qualities in self._validated(
            validator, self.estimate_rows, order
        ):
            head = _READING_HEAD.pack(9, 4, device_id, 4, rt_id)
            mixed = group.mixed
            exponent = group.channel.exponent
            table = numeric.table(exponent)
            extend = out.extend
            if qualities is None and not mixed:
                # per channel work hoisted: one numeric table, one row ending
                for ts, index in items:
                    raw = rows[index]
                    tsb = ts_bytes.get(ts)
                    if tsb is None:
                        tsb = ts_bytes[ts] = bulk.pg_timestamp(ts)
                    value = raw.value
                    num = table.get(value)
                    if num is None:
                        num = table[value] = bulk.pg_numeric(value, exponent)
                    status = raw.status
                    if status:
                        extend((head, tsb, num, null, int8(status), tail))
                    else:
                        extend((head, tsb, num, plain_tail))
            else:
                if qualities is None:
                    qualities = [None] * len(items)
                for (ts, index), quality in zip(items, qualities, strict=True):
                    raw = rows[index]
                    tsb = ts_bytes.get(ts)
                    if tsb is None:
                        tsb = ts_bytes[ts] = bulk.pg_timestamp(ts)
                    value = raw.value
                    if mixed:
                        num = numeric.get(value, self.channel_of(group, index).exponent)
                    else:
                        num = table.get(value)
                        if num is None:
                            num = table[value] = bulk.pg_numeric(value, exponent)
                    qb = quality_bytes.get(quality)
                    if qb is None:
                        qb = quality_bytes[quality] = bulk.pg_text(quality)  # type: ignore[arg-type]
                    status = raw.status
                    extend((head, tsb, num, qb, int8(status) if status else status_zero, tail))
            if len(out) > _CHUNK_PARTS:
                yield b"".join(out)
                out.clear()
        out.append(bulk.PG_COPY_TRAILER)
        yield b"".join(out)

    def _copy_raw_values(
        self, stamp: bulk.Stamp, order: list[tuple[int, str, _Group, list[tuple[datetime, int]]]]
    ) -> Iterator[bytes]:
        """Binary COPY data of the raw values, in the order of ``_copy_readings``."""
        rows = self.rows
        ts_bytes = self.ts_bytes
        null = bulk.PG_NULL
        received = bulk.pg_timestamp(stamp.at)
        int8, int2, text = bulk.pg_int8, bulk.pg_int2, bulk.pg_text
        texts: dict[str, bytes] = {}
        scalers: dict[int, bytes] = {}
        zero = int8(0)
        value_field = _INT8_FIELD.pack
        out: list[bytes] = [bulk.PG_COPY_SIGNATURE]

        def text_of(value: str) -> bytes:
            data = texts.get(value)
            if data is None:
                data = texts[value] = text(value)
            return data

        def scaler_of(value: int) -> bytes:
            data = scalers.get(value)
            if data is None:
                data = scalers[value] = int2(value)
            return data

        for device_id, _, group, items in order:
            head = _RAW_HEAD.pack(11, 4, device_id)
            extend = out.extend
            if not group.mixed and items:
                # one channel: source id, scaler and unit are the group's; a row of status
                # 0, sent as UTC by the group's first task ends with the same bytes
                first = rows[items[0][1]]
                task = first.source_task
                prefix = head + text_of(first.source_id)
                middle = scaler_of(first.scaler) + text_of(first.unit)
                plain_end = middle + zero + text_of(task) + null + null + received
                for ts, index in items:
                    raw = rows[index]
                    tsb = ts_bytes.get(ts)
                    if tsb is None:
                        tsb = ts_bytes[ts] = bulk.pg_timestamp(ts)
                    time = raw.time
                    dst = raw.dst
                    status = raw.status
                    if not status and time is ts and dst is None and raw.source_task == task:
                        extend((prefix, tsb, value_field(8, raw.value), plain_end))
                    else:
                        extend(
                            (
                                prefix,
                                tsb,
                                value_field(8, raw.value),
                                middle,
                                int8(status) if status else zero,
                                text_of(raw.source_task),
                                null if time is ts else text(time.isoformat()),
                                null if dst is None else int2(int(dst)),
                                received,
                            )
                        )
            else:
                for ts, index in items:
                    raw = rows[index]
                    tsb = ts_bytes.get(ts)
                    if tsb is None:
                        tsb = ts_bytes[ts] = bulk.pg_timestamp(ts)
                    time = raw.time
                    dst = raw.dst
                    status = raw.status
                    extend(
                        (
                            head,
                            text_of(raw.source_id),
                            tsb,
                            value_field(8, raw.value),
                            scaler_of(raw.scaler),
                            text_of(raw.unit),
                            int8(status) if status else zero,
                            text_of(raw.source_task),
                            null if time is ts else text(time.isoformat()),
                            null if dst is None else int2(int(dst)),
                            received,
                        )
                    )
            if len(out) > _CHUNK_PARTS:
                yield b"".join(out)
                out.clear()
        out.append(bulk.PG_COPY_TRAILER)
        yield b"".join(out)

    # --- the staged path -----------------------------------------------------------------

    def stage_rows(
        self, validator: Validator | None
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The meter values (with their raw values) and the validator's estimates."""
        meter: list[tuple[Any, ...]] = []
        estimates: list[tuple[Any, ...]] = []
        stage_index = self.stage_index
        rows = self.rows
        fmt = self.fmt
        native = fmt.native
        fmt_ts, fmt_value, empty = fmt.ts, fmt.value, fmt.empty_text
        # a profile row's channels share its wall-clock time: each written out once
        wall_texts: dict[datetime, str] = {}
        for device_id, rt_id, group, items, validated, qualities in self._validated(
            validator, estimates
        ):
            values = validated if validated is not None else self._values(group, items)
            if native:
                stamps_out: list[Any] = [ts for ts, _ in items]
                values_out: list[Any] = values
            else:
                stamps_out = [fmt_ts(ts) for ts, _ in items]
                values_out = self._value_texts(group, items, values, fmt_value)
            if qualities is None:
                qualities = [None] * len(items)
            for (ts, index), ts_out, value_out, quality in zip(
                items, stamps_out, values_out, qualities, strict=True
            ):
                raw = rows[index]
                time = raw.time
                dst = raw.dst
                if time is ts:
                    wall = None
                elif time.tzinfo is None:  # equal naive times print alike
                    wall = wall_texts.get(time)
                    if wall is None:
                        wall = wall_texts[time] = time.isoformat()
                else:
                    wall = time.isoformat()
                meter.append(
                    (
                        device_id,
                        rt_id,
                        ts_out,
                        value_out,
                        quality,
                        raw.status,
                        raw.source_id,
                        raw.value,
                        raw.scaler,
                        raw.unit or empty,
                        raw.source_task or empty,
                        wall,
                        None if dst is None else int(dst),
                    )
                )
                stage_index.append(index)
        for index, ts in self.raw_only:
            raw = rows[index]
            time = raw.time
            dst = raw.dst
            meter.append(
                (
                    self.devices[raw.device][0],
                    None,
                    fmt_ts(ts),
                    None,
                    None,
                    raw.status,
                    raw.source_id,
                    raw.value,
                    raw.scaler,
                    raw.unit or empty,
                    raw.source_task or empty,
                    None if time is ts else time.isoformat(),
                    None if dst is None else int(dst),
                )
            )
            stage_index.append(index)
        return meter, estimates

    def _validate(
        self,
        validator: Validator,
        series: Series,
        device_id: int,
        rt_id: int,
        estimates: list[tuple[Any, ...]],
    ) -> list[str | None] | None:
        """Quality codes of the series' points (None: none anywhere); estimates appended."""
        points = series.points
        result = validator(series)
        if result is series or (result.points is points):
            return None
        key = series.key
        interval = series.interval
        step = int(interval.total_seconds()) if interval is not None else 0
        out: list[str | None] = []
        position = 0
        seen_estimates: set[datetime] = set()
        for p in result.points:
            if QUALITY_ESTIMATED in p.qualities:
                if p.timestamp in seen_estimates:
                    raise _contract(key, p, "two estimates for one interval")
                if step and (int(p.timestamp.timestamp()) % step or p.timestamp.microsecond):
                    raise _contract(key, p, f"estimate off the {interval} grid")
                seen_estimates.add(p.timestamp)
                estimates.append(_reading_only_row(self.fmt, device_id, rt_id, p))
                continue
            if position >= len(points):
                raise _contract(key, p, "a point that was not sent (and is not estimated)")
            sent = points[position]
            if p is not sent and (
                p.timestamp != sent.timestamp
                or p.value != sent.value
                or p.status_bits != sent.status_bits
            ):
                raise _contract(
                    key,
                    p,
                    "changed or reordered a meter value "
                    f"(sent {sent.value} at {sent.timestamp.isoformat()})",
                )
            out.append(qualities_text(p.qualities))
            position += 1
        if position != len(points):
            raise MdmError(
                ErrorCode.INTERNAL,
                f"the validator dropped {len(points) - position} meter value(s)",
                key=f"device {key.device!r}, {key.reading_type}",
            )
        return out


def _contract(key: SeriesKey, point: Point, problem: str) -> MdmError:
    return MdmError(
        ErrorCode.INTERNAL,
        f"the validator broke its contract: {problem}",
        key=_key_text(key.device, key.reading_type, point.timestamp),
    )


def _first(item: tuple[datetime, Any, int]) -> datetime:
    return item[0]
