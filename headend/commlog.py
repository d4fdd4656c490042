"""The per-communication debug log: the frames (in hex) exchanged with a meter, switched on
for a meter or a job until a given time, and bounded in size.

Switching on and off: :func:`enable` / :func:`disable` (table ``comm_debug``). A worker asks
:func:`recorder_for` before an attempt; when a live switch covers the meter or the job it
gets a :class:`FrameRecorder`, which it makes the task's frame observer for the driver
(:func:`observing`: the DLMS driver calls it for every frame it sends or receives) and saves
after the attempt (:meth:`FrameRecorder.save`). Recording costs a list append per frame; the
database is written once per attempt, never from the driver's path.

Bounds, so a debug switch left on cannot fill the database:

- per attempt: at most ``max_frames`` frames (the switch's setting, default 500), each cut to
  ``max_frame_bytes`` (default 2048; ``length`` keeps the real size); frames beyond are
  counted in :attr:`FrameRecorder.dropped`, not stored;
- per meter: at most ``meter_cap`` rows (default 5000) and in total ``global_cap`` rows
  (default 200,000): each save prunes the oldest rows beyond them;
- a switch lasts at most ``MAX_DURATION`` (7 days) and is ignored once expired.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, insert, or_, select, update

from cim.errors import CimError, ErrorCode
from drivers.base import frame_observer
from headend.ops_schema import comm_debug, comm_frames
from mdm.audit import check_who, record
from mdm.database import Store, reading, transaction
from mdm.schema import MRID_LENGTH

DEFAULT_MAX_FRAMES = 500
MAX_FRAMES_LIMIT = 10_000
MAX_FRAME_BYTES = 2048
METER_CAP = 5000
GLOBAL_CAP = 200_000
DEFAULT_DURATION = timedelta(hours=1)
MAX_DURATION = timedelta(days=7)
_DIRECTIONS = {
    "tx": "tx",
    "sent": "tx",
    "send": "tx",
    "out": "tx",
    "rx": "rx",
    "received": "rx",
    "receive": "rx",
    "in": "rx",
}


def _refuse(reason: str) -> CimError:
    return CimError(ErrorCode.BAD_VALUE, reason)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class DebugSwitch:
    scope: str  # meter | job
    target: str
    until: datetime
    max_frames: int
    created_by: str
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "target": self.target,
            "until": self.until.isoformat(),
            "max_frames": self.max_frames,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }


def _scope(meter: str | None, job: str | None) -> tuple[str, str]:
    if (meter is None) == (job is None):
        raise _refuse("debug logging is switched on for one meter or one job")
    scope, target = ("meter", meter) if meter is not None else ("job", job)
    if not isinstance(target, str) or not target or len(target) > MRID_LENGTH:
        raise _refuse(f"the {scope} to debug must be named (1..{MRID_LENGTH} characters)")
    return scope, target


def enable(
    store: Store | Connection,
    *,
    meter: str | None = None,
    job: str | None = None,
    duration: timedelta = DEFAULT_DURATION,
    max_frames: int = DEFAULT_MAX_FRAMES,
    who: str,
    now: datetime | None = None,
) -> DebugSwitch:
    """Record frames of ``meter`` (an mRID) or of ``job`` (an id) for ``duration`` (at most
    MAX_DURATION), at most ``max_frames`` per attempt. Enabling again replaces the switch."""
    scope, target = _scope(meter, job)
    check_who(who)
    if not timedelta(0) < duration <= MAX_DURATION:
        raise _refuse(f"debug logging lasts more than 0 and at most {MAX_DURATION}")
    if not 1 <= max_frames <= MAX_FRAMES_LIMIT:
        raise _refuse(f"max_frames must be 1..{MAX_FRAMES_LIMIT}")
    now = now or _utcnow()
    row = {
        "scope": scope,
        "target": target,
        "until": now + duration,
        "max_frames": max_frames,
        "created_by": who,
        "created_at": now,
    }
    with transaction(store) as conn:
        if scope == "meter":
            from mdm.devices import device_ids

            if not device_ids(conn, [target]):
                raise CimError(ErrorCode.UNKNOWN_DEVICE, f"no device {target!r}")
        changed = conn.execute(
            update(comm_debug)
            .where(comm_debug.c.scope == scope, comm_debug.c.target == target)
            .values(**row)
        ).rowcount
        if not changed:
            conn.execute(insert(comm_debug).values(**row))
        record(
            conn,
            who=who,
            object_type="comm_debug",
            object_id=f"{scope}:{target}",
            changes=[("until", None, row["until"])],
            at=now,
        )
    return DebugSwitch(**row)


def disable(
    store: Store | Connection,
    *,
    meter: str | None = None,
    job: str | None = None,
    who: str,
    now: datetime | None = None,
) -> bool:
    """Switch debug logging off; False when it was not on. Recorded frames stay."""
    scope, target = _scope(meter, job)
    with transaction(store) as conn:
        gone = conn.execute(
            delete(comm_debug).where(comm_debug.c.scope == scope, comm_debug.c.target == target)
        ).rowcount
        if gone:
            record(
                conn,
                who=who,
                object_type="comm_debug",
                object_id=f"{scope}:{target}",
                changes=[("until", "on", None)],
                at=now or _utcnow(),
            )
    return bool(gone)


def switches(
    store: Store | Connection, *, now: datetime | None = None, expired: bool = False
) -> list[DebugSwitch]:
    """The debug switches that are on (and, with ``expired``, those that ran out)."""
    query = select(comm_debug).order_by(comm_debug.c.scope, comm_debug.c.target)
    if not expired:
        query = query.where(comm_debug.c.until > (now or _utcnow()))
    with reading(store) as conn:
        return [
            DebugSwitch(r.scope, r.target, r.until, r.max_frames, r.created_by, r.created_at)
            for r in conn.execute(query)
        ]


def debug_limit(
    store: Store | Connection, mrid: str, job_id: str | None = None, *, now: datetime | None = None
) -> int | None:
    """The frames per attempt to record for this meter and job, None when logging is off."""
    c = comm_debug.c
    targets = [(c.scope == "meter") & (c.target == mrid)]
    if job_id is not None:
        targets.append((c.scope == "job") & (c.target == job_id))
    query = select(func.max(c.max_frames)).where(or_(*targets), c.until > (now or _utcnow()))
    with reading(store) as conn:
        value = conn.execute(query).scalar()
    return int(value) if value is not None else None


@dataclass
class FrameRecorder:
    """Collects one attempt's frames in memory; :meth:`record` is the driver's hook."""

    mrid: str
    job_id: str | None = None
    task_id: int | None = None
    attempt: int | None = None
    max_frames: int = DEFAULT_MAX_FRAMES
    max_frame_bytes: int = MAX_FRAME_BYTES
    clock: Callable[[], datetime] = _utcnow
    frames: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    saved: int = 0

    def record(self, direction: str, frame: bytes) -> None:
        """One frame sent ("tx") or received ("rx"). Never raises into the driver: frames
        beyond the cap, and calls with a direction it does not know, are counted as dropped."""
        kind = _DIRECTIONS.get(direction)
        if kind is None or len(self.frames) >= self.max_frames:
            self.dropped += 1
            return
        data = bytes(frame)
        self.frames.append(
            {
                "mrid": self.mrid,
                "job_id": self.job_id,
                "task_id": self.task_id,
                "attempt": self.attempt,
                "seq": self.saved + len(self.frames) + 1,
                "direction": kind,
                "at": self.clock(),
                "length": len(data),
                "frame": data[: self.max_frame_bytes].hex(),
            }
        )

    __call__ = record

    def save(
        self,
        store: Store | Connection,
        *,
        meter_cap: int = METER_CAP,
        global_cap: int = GLOBAL_CAP,
    ) -> int:
        """Write the frames recorded so far and prune beyond the caps; returns how many were
        written. The recorder can go on recording (sequence numbers continue)."""
        rows, self.frames = self.frames, []
        if not rows:
            return 0
        with transaction(store) as conn:
            conn.execute(insert(comm_frames), rows)
            prune(conn, mrid=self.mrid, meter_cap=meter_cap, global_cap=global_cap)
        self.saved += len(rows)
        return len(rows)


@contextlib.contextmanager
def observing(recorder: FrameRecorder | None) -> Iterator[FrameRecorder | None]:
    """Make ``recorder`` the frame observer of the current task (for connections opened in
    the block); a None recorder changes nothing."""
    if recorder is None:
        yield None
        return
    token = frame_observer.set(recorder.record)
    try:
        yield recorder
    finally:
        frame_observer.reset(token)


def recorder_for(
    store: Store | Connection,
    mrid: str,
    *,
    job_id: str | None = None,
    task_id: int | None = None,
    attempt: int | None = None,
    now: datetime | None = None,
) -> FrameRecorder | None:
    """A recorder for this attempt when debug logging covers the meter or the job."""
    limit = debug_limit(store, mrid, job_id, now=now)
    if limit is None:
        return None
    return FrameRecorder(mrid, job_id, task_id, attempt, max_frames=limit)


def _cut_below(conn: Connection, query: Any) -> int | None:
    """The id of the newest row to delete: the first beyond the cap in newest-first order."""
    return conn.execute(query).scalar()


def prune(
    conn: Connection,
    *,
    mrid: str | None = None,
    meter_cap: int = METER_CAP,
    global_cap: int = GLOBAL_CAP,
) -> int:
    """Delete the oldest frames beyond ``meter_cap`` for ``mrid`` and beyond ``global_cap``
    in total; returns the number of rows deleted."""
    f = comm_frames.c
    deleted = 0
    if mrid is not None:
        cut = _cut_below(
            conn,
            select(f.id).where(f.mrid == mrid).order_by(f.id.desc()).offset(meter_cap).limit(1),
        )
        if cut is not None:
            deleted += conn.execute(delete(comm_frames).where(f.mrid == mrid, f.id <= cut)).rowcount
    cut = _cut_below(conn, select(f.id).order_by(f.id.desc()).offset(global_cap).limit(1))
    if cut is not None:
        deleted += conn.execute(delete(comm_frames).where(f.id <= cut)).rowcount
    return deleted


@dataclass(frozen=True)
class FrameRow:
    id: int
    mrid: str
    job_id: str | None
    task_id: int | None
    attempt: int | None
    seq: int
    direction: str
    at: datetime
    length: int
    frame: str  # hex

    @property
    def truncated(self) -> bool:
        return len(self.frame) < 2 * self.length

    def as_dict(self) -> dict[str, Any]:
        return {
            "mrid": self.mrid,
            "job_id": self.job_id,
            "task_id": self.task_id,
            "attempt": self.attempt,
            "seq": self.seq,
            "direction": self.direction,
            "at": self.at.isoformat(),
            "length": self.length,
            "frame": self.frame,
            "truncated": self.truncated,
        }


def frames(
    store: Store | Connection,
    *,
    mrid: str | None = None,
    job_id: str | None = None,
    task_id: int | None = None,
    attempt: int | None = None,
    limit: int = 1000,
) -> list[FrameRow]:
    """Recorded frames, oldest first (the newest ``limit`` of them)."""
    f = comm_frames.c
    query = select(comm_frames)
    for column, value in (
        (f.mrid, mrid),
        (f.job_id, job_id),
        (f.task_id, task_id),
        (f.attempt, attempt),
    ):
        if value is not None:
            query = query.where(column == value)
    newest = query.order_by(f.id.desc()).limit(limit).subquery()
    with reading(store) as conn:
        rows = conn.execute(select(newest).order_by(newest.c.id)).all()
    return [
        FrameRow(
            r.id,
            r.mrid,
            r.job_id,
            r.task_id,
            r.attempt,
            r.seq,
            r.direction,
            r.at,
            r.length,
            r.frame,
        )
        for r in rows
    ]


def format_frames(rows: list[FrameRow]) -> str:
    """A readable dump: time, direction, length, hex in groups of two."""
    lines = []
    for row in rows:
        arrow = "->" if row.direction == "tx" else "<-"
        body = " ".join(row.frame[i : i + 2] for i in range(0, len(row.frame), 2))
        cut = " ..." if row.truncated else ""
        lines.append(
            f"{row.at:%Y-%m-%d %H:%M:%S.%f} {row.mrid} {arrow} {row.length:5d} B  {body}{cut}"
        )
    return "\n".join(lines)


__all__ = [
    "DEFAULT_MAX_FRAMES",
    "GLOBAL_CAP",
    "MAX_DURATION",
    "METER_CAP",
    "DebugSwitch",
    "FrameRecorder",
    "FrameRow",
    "debug_limit",
    "disable",
    "enable",
    "format_frames",
    "frames",
    "observing",
    "prune",
    "recorder_for",
    "switches",
]
