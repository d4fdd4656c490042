"""End device events (alarms, last gasp, tamper, ...): stored once, read back by window.

An event is identified by device, time and EndDeviceEventType code; sending it again stores
nothing (the meter's event log is usually read more than once).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, select, tuple_
from sqlalchemy.exc import IntegrityError

from cim.codelists.enddevicetype import EndDeviceTypeCode
from cim.errors import CimError, ErrorCode
from mdm.database import Store, reading, transaction
from mdm.devices import device_ids
from mdm.errors import MdmError
from mdm.schema import devices as device_table
from mdm.schema import events

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class EndDeviceEvent:
    device: str  # mRID
    event_type: str  # EndDeviceEventType code "type.domain.subDomain.eventOrAction"
    time: datetime  # aware
    details: Mapping[str, Any] | None = None  # stored as JSON
    source_task: str | None = None


def store_events(
    db: Store | Connection, batch: Iterable[EndDeviceEvent], *, received_at: datetime | None = None
) -> int:
    """Store the events not stored yet, all or none; returns how many were new."""
    items = list(batch)
    if not items:
        return 0
    received_at = received_at or datetime.now(UTC)
    rows = []
    with transaction(db) as conn:
        ids = device_ids(conn, [e.device for e in items])
        seen: set[tuple[int, datetime, str]] = set()
        for index, event in enumerate(items):
            row = _row(index, event, ids, received_at)
            key = (row["device_id"], row["ts"], row["event_type"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
        stored = _stored(conn, list(seen))
        new = [r for r in rows if (r["device_id"], r["ts"], r["event_type"]) not in stored]
        if new:
            try:
                conn.execute(events.insert(), new)
            except IntegrityError as exc:  # a concurrent writer stored some of them
                raise MdmError(ErrorCode.STORAGE, f"refused by the database: {exc.orig}") from exc
    return len(new)


def _row(
    index: int, event: EndDeviceEvent, ids: Mapping[str, tuple[int, str]], received_at: datetime
) -> dict[str, Any]:
    key = f"device {event.device!r}, {event.event_type}"
    if event.device not in ids:
        raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no device {event.device!r}", row=index, key=key)
    try:
        code = EndDeviceTypeCode.parse(event.event_type, strict=False).code
    except CimError as exc:
        raise MdmError(exc.error, exc.reason, row=index, key=key) from None
    if not isinstance(event.time, datetime) or event.time.utcoffset() is None:
        raise MdmError(
            ErrorCode.BAD_DATETIME, "event time must be an aware datetime", row=index, key=key
        )
    details = (
        json.dumps(dict(event.details), sort_keys=True, default=str) if event.details else None
    )
    return {
        "device_id": ids[event.device][0],
        "event_type": code,
        "ts": event.time.astimezone(UTC),
        "details": details,
        "source_task": event.source_task,
        "received_at": received_at,
    }


def _stored(
    conn: Connection, keys: Sequence[tuple[int, datetime, str]]
) -> set[tuple[int, datetime, str]]:
    out: set[tuple[int, datetime, str]] = set()
    key = tuple_(events.c.device_id, events.c.ts, events.c.event_type)
    for start in range(0, len(keys), _CHUNK):
        query = select(events.c.device_id, events.c.ts, events.c.event_type).where(
            key.in_(keys[start : start + _CHUNK])
        )
        out.update((d, ts, t) for d, ts, t in conn.execute(query))
    return out


def read_events(
    db: Store | Connection, devices: Sequence[str], start: datetime, end: datetime
) -> Iterator[EndDeviceEvent]:
    """Events of the devices in ``(start, end]``, by device mRID then time."""
    query = (
        select(
            device_table.c.mrid,
            events.c.event_type,
            events.c.ts,
            events.c.details,
            events.c.source_task,
        )
        .join(device_table, device_table.c.id == events.c.device_id)
        .where(device_table.c.mrid.in_(list(devices)), events.c.ts > start, events.c.ts <= end)
        .order_by(device_table.c.mrid, events.c.ts, events.c.event_type)
    )
    with reading(db) as conn:
        for mrid, code, ts, details, task in conn.execute(query):
            yield EndDeviceEvent(mrid, code, ts, json.loads(details) if details else None, task)
