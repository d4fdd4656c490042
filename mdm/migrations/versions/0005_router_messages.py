"""The router's message log, idempotency on MessageID (headend/message_log.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mdm.sqltypes import UtcDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_messages",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("message_id", sa.String(200), nullable=True),
        sa.Column("verb", sa.String(16), nullable=False),
        sa.Column("noun", sa.String(64), nullable=False),
        sa.Column("principal", sa.String(64), nullable=False),
        sa.Column("roles", sa.String(64), nullable=False),
        sa.Column("authenticated_by", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("answered_at", UtcDateTime(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("async_reply", sa.Boolean(create_constraint=False), nullable=False),
        sa.Column("request", sa.LargeBinary(), nullable=False),
        sa.Column("ack", sa.LargeBinary(), nullable=True),
        sa.Column("reply", sa.LargeBinary(), nullable=True),
        sa.Column("result", sa.String(8), nullable=True),
        sa.Column("correlation_id", sa.String(200), nullable=True),
        sa.Column("reply_address", sa.String(2000), nullable=True),
        sa.Column("reply_message_id", sa.String(200), nullable=True),
        sa.CheckConstraint(
            "state IN ('accepted', 'answered')", name=op.f("ck_router_messages_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_router_messages")),
        sa.UniqueConstraint("message_id", name=op.f("uq_router_messages_message_id")),
    )
    op.create_index(op.f("ix_router_messages_state"), "router_messages", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_router_messages_state"), table_name="router_messages")
    op.drop_table("router_messages")
