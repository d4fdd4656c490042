"""KPIs computed by the database: read success per day, and devices that have gone silent.

Neither loads readings into Python: the counting and the latest timestamps are SQL
aggregates over the readings table's primary key (device, ReadingType, ts), one statement
per chunk of devices.

**Read success.** For one interval ReadingType and the local days of a zone, the share of
expected intervals the meter delivered: an interval counts when its current reading came
from the meter, or when the current one is an estimate or edit that superseded a meter value
(the meter did deliver; VEE rejected it). Estimates that fill gaps do not count. Expected
intervals are the grid interval ends in the local day (92 or 100 quarter-hours on DST days),
for every device asked for (default: devices with status ``active``), whether or not it sent
anything; a device's registration date is not taken into account.

**Silent devices.** Devices (default: status ``active``) whose latest meter value is older
than ``days`` days, or that never sent one, with that latest timestamp. Giving the
ReadingType makes each lookup a single index seek; without it the database reads the
device's index range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
)

from cim.codelists.readingtype import ReadingType
from cim.errors import ErrorCode
from mdm.database import Store, reading
from mdm.devices import device_ids
from mdm.errors import MdmError
from mdm.reading_types import lookup_reading_types
from mdm.schema import SOURCE_METER, reading_history, readings
from mdm.schema import devices as device_table
from mdm.sqltypes import UtcDateTime

_CHUNK = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class DaySuccess:
    day: date
    device: str | None  # None: all devices together
    present: int
    expected: int

    @property
    def rate(self) -> float | None:
        return self.present / self.expected if self.expected else None


@dataclass(slots=True)
class ReadSuccess:
    per_device: list[DaySuccess]  # ordered by device, then day (empty if not asked for)
    overall: list[DaySuccess]  # one per day


@dataclass(frozen=True, slots=True)
class SilentDevice:
    device: str
    last_reading: datetime | None


def read_success(
    db: Store | Connection,
    reading_type: str,
    first_day: date,
    last_day: date,
    *,
    zone: str = "UTC",
    devices: Sequence[str] | None = None,
    statuses: Sequence[str] = ("active",),
    per_device: bool = True,
) -> ReadSuccess:
    """Read success per device and day, and overall per day (see the module docstring).

    With ``per_device=False`` the database sums over the devices and only the overall figures
    come back (for a whole fleet: no device x day rows leave the database).
    """
    if last_day < first_day:
        raise ValueError("last_day is before first_day")
    tz = ZoneInfo(zone)
    days = [first_day + timedelta(days=k) for k in range((last_day - first_day).days + 1)]
    bounds = [
        datetime.combine(d, time(0), tz).astimezone(UTC) for d in [*days, days[-1] + timedelta(1)]
    ]
    interval = _interval(reading_type)
    expected = [_grid_count(bounds[k], bounds[k + 1], interval) for k in range(len(days))]
    with reading(db) as conn:
        rt_id = lookup_reading_types(conn, [reading_type]).get(reading_type)
        targets = _devices(conn, devices, statuses)
        present: dict[tuple[int | None, int], int] = {}
        totals = [0] * len(days)
        ids = sorted(targets) if rt_id is not None else []
        for first in range(0, len(ids), _CHUNK):
            chunk = ids[first : first + _CHUNK]
            query = success_query(chunk, rt_id, bounds, per_device)  # type: ignore[arg-type]
            for *device, day_index, count in conn.execute(query):
                totals[day_index] += int(count)
                if per_device:
                    present[(device[0], day_index)] = int(count)
    by_device = [
        DaySuccess(day, targets[i], present.get((i, k), 0), expected[k])
        for i in (sorted(targets, key=targets.__getitem__) if per_device else ())
        for k, day in enumerate(days)
    ]
    overall = [
        DaySuccess(day, None, totals[k], expected[k] * len(targets)) for k, day in enumerate(days)
    ]
    return ReadSuccess(by_device, overall)


def success_query(
    device_ids_: Sequence[int], rt_id: int, bounds: Sequence[datetime], per_device: bool = True
) -> Select:
    """Intervals delivered by the meter per (device id,) day index. ``bounds`` are the day
    boundaries (UTC); a reading belongs to the day whose (start, end] holds its ts."""
    r, h = readings, reading_history
    days = union_all(
        *(
            select(
                literal(k, Integer).label("day_index"),
                literal(bounds[k], UtcDateTime).label("day_start"),
                literal(bounds[k + 1], UtcDateTime).label("day_end"),
            )
            for k in range(len(bounds) - 1)
        )
    ).subquery("days")
    meter_before = exists().where(
        h.c.device_id == r.c.device_id,
        h.c.reading_type_id == r.c.reading_type_id,
        h.c.ts == r.c.ts,
        h.c.source == SOURCE_METER,
    )
    delivered = case(
        (r.c.source == SOURCE_METER, 1),
        (meter_before, 1),
        else_=0,
    )
    keys = [r.c.device_id, days.c.day_index] if per_device else [days.c.day_index]
    return (
        select(*keys, func.sum(delivered))
        .select_from(r.join(days, and_(r.c.ts > days.c.day_start, r.c.ts <= days.c.day_end)))
        .where(
            r.c.device_id.in_(device_ids_),
            r.c.reading_type_id == rt_id,
            r.c.ts > bounds[0],
            r.c.ts <= bounds[-1],
        )
        .group_by(*keys)
    )


def silent_devices(
    db: Store | Connection,
    days: int,
    *,
    now: datetime | None = None,
    reading_type: str | None = None,
    statuses: Sequence[str] = ("active",),
) -> list[SilentDevice]:
    """Devices without a meter value in the last ``days`` days, ordered by mRID."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    with reading(db) as conn:
        rt_id = None
        if reading_type is not None:
            # An unknown ReadingType matches no reading (id -1): every device is silent.
            rt_id = lookup_reading_types(conn, [reading_type]).get(reading_type, -1)
        rows = conn.execute(silent_query(cutoff, rt_id, statuses)).all()
    return [SilentDevice(mrid, _latest(_utc(a), _utc(b))) for mrid, a, b in rows]


def silent_query(cutoff: datetime, rt_id: int | None, statuses: Sequence[str]) -> Select:
    """mRID, latest current meter value, latest superseded meter value, of the devices with
    neither after ``cutoff``."""
    d, r, h = device_table, readings, reading_history
    rt_filter = [] if rt_id is None else [r.c.reading_type_id == rt_id]
    history_filter = [] if rt_id is None else [h.c.reading_type_id == rt_id]
    last_current = (
        select(func.max(r.c.ts))
        .where(r.c.device_id == d.c.id, *rt_filter, r.c.source == SOURCE_METER)
        .scalar_subquery()
    )
    last_superseded = (
        select(func.max(h.c.ts))
        .where(h.c.device_id == d.c.id, *history_filter, h.c.source == SOURCE_METER)
        .scalar_subquery()
    )
    return (
        select(d.c.mrid, last_current, last_superseded)
        .where(
            d.c.status.in_(statuses),
            or_(last_current.is_(None), last_current <= cutoff),
            or_(last_superseded.is_(None), last_superseded <= cutoff),
        )
        .order_by(d.c.mrid)
    )


def _utc(value: datetime | str | None) -> datetime | None:
    # An aggregate loses the column type: SQLite returns MAX(ts) as text, naive.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _interval(code: str) -> timedelta:
    seconds = ReadingType.parse(code).interval_seconds
    if seconds is None:
        raise ValueError(f"{code} is not interval data")
    return timedelta(seconds=seconds)


def _devices(
    conn: Connection, mrids: Sequence[str] | None, statuses: Sequence[str]
) -> dict[int, str]:
    if mrids is not None:
        found = device_ids(conn, mrids)
        unknown = [m for m in mrids if m not in found]
        if unknown:
            raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no device {unknown[0]!r}", key=unknown[0])
        return {id_: mrid for mrid, (id_, _) in found.items()}
    d = device_table
    query = select(d.c.id, d.c.mrid).where(d.c.status.in_(statuses))
    return {id_: mrid for id_, mrid in conn.execute(query)}


def _grid_count(start: datetime, end: datetime, interval: timedelta) -> int:
    return (end - _EPOCH) // interval - (start - _EPOCH) // interval
