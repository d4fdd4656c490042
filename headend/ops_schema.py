"""Operations tables of the head-end (migration 0004), on :data:`mdm.schema.metadata`:

- ``schedules``: persisted scheduled jobs (:mod:`headend.schedules`). The rule is the text the
  operator gave (a cron expression or ``every N minutes|hours|days``), checked when the row is
  written; ``next_due_at`` is the next firing still owed and ``last_fired_at`` the last one
  submitted, so a restarted runner neither skips nor doubles a firing.
- ``comm_debug``: the per-communication debug log switched on for a meter or a job, until a
  given time (:mod:`headend.commlog`).
- ``comm_frames``: the frames (hex) seen while debugging was on, per task attempt and meter,
  with their direction and time. Bounded: a cap per attempt, per meter and in total, the
  oldest rows pruned first (ids only grow, so "oldest" is "smallest id").

No foreign keys to the job tables: the debug log outlives pruned jobs and must never slow a
task down with a constraint check.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Identity,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from mdm.schema import MRID_LENGTH, NAME_LENGTH, WHO_LENGTH, metadata
from mdm.sqltypes import UtcDateTime

TARGET_KINDS = ("devices", "group", "everyone")
DEBUG_SCOPES = ("meter", "job")
DIRECTIONS = ("tx", "rx")

_BigId = BigInteger().with_variant(Integer(), "sqlite")

schedules = Table(
    "schedules",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    Column("rule", String(200), nullable=False),  # cron text or "every N minutes|hours|days"
    Column("time_zone", String(64), nullable=False),
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_at", UtcDateTime),  # exclusive; NULL: no end
    Column("exceptions", Text),  # JSON list of local ISO dates on which it does not fire
    Column("target_kind", String(8), nullable=False),
    Column("target", Text),  # JSON list of mRIDs, or the group name; NULL for everyone
    Column("command", Text, nullable=False),  # JSON of the action (headend.schedules)
    Column("priority", Integer),  # NULL: the command's own priority
    Column("data_window", String(32), nullable=False),  # headend.scheduler.Window
    Column("enabled", Boolean(create_constraint=False), nullable=False),
    Column("last_fired_at", UtcDateTime),
    Column("last_job_id", String(32)),
    Column("last_success_at", UtcDateTime),  # firing whose job read every meter
    Column("last_error", Text),  # why the last firing made no job
    Column("next_due_at", UtcDateTime, index=True),  # NULL: no firing left
    Column("created_by", String(WHO_LENGTH), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("target_kind IN ('devices', 'group', 'everyone')", name="target_kind"),
)

comm_debug = Table(
    "comm_debug",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("scope", String(8), nullable=False),  # meter | job
    Column("target", String(MRID_LENGTH), nullable=False),  # the mRID or the job id
    Column("until", UtcDateTime, nullable=False),
    Column("max_frames", Integer, nullable=False),  # per task attempt
    Column("created_by", String(WHO_LENGTH), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("scope", "target"),
    CheckConstraint("scope IN ('meter', 'job')", name="scope"),
)

comm_frames = Table(
    "comm_frames",
    metadata,
    Column("id", _BigId, Identity(), primary_key=True),
    Column("mrid", String(MRID_LENGTH), nullable=False),
    Column("job_id", String(32)),
    Column("task_id", Integer),
    Column("attempt", Integer),
    Column("seq", Integer, nullable=False),  # order within the attempt, from 1
    Column("direction", String(2), nullable=False),  # tx (to the meter) | rx (from it)
    Column("at", UtcDateTime, nullable=False),
    Column("length", Integer, nullable=False),  # bytes of the frame as sent or received
    Column("frame", Text, nullable=False),  # hex; cut to the per-frame cap when longer
    CheckConstraint("direction IN ('tx', 'rx')", name="direction"),
    Index(None, "mrid", "id"),
    Index(None, "task_id", "attempt", "seq"),
)

__all__ = [
    "DEBUG_SCOPES",
    "DIRECTIONS",
    "TARGET_KINDS",
    "comm_debug",
    "comm_frames",
    "schedules",
]
