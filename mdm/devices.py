"""The device registry: devices, their alternative names, usage points and device groups.

Every change is written with an audit entry (:mod:`mdm.audit`) in the same transaction.
Uniqueness (mRIDs, names per name type, group names) is the database's to enforce; a clash
comes back as an :class:`MdmError` with the database's reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from cim.errors import ErrorCode
from mdm.audit import check_who, record, record_created
from mdm.database import Store, reading, transaction
from mdm.errors import MdmError
from mdm.normalise import Refused, zone
from mdm.schema import (
    DEVICE_KINDS,
    DEVICE_STATUSES,
    device_group_members,
    device_groups,
    device_names,
    devices,
    usage_points,
)

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Device:
    mrid: str
    kind: str = "electricity"
    serial: str | None = None
    name: str | None = None
    protocol: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    firmware_version: str | None = None
    status: str = "active"
    latitude: float | None = None
    longitude: float | None = None
    usage_point: str | None = None  # usage point mRID
    time_zone: str = "UTC"  # IANA zone of the meter's clock


@dataclass(frozen=True, slots=True)
class UsagePoint:
    mrid: str
    kind: str = "electricity"
    name: str | None = None
    latitude: float | None = None
    longitude: float | None = None


DEVICE_ATTRIBUTES = tuple(f.name for f in dataclasses.fields(Device) if f.name != "mrid")
_DEVICE_FIELDS = ("mrid", *DEVICE_ATTRIBUTES)
USAGE_POINT_ATTRIBUTES = tuple(f.name for f in dataclasses.fields(UsagePoint) if f.name != "mrid")


def _device_values(device: Device) -> dict[str, Any]:
    """``dataclasses.asdict`` for a flat Device, without its deep copies (bulk registration)."""
    return {name: getattr(device, name) for name in _DEVICE_FIELDS}


@contextmanager
def _writing(db: Store | Connection) -> Iterator[Connection]:
    try:
        with transaction(db) as conn:
            yield conn
    except IntegrityError as exc:
        raise MdmError(ErrorCode.BAD_VALUE, f"refused by the database: {exc.orig}") from exc


def _check(
    kind: str | None = None, status: str | None = None, time_zone: str | None = None
) -> None:
    if kind is not None and kind not in DEVICE_KINDS:
        raise MdmError(ErrorCode.BAD_VALUE, f"kind {kind!r} is not one of {DEVICE_KINDS}")
    if status is not None and status not in DEVICE_STATUSES:
        raise MdmError(ErrorCode.BAD_VALUE, f"status {status!r} is not one of {DEVICE_STATUSES}")
    if time_zone is not None:
        try:
            zone(time_zone)
        except Refused as exc:
            raise MdmError(exc.error, exc.reason) from None


# --- usage points -------------------------------------------------------------------------


def create_usage_point(
    db: Store | Connection, point: UsagePoint, *, who: str, note: str | None = None
) -> int:
    check_who(who)
    _check(kind=point.kind)
    now = datetime.now(UTC)
    with _writing(db) as conn:
        values = dataclasses.asdict(point)
        id_ = conn.execute(
            insert(usage_points)
            .values(**values, created_at=now, updated_at=now)
            .returning(usage_points.c.id)
        ).scalar_one()
        record_created(
            conn,
            who=who,
            object_type="usage_point",
            objects={point.mrid: values},
            at=now,
            note=note,
        )
    return id_


def update_usage_point(
    db: Store | Connection, mrid: str, *, who: str, note: str | None = None, **changes: Any
) -> dict[str, tuple[Any, Any]]:
    check_who(who)
    _check_names(changes, USAGE_POINT_ATTRIBUTES)
    _check(kind=changes.get("kind"))
    with _writing(db) as conn:
        row = conn.execute(select(usage_points).where(usage_points.c.mrid == mrid)).first()
        if row is None:
            raise MdmError(ErrorCode.UNKNOWN_USAGE_POINT, f"no usage point {mrid!r}")
        diff = {k: (getattr(row, k), v) for k, v in changes.items() if getattr(row, k) != v}
        if diff:
            now = datetime.now(UTC)
            conn.execute(
                update(usage_points)
                .where(usage_points.c.id == row.id)
                .values(**{k: new for k, (_, new) in diff.items()}, updated_at=now)
            )
            record(
                conn,
                who=who,
                object_type="usage_point",
                object_id=mrid,
                at=now,
                note=note,
                changes=[(k, old, new) for k, (old, new) in diff.items()],
            )
    return diff


def get_usage_point(db: Store | Connection, mrid: str) -> UsagePoint:
    with reading(db) as conn:
        row = conn.execute(select(usage_points).where(usage_points.c.mrid == mrid)).first()
    if row is None:
        raise MdmError(ErrorCode.UNKNOWN_USAGE_POINT, f"no usage point {mrid!r}")
    return UsagePoint(mrid=row.mrid, **{k: getattr(row, k) for k in USAGE_POINT_ATTRIBUTES})


def _usage_point_id(conn: Connection, mrid: str | None) -> int | None:
    if mrid is None:
        return None
    id_ = conn.execute(select(usage_points.c.id).where(usage_points.c.mrid == mrid)).scalar()
    if id_ is None:
        raise MdmError(ErrorCode.UNKNOWN_USAGE_POINT, f"no usage point {mrid!r}")
    return id_


def _usage_point_ids(conn: Connection, mrids: Iterable[str]) -> dict[str, int]:
    """``mrid -> id`` of usage points, in chunked queries; an unknown one is refused."""
    wanted = sorted(mrids)
    ids: dict[str, int] = {}
    for start in range(0, len(wanted), _CHUNK):
        query = select(usage_points.c.mrid, usage_points.c.id).where(
            usage_points.c.mrid.in_(wanted[start : start + _CHUNK])
        )
        ids.update({mrid: id_ for mrid, id_ in conn.execute(query)})
    for mrid in wanted:
        if mrid not in ids:
            raise MdmError(ErrorCode.UNKNOWN_USAGE_POINT, f"no usage point {mrid!r}")
    return ids


# --- devices ------------------------------------------------------------------------------


def create_device(
    db: Store | Connection, device: Device, *, who: str, note: str | None = None
) -> int:
    """Register a device; returns its id."""
    return create_devices(db, [device], who=who, note=note)[device.mrid]


def create_devices(
    db: Store | Connection, new: Iterable[Device], *, who: str, note: str | None = None
) -> dict[str, int]:
    """Register many devices in one transaction; ``mrid -> id``."""
    check_who(who)
    batch = list(new)
    for device in batch:
        _check(kind=device.kind, status=device.status, time_zone=device.time_zone)
    now = datetime.now(UTC)
    with _writing(db) as conn:
        point_ids = _usage_point_ids(conn, {d.usage_point for d in batch if d.usage_point})
        rows = []
        for device in batch:
            values = _device_values(device)
            values["usage_point_id"] = point_ids.get(values.pop("usage_point"))
            rows.append({**values, "created_at": now, "updated_at": now})
        if rows:
            conn.execute(insert(devices), rows)
        record_created(
            conn,
            who=who,
            object_type="device",
            at=now,
            note=note,
            objects={d.mrid: _device_values(d) for d in batch},
        )
        ids = device_ids(conn, [d.mrid for d in batch])
    return {mrid: id_ for mrid, (id_, _) in ids.items()}


def update_device(
    db: Store | Connection, mrid: str, *, who: str, note: str | None = None, **changes: Any
) -> dict[str, tuple[Any, Any]]:
    """Change attributes of a device (``usage_point`` by mRID); ``attribute -> (old, new)``
    for what actually changed, each with an audit entry."""
    check_who(who)
    _check_names(changes, DEVICE_ATTRIBUTES)
    _check(
        kind=changes.get("kind"), status=changes.get("status"), time_zone=changes.get("time_zone")
    )
    with _writing(db) as conn:
        current = _get_device(conn, mrid)
        diff = {k: (getattr(current, k), v) for k, v in changes.items() if getattr(current, k) != v}
        if diff:
            now = datetime.now(UTC)
            values = {k: new for k, (_, new) in diff.items()}
            if "usage_point" in values:
                values["usage_point_id"] = _usage_point_id(conn, values.pop("usage_point"))
            conn.execute(
                update(devices).where(devices.c.mrid == mrid).values(**values, updated_at=now)
            )
            record(
                conn,
                who=who,
                object_type="device",
                object_id=mrid,
                at=now,
                note=note,
                changes=[(k, old, new) for k, (old, new) in diff.items()],
            )
    return diff


def get_device(db: Store | Connection, mrid: str) -> Device:
    with reading(db) as conn:
        return _get_device(conn, mrid)


def _get_device(conn: Connection, mrid: str) -> Device:
    query = (
        select(devices, usage_points.c.mrid.label("usage_point"))
        .select_from(devices.outerjoin(usage_points))
        .where(devices.c.mrid == mrid)
    )
    row = conn.execute(query).first()
    if row is None:
        raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no device {mrid!r}", key=mrid)
    return Device(mrid=mrid, **{k: getattr(row, k) for k in DEVICE_ATTRIBUTES})


def device_ids(conn: Connection, mrids: Sequence[str]) -> dict[str, tuple[int, str]]:
    """``mrid -> (id, time zone)`` for the registered ones among ``mrids``."""
    wanted = list(dict.fromkeys(mrids))
    out: dict[str, tuple[int, str]] = {}
    for start in range(0, len(wanted), _CHUNK):
        query = select(devices.c.mrid, devices.c.id, devices.c.time_zone).where(
            devices.c.mrid.in_(wanted[start : start + _CHUNK])
        )
        out.update({mrid: (id_, tz) for mrid, id_, tz in conn.execute(query)})
    return out


def find_device(db: Store | Connection, name: str, name_type: str | None = None) -> str:
    """The mRID of the device known as ``name``: its mRID or name, or an alternative name
    (of ``name_type`` when given)."""
    with reading(db) as conn:
        if name_type is None:
            mrid = (
                conn.execute(
                    select(devices.c.mrid).where(
                        (devices.c.mrid == name) | (devices.c.name == name)
                    )
                )
                .scalars()
                .first()
            )
            if mrid is not None:
                return mrid
        query = select(devices.c.mrid).join(device_names).where(device_names.c.name == name)
        if name_type is not None:
            query = query.where(device_names.c.name_type == name_type)
        found = conn.execute(query).scalars().all()
    if len(found) != 1:
        problem = "no device" if not found else f"{len(found)} devices"
        raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"{problem} known as {name!r}", key=name)
    return found[0]


# --- alternative names --------------------------------------------------------------------


def add_name(
    db: Store | Connection,
    mrid: str,
    name_type: str,
    name: str,
    *,
    who: str,
    note: str | None = None,
) -> None:
    """Give a device an alternative name; a name is unique within its name type."""
    check_who(who)
    with _writing(db) as conn:
        device_id = _device_id(conn, mrid)
        conn.execute(
            insert(device_names).values(device_id=device_id, name_type=name_type, name=name)
        )
        record(
            conn,
            who=who,
            object_type="device",
            object_id=mrid,
            note=note,
            changes=[(f"name[{name_type}]", None, name)],
        )


def remove_name(
    db: Store | Connection,
    mrid: str,
    name_type: str,
    name: str,
    *,
    who: str,
    note: str | None = None,
) -> None:
    check_who(who)
    with _writing(db) as conn:
        device_id = _device_id(conn, mrid)
        gone = conn.execute(
            delete(device_names).where(
                device_names.c.device_id == device_id,
                device_names.c.name_type == name_type,
                device_names.c.name == name,
            )
        ).rowcount
        if not gone:
            raise MdmError(ErrorCode.BAD_VALUE, f"device {mrid!r} has no {name_type} {name!r}")
        record(
            conn,
            who=who,
            object_type="device",
            object_id=mrid,
            note=note,
            changes=[(f"name[{name_type}]", name, None)],
        )


def names(db: Store | Connection, mrid: str) -> list[tuple[str, str]]:
    """(name type, name) of a device, sorted."""
    with reading(db) as conn:
        device_id = _device_id(conn, mrid)
        rows = conn.execute(
            select(device_names.c.name_type, device_names.c.name)
            .where(device_names.c.device_id == device_id)
            .order_by(device_names.c.name_type, device_names.c.name)
        )
        return [(t, n) for t, n in rows]


def _device_id(conn: Connection, mrid: str) -> int:
    id_ = conn.execute(select(devices.c.id).where(devices.c.mrid == mrid)).scalar()
    if id_ is None:
        raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no device {mrid!r}", key=mrid)
    return id_


# --- groups -------------------------------------------------------------------------------


def create_group(
    db: Store | Connection,
    name: str,
    *,
    who: str,
    description: str | None = None,
    parent: str | None = None,
    note: str | None = None,
) -> int:
    """A device group (names are unique); ``parent`` makes it part of a hierarchy."""
    check_who(who)
    now = datetime.now(UTC)
    with _writing(db) as conn:
        parent_id = _group_id(conn, parent) if parent is not None else None
        id_ = conn.execute(
            insert(device_groups)
            .values(name=name, description=description, parent_id=parent_id, created_at=now)
            .returning(device_groups.c.id)
        ).scalar_one()
        record_created(
            conn,
            who=who,
            object_type="device_group",
            at=now,
            note=note,
            objects={name: {"description": description, "parent": parent}},
        )
    return id_


def add_to_group(
    db: Store | Connection, group: str, mrids: Iterable[str], *, who: str, note: str | None = None
) -> int:
    """Add devices to a group (those already members are skipped); returns how many joined."""
    check_who(who)
    wanted = list(dict.fromkeys(mrids))
    now = datetime.now(UTC)
    with _writing(db) as conn:
        group_id = _group_id(conn, group)
        ids = _known_devices(conn, wanted)
        present = set(
            conn.execute(
                select(device_group_members.c.device_id).where(
                    device_group_members.c.group_id == group_id
                )
            ).scalars()
        )
        new = [mrid for mrid in wanted if ids[mrid] not in present]
        if new:
            conn.execute(
                insert(device_group_members),
                [{"group_id": group_id, "device_id": ids[mrid], "added_at": now} for mrid in new],
            )
            record(
                conn,
                who=who,
                object_type="device_group",
                object_id=group,
                at=now,
                note=note,
                changes=[("member", None, mrid) for mrid in new],
            )
    return len(new)


def remove_from_group(
    db: Store | Connection, group: str, mrids: Iterable[str], *, who: str, note: str | None = None
) -> int:
    check_who(who)
    wanted = list(dict.fromkeys(mrids))
    now = datetime.now(UTC)
    with _writing(db) as conn:
        group_id = _group_id(conn, group)
        ids = _known_devices(conn, wanted)
        removed = []
        for mrid in wanted:
            gone = conn.execute(
                delete(device_group_members).where(
                    device_group_members.c.group_id == group_id,
                    device_group_members.c.device_id == ids[mrid],
                )
            ).rowcount
            if gone:
                removed.append(mrid)
        record(
            conn,
            who=who,
            object_type="device_group",
            object_id=group,
            at=now,
            note=note,
            changes=[("member", mrid, None) for mrid in removed],
        )
    return len(removed)


def group_members(db: Store | Connection, group: str, *, recursive: bool = False) -> list[str]:
    """mRIDs of the group's devices (and of its sub-groups' with ``recursive``), sorted."""
    with reading(db) as conn:
        group_ids = [_group_id(conn, group)]
        if recursive:
            frontier = list(group_ids)
            while frontier:
                children = (
                    conn.execute(
                        select(device_groups.c.id).where(device_groups.c.parent_id.in_(frontier))
                    )
                    .scalars()
                    .all()
                )
                frontier = [c for c in children if c not in group_ids]
                group_ids.extend(frontier)
        query = (
            select(devices.c.mrid)
            .distinct()
            .join(device_group_members, device_group_members.c.device_id == devices.c.id)
            .where(device_group_members.c.group_id.in_(group_ids))
            .order_by(devices.c.mrid)
        )
        return list(conn.execute(query).scalars())


def _group_id(conn: Connection, name: str) -> int:
    id_ = conn.execute(select(device_groups.c.id).where(device_groups.c.name == name)).scalar()
    if id_ is None:
        raise MdmError(ErrorCode.BAD_VALUE, f"no device group {name!r}")
    return id_


def _known_devices(conn: Connection, mrids: Sequence[str]) -> dict[str, int]:
    ids = {mrid: id_ for mrid, (id_, _) in device_ids(conn, mrids).items()}
    for mrid in mrids:
        if mrid not in ids:
            raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no device {mrid!r}", key=mrid)
    return ids


def _check_names(changes: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(changes) - set(allowed))
    if unknown:
        raise MdmError(ErrorCode.BAD_VALUE, f"unknown attribute(s): {', '.join(unknown)}")
