"""Jobs, tasks and attempts (headend/schema.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mdm.sqltypes import UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns), unique=False)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("command", sa.Text(), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("schedule_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('on_demand', 'group', 'bulk', 'scheduled', 'rerun')",
            name=op.f("ck_jobs_kind"),
        ),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'completed', 'completed_with_errors', 'cancelled')",
            name=op.f("ck_jobs_state"),
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["jobs.id"], name=op.f("fk_jobs_parent_id")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_jobs_idempotency_key")),
    )
    _index("jobs", "created_at")
    _index("jobs", "state")
    op.create_table(
        "tasks",
        sa.Column("id", _BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("mrid", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(255), nullable=True),
        sa.Column("on_backup", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("error_code", sa.String(16), nullable=True),
        sa.Column("error_text", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("deadline", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('queued', 'running', 'retry_wait', 'succeeded', 'failed', 'expired', "
            "'cancelled')",
            name=op.f("ck_tasks_state"),
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name=op.f("fk_tasks_job_id")),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], name=op.f("fk_tasks_device_id")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_tasks_idempotency_key")),
    )
    _index("tasks", "device_id")
    _index("tasks", "job_id", "state")
    op.create_table(
        "task_attempts",
        sa.Column("task_id", _BIG_ID, nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(255), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
        sa.Column("outcome", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("bytes_sent", sa.BigInteger(), nullable=False),
        sa.Column("bytes_received", sa.BigInteger(), nullable=False),
        sa.Column("device_type", sa.String(129), nullable=True),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name=op.f("fk_task_attempts_task_id")),
        sa.PrimaryKeyConstraint("task_id", "number", name=op.f("pk_task_attempts")),
    )
    _index("task_attempts", "started_at")


def downgrade() -> None:
    op.drop_table("task_attempts")
    op.drop_table("tasks")
    op.drop_table("jobs")
