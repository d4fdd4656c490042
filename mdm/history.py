"""Versions of stored values: nothing read is ever deleted.

Every value has a version number. The current one is in ``readings``; each superseded one is
in ``reading_history`` with when it was recorded, when it was superseded, by whom and why.
So the store as it was at any moment T is: the current rows recorded at or before T, plus
the history rows recorded at or before T and superseded after it (``as_of``). A past version
can be made current again (``restore``): it becomes a new version (source ``edited``, the old
version's value, qualities and status), the version it replaces moves to the history, and
the audit log records who did it and why.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Connection, insert, select, update

from cim.errors import ErrorCode
from mdm.audit import check_who, record
from mdm.database import Store, reading, transaction
from mdm.devices import device_ids
from mdm.errors import MdmError
from mdm.reading_types import lookup_reading_types
from mdm.readings import read
from mdm.schema import (
    SOURCE_EDITED,
    qualities_from_text,
    qualities_text,
    reading_history,
    readings,
)
from mdm.series import Series

RESTORED = "restored"


@dataclass(frozen=True, slots=True)
class Version:
    version: int
    value: Decimal | None
    qualities: frozenset[str]
    status: int
    source: str
    recorded_at: datetime
    superseded_at: datetime | None = None  # None: the current version
    superseded_by: str | None = None
    reason: str | None = None
    note: str | None = None

    @property
    def is_current(self) -> bool:
        return self.superseded_at is None


def as_of(
    db: Store | Connection,
    devices: Sequence[str],
    reading_types: Sequence[str],
    start: datetime,
    end: datetime,
    at: datetime,
) -> Iterator[Series]:
    """The values of the window (``(start, end]``) as the store held them at ``at``."""
    return read(db, devices, reading_types, start, end, as_of=at)


def versions(db: Store | Connection, device: str, reading_type: str, ts: datetime) -> list[Version]:
    """Every version of one value, oldest first (the last one is current)."""
    with reading(db) as conn:
        key = _key(conn, device, reading_type)
        if key is None:
            return []
        return _versions(conn, *key, ts)


def restore(
    db: Store | Connection,
    device: str,
    reading_type: str,
    ts: datetime,
    version: int,
    *,
    who: str,
    reason: str = RESTORED,
    note: str | None = None,
) -> int:
    """Make ``version`` of a value current again; returns the new version number."""
    check_who(who)
    now = datetime.now(UTC)
    object_id = f"{device}/{reading_type}/{ts.astimezone(UTC).isoformat()}"
    with transaction(db) as conn:
        key = _key(conn, device, reading_type)
        if key is None:
            raise MdmError(ErrorCode.BAD_VALUE, "no such value", key=object_id)
        device_id, rt_id = key
        all_versions = _versions(conn, device_id, rt_id, ts, lock=True)
        if not all_versions:
            raise MdmError(ErrorCode.BAD_VALUE, "no stored value", key=object_id)
        current = all_versions[-1]
        wanted = next((v for v in all_versions if v.version == version), None)
        if wanted is None or wanted.is_current:
            problem = "is the current one" if wanted else "does not exist"
            raise MdmError(ErrorCode.BAD_VALUE, f"version {version} {problem}", key=object_id)
        new_version = current.version + 1
        conn.execute(
            insert(reading_history).values(
                device_id=device_id,
                reading_type_id=rt_id,
                ts=ts,
                version=current.version,
                value=current.value,
                qualities=qualities_text(current.qualities),
                status=current.status,
                source=current.source,
                recorded_at=current.recorded_at,
                superseded_at=now,
                superseded_by=who,
                reason=reason,
                note=note,
            )
        )
        conn.execute(
            update(readings)
            .where(*_where(readings, device_id, rt_id, ts))
            .values(
                value=wanted.value,
                qualities=qualities_text(wanted.qualities),
                status=wanted.status,
                version=new_version,
                source=SOURCE_EDITED,
                recorded_at=now,
            )
        )
        record(
            conn,
            who=who,
            object_type="reading",
            object_id=object_id,
            at=now,
            note=f"restored version {version}" + (f": {note}" if note else ""),
            changes=[
                ("version", current.version, new_version),
                ("value", current.value, wanted.value),
            ],
        )
    return new_version


def _key(conn: Connection, device: str, reading_type: str) -> tuple[int, int] | None:
    devices = device_ids(conn, [device])
    if device not in devices:
        raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no device {device!r}", key=device)
    rt = lookup_reading_types(conn, [reading_type])
    if reading_type not in rt:
        return None
    return devices[device][0], rt[reading_type]


def _where(table, device_id: int, rt_id: int, ts: datetime) -> list:  # type: ignore[no-untyped-def]
    return [table.c.device_id == device_id, table.c.reading_type_id == rt_id, table.c.ts == ts]


def _versions(
    conn: Connection, device_id: int, rt_id: int, ts: datetime, *, lock: bool = False
) -> list[Version]:
    h, r = reading_history, readings
    query = select(
        r.c.version, r.c.value, r.c.qualities, r.c.status, r.c.source, r.c.recorded_at
    ).where(*_where(r, device_id, rt_id, ts))
    if lock:
        query = query.with_for_update()
    current = conn.execute(query).first()
    past = conn.execute(
        select(
            h.c.version,
            h.c.value,
            h.c.qualities,
            h.c.status,
            h.c.source,
            h.c.recorded_at,
            h.c.superseded_at,
            h.c.superseded_by,
            h.c.reason,
            h.c.note,
        )
        .where(*_where(h, device_id, rt_id, ts))
        .order_by(h.c.version)
    ).all()
    out = [Version(row[0], row[1], qualities_from_text(row[2]), *row[3:]) for row in past]
    if current is not None:
        out.append(Version(current[0], current[1], qualities_from_text(current[2]), *current[3:]))
    return out
