"""Users, roles, login failures and UsernameToken nonces (adapters/auth/schema.py).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mdm.sqltypes import UtcDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("roles", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        sa.Column("digest_secret", sa.Text(), nullable=True),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_users")),
    )
    op.create_table(
        "login_failures",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", UtcDateTime(), nullable=True),
        sa.Column("last_failure_at", UtcDateTime(), nullable=False),
        sa.Column("last_peer", sa.String(128), nullable=True),
        sa.Column("locked_until", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_login_failures")),
    )
    op.create_table(
        "wss_nonces",
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("seen_at", UtcDateTime(), nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_wss_nonces")),
    )
    op.create_index(
        op.f("ix_wss_nonces_expires_at"), "wss_nonces", ["expires_at"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_wss_nonces_expires_at"), table_name="wss_nonces")
    op.drop_table("wss_nonces")
    op.drop_table("login_failures")
    op.drop_table("users")
