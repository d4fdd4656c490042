"""The configuration audit log: who changed which attribute of which object, when, from what
to what. Written in the same transaction as the change it records."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, insert, select

from mdm.database import Store, reading
from mdm.schema import WHO_LENGTH, audit_log

CREATED = "(created)"


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    who: str
    object_type: str
    object_id: str
    attribute: str
    old_value: str | None
    new_value: str | None
    note: str | None = None


def as_text(value: Any) -> str | None:
    """How a value is written in the log: None stays NULL, datetimes in ISO 8601 UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal, str)):
        return str(value)
    return json.dumps(value, sort_keys=True, default=str)


def check_who(who: str) -> str:
    if not isinstance(who, str) or not who.strip() or len(who) > WHO_LENGTH:
        raise ValueError(f"who must name the user or process (1..{WHO_LENGTH} characters)")
    return who


def record(
    conn: Connection,
    *,
    who: str,
    object_type: str,
    object_id: str,
    changes: Iterable[tuple[str, Any, Any]],
    at: datetime | None = None,
    note: str | None = None,
) -> int:
    """Log ``(attribute, old, new)`` changes of one object; returns the number of entries."""
    check_who(who)
    at = at or datetime.now(UTC)
    rows = [
        {
            "at": at,
            "who": who,
            "object_type": object_type,
            "object_id": object_id,
            "attribute": attribute,
            "old_value": as_text(old),
            "new_value": as_text(new),
            "note": note,
        }
        for attribute, old, new in changes
    ]
    if rows:
        conn.execute(insert(audit_log), rows)
    return len(rows)


def record_created(
    conn: Connection,
    *,
    who: str,
    object_type: str,
    objects: Mapping[str, Mapping[str, Any]],
    at: datetime | None = None,
    note: str | None = None,
) -> None:
    """One entry per new object (``object id -> attributes``): attribute ``(created)``, new
    value the JSON of its non-empty attributes."""
    check_who(who)
    at = at or datetime.now(UTC)
    rows = []
    for object_id, attributes in objects.items():
        shown = {k: as_text(v) for k, v in attributes.items() if v is not None}
        rows.append(
            {
                "at": at,
                "who": who,
                "object_type": object_type,
                "object_id": object_id,
                "attribute": CREATED,
                "old_value": None,
                "new_value": json.dumps(shown, sort_keys=True),
                "note": note,
            }
        )
    if rows:
        conn.execute(insert(audit_log), rows)


def entries(
    db: Store | Connection,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    since: datetime | None = None,
) -> list[AuditEntry]:
    """Log entries, oldest first."""
    return list(iter_entries(db, object_type=object_type, object_id=object_id, since=since))


def iter_entries(
    db: Store | Connection,
    *,
    object_type: str | None = None,
    object_id: str | None = None,
    since: datetime | None = None,
) -> Iterator[AuditEntry]:
    query = select(
        audit_log.c.at,
        audit_log.c.who,
        audit_log.c.object_type,
        audit_log.c.object_id,
        audit_log.c.attribute,
        audit_log.c.old_value,
        audit_log.c.new_value,
        audit_log.c.note,
    ).order_by(audit_log.c.at, audit_log.c.id)
    if object_type is not None:
        query = query.where(audit_log.c.object_type == object_type)
    if object_id is not None:
        query = query.where(audit_log.c.object_id == object_id)
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    with reading(db) as conn:
        for row in conn.execute(query):
            yield AuditEntry(*row)
