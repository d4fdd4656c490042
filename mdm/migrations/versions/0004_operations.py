"""Persisted schedules and the communication debug log (headend/ops_schema.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mdm.sqltypes import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=False),
        sa.Column("ends_at", UtcDateTime(), nullable=True),
        sa.Column("exceptions", sa.Text(), nullable=True),
        sa.Column("target_kind", sa.String(8), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=True),
        sa.Column("data_window", sa.String(32), nullable=False),
        sa.Column("enabled", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("last_fired_at", UtcDateTime(), nullable=True),
        sa.Column("last_job_id", sa.String(32), nullable=True),
        sa.Column("last_success_at", UtcDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_due_at", UtcDateTime(), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "target_kind IN ('devices', 'group', 'everyone')",
            name=op.f("ck_schedules_target_kind"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_schedules_name")),
    )
    op.create_index(op.f("ix_schedules_next_due_at"), "schedules", ["next_due_at"], unique=False)
    op.create_table(
        "comm_debug",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("scope", sa.String(8), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("until", UtcDateTime(), nullable=False),
        sa.Column("max_frames", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("scope IN ('meter', 'job')", name=op.f("ck_comm_debug_scope")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comm_debug")),
        sa.UniqueConstraint("scope", "target", name=op.f("uq_comm_debug_scope_target")),
    )
    op.create_table(
        "comm_frames",
        sa.Column("id", _BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("mrid", sa.String(64), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=True),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(2), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("frame", sa.Text(), nullable=False),
        sa.CheckConstraint("direction IN ('tx', 'rx')", name=op.f("ck_comm_frames_direction")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comm_frames")),
    )
    op.create_index(op.f("ix_comm_frames_mrid_id"), "comm_frames", ["mrid", "id"], unique=False)
    op.create_index(
        op.f("ix_comm_frames_task_id_attempt_seq"),
        "comm_frames",
        ["task_id", "attempt", "seq"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_comm_frames_task_id_attempt_seq"), table_name="comm_frames")
    op.drop_index(op.f("ix_comm_frames_mrid_id"), table_name="comm_frames")
    op.drop_table("comm_frames")
    op.drop_table("comm_debug")
    op.drop_index(op.f("ix_schedules_next_due_at"), table_name="schedules")
    op.drop_table("schedules")
