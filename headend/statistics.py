"""Communication statistics and KPIs, aggregated by the database over the job tables
(``task_attempts`` joined to ``tasks`` and mdm's ``devices``); nothing but the result rows
reaches Python, so they hold for millions of attempts.

- :func:`comm_statistics`: attempts, successes, failures by cause, bytes and session time,
  in summary or per meter, per communication path or per device type (manufacturer and model
  of the mdm device). Only finished attempts count (an attempt still running has no outcome).
- :func:`daily_kpis`: per local day of a zone, the communication success rate (successful
  attempts / attempts) and the read success rate (meters with a successful read task / meters
  with a finished read task that day; reads are the jobs whose command is one of
  :data:`headend.commands.READ_COMMANDS`: ReadRegisters, ReadIntervalData, FullRead,
  ReadEvents);
  with a ReadingType, also the interval completeness of :func:`mdm.kpi.read_success`.
- :func:`silent_meters`: non-communicating meters, without a successful session in the last
  N days (or never), with the time of their last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    Connection,
    Integer,
    and_,
    case,
    exists,
    func,
    literal,
    or_,
    select,
    union_all,
)

from cim.errors import CimError, ErrorCode
from headend.command_json import type_prefix
from headend.commands import READ_COMMANDS
from headend.schema import jobs, task_attempts, tasks
from headend.sql_seconds import seconds_between
from mdm.database import Store, reading
from mdm.schema import devices
from mdm.sqltypes import UtcDateTime

GROUPINGS = ("meter", "path", "type")
OK = "ok"
#: How the JSON of each read command begins in ``jobs.command`` (headend.command_json): the
#: read-success KPI matches the exact type names, not a name prefix.
READ_COMMAND_PREFIXES = tuple(type_prefix(cls) for cls in READ_COMMANDS)
MAX_DAYS = 400


@dataclass(frozen=True)
class CommStats:
    """One group's figures; ``key`` is None for the summary."""

    key: str | None
    attempts: int
    successes: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    by_cause: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        return self.attempts - self.successes

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.attempts if self.attempts else None

    @property
    def mean_seconds(self) -> float | None:
        return self.seconds / self.attempts if self.attempts else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "attempts": self.attempts,
            "successes": self.successes,
            "failures": self.failures,
            "success_rate": self.success_rate,
            "by_cause": dict(self.by_cause),
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 3),
            "mean_seconds": None if self.mean_seconds is None else round(self.mean_seconds, 3),
        }


def _refuse(reason: str) -> CimError:
    return CimError(ErrorCode.BAD_VALUE, reason)


def _keys(by: str | None) -> list[Any]:
    if by is None:
        return []
    if by == "meter":
        return [tasks.c.mrid]
    if by == "path":
        return [task_attempts.c.path]
    if by == "type":
        return [devices.c.manufacturer, devices.c.model]
    raise _refuse(f"statistics by {by!r}: choose one of {', '.join(GROUPINGS)}")


def _key_text(by: str | None, values: Sequence[Any]) -> str | None:
    if by is None:
        return None
    if by == "type":
        manufacturer, model = values
        return f"{manufacturer or '?'} {model or '?'}"
    return str(values[0])


def comm_statistics(
    db: Store | Connection,
    *,
    by: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
) -> list[CommStats]:
    """Communication statistics of the attempts started in [since, until): one summary row
    (``by`` None) or one row per meter, path or device type, the groups with the most
    failures first (then by key), at most ``limit`` of them."""
    a, t = task_attempts, tasks
    keys = _keys(by)
    source = a.join(t, a.c.task_id == t.c.id)
    if by == "type":
        source = source.join(devices, t.c.device_id == devices.c.id)
    elif by != "meter":
        source = a  # path and summary need no join
    where = [a.c.outcome.is_not(None)]
    if since is not None:
        where.append(a.c.started_at >= since)
    if until is not None:
        where.append(a.c.started_at < until)
    successes = func.sum(case((a.c.outcome == OK, 1), else_=0))
    attempts = func.count()
    query = (
        select(
            *keys,
            attempts,
            successes,
            func.sum(a.c.bytes_sent),
            func.sum(a.c.bytes_received),
            func.sum(seconds_between(a.c.finished_at, a.c.started_at)),
        )
        .select_from(source)
        .where(*where)
    )
    if keys:
        query = query.group_by(*keys).order_by((attempts - successes).desc(), *keys).limit(limit)
    causes_query = (
        select(*keys, a.c.outcome, func.count())
        .select_from(source)
        .where(*where, a.c.outcome != OK)
        .group_by(*keys, a.c.outcome)
    )
    with reading(db) as conn:
        rows = conn.execute(query).all()
        if by == "meter" or by == "path":
            wanted = [row[0] for row in rows]
            causes_query = causes_query.where(keys[0].in_(wanted)) if wanted else None
        causes: dict[str | None, dict[str, int]] = {}
        if causes_query is not None:
            for row in conn.execute(causes_query):
                key = _key_text(by, row[: len(keys)])
                causes.setdefault(key, {})[row[len(keys)]] = int(row[len(keys) + 1])
    out = []
    for row in rows:
        n, ok, sent, received, seconds = row[len(keys) :]
        key = _key_text(by, row[: len(keys)])
        if by is None and not n:
            return [CommStats(None, 0, 0, 0, 0, 0.0, {})]
        out.append(
            CommStats(
                key,
                int(n or 0),
                int(ok or 0),
                int(sent or 0),
                int(received or 0),
                float(seconds or 0.0),
                dict(sorted(causes.get(key, {}).items(), key=lambda kv: (-kv[1], kv[0]))),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# KPIs


@dataclass(frozen=True)
class DayKpi:
    day: date
    attempts: int
    successful_attempts: int
    meters: int  # meters with a finished read task that day
    meters_read: int  # ... of which at least one succeeded
    completeness: float | None = None  # interval data delivered / expected (mdm.kpi)

    @property
    def comm_success_rate(self) -> float | None:
        return self.successful_attempts / self.attempts if self.attempts else None

    @property
    def read_success_rate(self) -> float | None:
        return self.meters_read / self.meters if self.meters else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "attempts": self.attempts,
            "successful_attempts": self.successful_attempts,
            "comm_success_rate": self.comm_success_rate,
            "meters": self.meters,
            "meters_read": self.meters_read,
            "read_success_rate": self.read_success_rate,
            "completeness": self.completeness,
        }


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _refuse(f"time zone {name!r} is not an IANA time zone") from None


def _days(first_day: date, last_day: date, zone: ZoneInfo) -> tuple[list[date], list[datetime]]:
    if last_day < first_day:
        raise _refuse("the last day is before the first day")
    count = (last_day - first_day).days + 1
    if count > MAX_DAYS:
        raise _refuse(f"at most {MAX_DAYS} days at a time")
    days = [first_day + timedelta(days=k) for k in range(count)]
    bounds = [
        datetime.combine(d, time(0), zone).astimezone(UTC) for d in [*days, last_day + timedelta(1)]
    ]
    return days, bounds


def _day_table(bounds: Sequence[datetime]) -> Any:
    return union_all(
        *(
            select(
                literal(k, Integer).label("day_index"),
                literal(bounds[k], UtcDateTime).label("day_start"),
                literal(bounds[k + 1], UtcDateTime).label("day_end"),
            )
            for k in range(len(bounds) - 1)
        )
    ).subquery("days")


def daily_kpis(
    db: Store | Connection,
    first_day: date,
    last_day: date,
    *,
    zone: str = "UTC",
    reading_type: str | None = None,
) -> list[DayKpi]:
    """One :class:`DayKpi` per local day from ``first_day`` to ``last_day``."""
    tz = _zone(zone)
    days, bounds = _days(first_day, last_day, tz)
    a, t = task_attempts, tasks
    d = _day_table(bounds)
    attempt_query = (
        select(d.c.day_index, func.count(), func.sum(case((a.c.outcome == OK, 1), else_=0)))
        .select_from(a.join(d, and_(a.c.started_at >= d.c.day_start, a.c.started_at < d.c.day_end)))
        .where(a.c.outcome.is_not(None), a.c.started_at >= bounds[0], a.c.started_at < bounds[-1])
        .group_by(d.c.day_index)
    )
    succeeded = case((t.c.state == "succeeded", t.c.device_id), else_=None)
    read_query = (
        select(
            d.c.day_index,
            func.count(t.c.device_id.distinct()),
            func.count(succeeded.distinct()),
        )
        .select_from(
            t.join(jobs, t.c.job_id == jobs.c.id).join(
                d, and_(t.c.finished_at >= d.c.day_start, t.c.finished_at < d.c.day_end)
            )
        )
        .where(
            t.c.finished_at >= bounds[0],
            t.c.finished_at < bounds[-1],
            or_(*(jobs.c.command.like(prefix + "%") for prefix in READ_COMMAND_PREFIXES)),
        )
        .group_by(d.c.day_index)
    )
    with reading(db) as conn:
        comm = {k: (int(n), int(ok or 0)) for k, n, ok in conn.execute(attempt_query)}
        reads = {k: (int(n), int(ok or 0)) for k, n, ok in conn.execute(read_query)}
        completeness: dict[date, float | None] = {}
        if reading_type is not None:
            from mdm.kpi import read_success

            result = read_success(
                conn, reading_type, first_day, last_day, zone=zone, per_device=False
            )
            completeness = {row.day: row.rate for row in result.overall}
    return [
        DayKpi(
            day,
            *comm.get(k, (0, 0)),
            *reads.get(k, (0, 0)),
            completeness=completeness.get(day),
        )
        for k, day in enumerate(days)
    ]


@dataclass(frozen=True)
class SilentMeter:
    mrid: str
    last_success: datetime | None  # the end of the last successful session; None: never

    def as_dict(self) -> dict[str, Any]:
        last = self.last_success
        return {"mrid": self.mrid, "last_success": last.isoformat() if last else None}


def _utc(value: datetime | str | None) -> datetime | None:
    # An aggregate loses the column type: SQLite returns MAX(ts) as naive text.
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def silent_meters(
    db: Store | Connection,
    days: int,
    *,
    now: datetime | None = None,
    statuses: Sequence[str] = ("active",),
    limit: int | None = None,
) -> list[SilentMeter]:
    """Devices (of the given statuses) without a successful session that started in the last
    ``days`` days, ordered by mRID, with the end of their last successful session."""
    if days < 1:
        raise _refuse("days must be at least 1")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    a, t, dv = task_attempts, tasks, devices
    ok_of_device = and_(t.c.device_id == dv.c.id, a.c.task_id == t.c.id, a.c.outcome == OK)
    recent = exists().where(ok_of_device, a.c.started_at >= cutoff)
    last = select(func.max(a.c.finished_at)).where(ok_of_device).scalar_subquery()
    query = (
        select(dv.c.mrid, last).where(dv.c.status.in_(list(statuses)), ~recent).order_by(dv.c.mrid)
    )
    if limit is not None:
        query = query.limit(limit)
    with reading(db) as conn:
        return [SilentMeter(mrid, _utc(when)) for mrid, when in conn.execute(query)]


__all__ = [
    "GROUPINGS",
    "CommStats",
    "DayKpi",
    "SilentMeter",
    "comm_statistics",
    "daily_kpis",
    "silent_meters",
]
