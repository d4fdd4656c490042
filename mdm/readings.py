"""Reading the store: values for devices x ReadingTypes x a time window, current or as of a
past moment, streamed as :class:`~mdm.series.Series`.

The window is ``(start, end]``: interval readings are stamped with the end of their interval,
so the day 2024-01-01 is ``start=2024-01-01T00:00Z, end=2024-01-02T00:00Z`` (the readings
stamped 00:15 ... 24:00). Series come ordered by device (in registration order), then by
ReadingType (in registration order), then by time; each holds at most ``max_points`` points
(a longer run comes as several consecutive Series of the same key), so memory stays bounded
whatever the window. Devices or ReadingTypes the store has never seen yield nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Select, select, type_coerce, union_all
from sqlalchemy.types import NullType

from cim.errors import ErrorCode
from mdm.database import Store, reading
from mdm.devices import device_ids
from mdm.errors import MdmError
from mdm.schema import reading_history, reading_types, readings
from mdm.series import Point, Series, SeriesKey

_CHUNK = 500
_REGISTER_SPACING = 900.0  # seconds; registers are assumed read at most every 15 minutes
_EMPTY: frozenset[str] = frozenset()


def read(
    db: Store | Connection,
    devices: Sequence[str],
    reading_types: Sequence[str],
    start: datetime,
    end: datetime,
    *,
    as_of: datetime | None = None,
    max_points: int = 50_000,
    fetch_size: int = 10_000,
) -> Iterator[Series]:
    """Series of the stored values (see the module docstring).

    ``as_of``: the values as they were stored at that moment (current values recorded since
    are replaced by the versions they superseded). Unknown devices raise MdmError.
    """
    _check_window(start, end)
    cache = db.ids if isinstance(db, Store) else IdCache()
    with reading(db) as conn:
        ids = cache.devices(conn, devices)
        for mrid in devices:
            if mrid not in ids:
                raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no device {mrid!r}", key=mrid)
        rt_ids = cache.reading_types(conn, reading_types)
        if not rt_ids:
            return
        mrid_of = {id_: mrid for mrid, id_ in ids.items()}
        code_of = {id_: code for code, id_ in rt_ids.items()}
        intervals = {id_: cache.intervals[id_] for id_ in code_of}
        device_list = sorted(mrid_of)
        rt_list = sorted(code_of)
        # A server-side cursor costs round trips; worth it only for more rows than one fetch.
        span = (end - start).total_seconds()
        most = len(device_list) * sum(
            span / (intervals[r].total_seconds() if intervals[r] else _REGISTER_SPACING)
            for r in rt_list
        )
        if most > fetch_size:
            streaming = conn.execution_options(yield_per=fetch_size)
        elif (
            isinstance(db, Store)
            and conn.dialect.name == "postgresql"
            and (not conn.in_transaction())
        ):
            # One statement needs no transaction: no BEGIN, no ROLLBACK, one round trip.
            streaming = conn.execution_options(isolation_level="AUTOCOMMIT")
        else:
            streaming = conn
        for first in range(0, len(device_list), _CHUNK):
            chunk = device_list[first : first + _CHUNK]
            query = window_query(chunk, rt_list, start, end, as_of)
            result = streaming.execute(query)
            rows = result if most > fetch_size else result.all()  # one fetch, fewer calls
            yield from _series(rows, mrid_of, code_of, intervals, max_points)


def read_one(
    db: Store | Connection,
    device: str,
    reading_type: str,
    start: datetime,
    end: datetime,
    *,
    as_of: datetime | None = None,
) -> Series:
    """One device's one ReadingType over a window, as a single Series (possibly empty)."""
    points: list[Point] = []
    interval = None
    for series in read(db, [device], [reading_type], start, end, as_of=as_of, max_points=1 << 62):
        points.extend(series.points)
        interval = series.interval
    return Series(SeriesKey(device, reading_type), points, interval)


def window_query(
    device_ids: Sequence[int],
    reading_type_ids: Sequence[int],
    start: datetime,
    end: datetime,
    as_of: datetime | None = None,
    *,
    untyped: bool = False,
) -> Select:
    """device id, ReadingType id, ts, value, qualities, status; ordered by the key.

    ``untyped``: the result columns carry no SQL types, so rows hold the driver's own values
    (no result processing: e.g. ts and value as stored text on SQLite); the bulk export
    converts them itself.
    """

    def cols(c: Any) -> list:
        columns = [c.device_id, c.reading_type_id, c.ts, c.value, c.qualities, c.status]
        return [type_coerce(col, NullType()) for col in columns] if untyped else columns

    def where(table: object) -> list:
        c = table.c  # type: ignore[attr-defined]
        return [
            c.device_id.in_(device_ids) if len(device_ids) > 1 else c.device_id == device_ids[0],
            c.reading_type_id.in_(reading_type_ids)
            if len(reading_type_ids) > 1
            else c.reading_type_id == reading_type_ids[0],
            c.ts > start,
            c.ts <= end,
        ]

    r = readings
    if as_of is None:
        current = select(*cols(r.c)).where(*where(r))
        return current.order_by(r.c.device_id, r.c.reading_type_id, r.c.ts)
    h = reading_history
    superseded = select(
        h.c.device_id, h.c.reading_type_id, h.c.ts, h.c.value, h.c.qualities, h.c.status
    ).where(*where(h), h.c.recorded_at <= as_of, h.c.superseded_at > as_of)
    current = select(
        r.c.device_id, r.c.reading_type_id, r.c.ts, r.c.value, r.c.qualities, r.c.status
    ).where(*where(r))
    both = union_all(current.where(r.c.recorded_at <= as_of), superseded).subquery()
    return select(*cols(both.c)).order_by(both.c.device_id, both.c.reading_type_id, both.c.ts)


def interval_lengths(conn: Connection, code_of: dict[int, str]) -> dict[int, timedelta | None]:
    """ReadingType id -> interval length (None for registers), for the ids in ``code_of``."""
    query = select(reading_types.c.id, reading_types.c.interval_seconds).where(
        reading_types.c.id.in_(sorted(code_of))
    )
    return {id_: timedelta(seconds=s) if s else None for id_, s in conn.execute(query)}


class IdCache:
    """mRID -> device id and code -> ReadingType id (with its interval), as far as looked up.

    Both ids are permanent (devices and ReadingTypes are never deleted or renumbered), so a
    Store keeps one for the life of the process; only ids found in the database are kept.
    """

    def __init__(self) -> None:
        self.device_ids: dict[str, int] = {}
        self.reading_type_ids: dict[str, int] = {}
        self.intervals: dict[int, timedelta | None] = {}
        self.reading_type_codes: dict[int, str] = {}

    def devices(self, conn: Connection, mrids: Sequence[str]) -> dict[str, int]:
        known = self.device_ids
        missing = [m for m in mrids if m not in known]
        if missing:
            known.update({m: id_ for m, (id_, _) in device_ids(conn, missing).items()})
        return {m: known[m] for m in mrids if m in known}

    def reading_types(self, conn: Connection, codes: Sequence[str]) -> dict[str, int]:
        known = self.reading_type_ids
        missing = [c for c in codes if c not in known]
        if missing:
            query = select(
                reading_types.c.code, reading_types.c.id, reading_types.c.interval_seconds
            ).where(reading_types.c.code.in_(missing))
            for code, id_, seconds in conn.execute(query):
                known[code] = id_
                self.reading_type_codes[id_] = code
                self.intervals[id_] = timedelta(seconds=seconds) if seconds else None
        return {c: known[c] for c in codes if c in known}

    def codes(self, conn: Connection, ids: Iterable[int]) -> dict[int, str]:
        """ReadingType id -> code (its interval kept too), for the stored ones among ``ids``."""
        code_of = self.reading_type_codes
        wanted = list(ids)
        missing = sorted({i for i in wanted if i not in code_of})
        for first in range(0, len(missing), _CHUNK):
            query = select(
                reading_types.c.code, reading_types.c.id, reading_types.c.interval_seconds
            ).where(reading_types.c.id.in_(missing[first : first + _CHUNK]))
            for code, id_, seconds in conn.execute(query):
                self.reading_type_ids[code] = id_
                code_of[id_] = code
                self.intervals[id_] = timedelta(seconds=seconds) if seconds else None
        return {i: code_of[i] for i in wanted if i in code_of}


def _series(
    rows: object,
    mrid_of: dict[int, str],
    code_of: dict[int, str],
    intervals: dict[int, timedelta | None],
    max_points: int,
) -> Iterator[Series]:
    current_key: tuple[int, int] | None = None
    series: Series | None = None
    qualities_cache: dict[str | None, frozenset[str]] = {None: _EMPTY}
    for device_id, rt_id, ts, value, qualities, status in rows:  # type: ignore[attr-defined]
        key = (device_id, rt_id)
        if key != current_key or series is None or len(series.points) >= max_points:
            if series is not None:
                yield series
            current_key = key
            series = Series(SeriesKey(mrid_of[device_id], code_of[rt_id]), [], intervals.get(rt_id))
        q = qualities_cache.get(qualities)
        if q is None:
            q = qualities_cache[qualities] = frozenset(qualities.split(","))
        series.points.append(Point(ts, value, q, status))
    if series is not None:
        yield series


def _check_window(start: datetime, end: datetime) -> None:
    for name, value in (("start", start), ("end", end)):
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise MdmError(ErrorCode.BAD_DATETIME, f"window {name} must be an aware datetime")
    if end < start:
        raise MdmError(ErrorCode.BAD_DATETIME, "window end is before its start")
