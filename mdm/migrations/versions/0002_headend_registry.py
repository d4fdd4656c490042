"""The head-end registry: communication paths and security profiles of meters
(headend/schema.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mdm.sqltypes import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meter_paths",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(8), nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("serial_port", sa.String(128), nullable=True),
        sa.Column("baud_rate", sa.Integer(), nullable=True),
        sa.Column("server_logical", sa.Integer(), nullable=False),
        sa.Column("server_physical", sa.Integer(), nullable=True),
        sa.Column("wport", sa.Integer(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint("role IN ('primary', 'backup')", name=op.f("ck_meter_paths_role")),
        sa.CheckConstraint(
            "transport IN ('wrapper', 'hdlc')", name=op.f("ck_meter_paths_transport")
        ),
        sa.CheckConstraint(
            "(host IS NOT NULL AND port IS NOT NULL) OR serial_port IS NOT NULL",
            name=op.f("ck_meter_paths_where"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_meter_paths_device_id")
        ),
        sa.PrimaryKeyConstraint("device_id", "role", name=op.f("pk_meter_paths")),
    )
    op.create_table(
        "meter_security",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("client_address", sa.Integer(), nullable=False),
        sa.Column("authentication", sa.String(16), nullable=False),
        sa.Column("security_policy", sa.String(32), nullable=False),
        sa.Column("security_suite", sa.SmallInteger(), nullable=True),
        sa.Column("server_system_title", sa.String(16), nullable=True),
        sa.Column("invocation_counter_obis", sa.String(32), nullable=True),
        sa.Column("logical_device_name", sa.String(64), nullable=True),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("password", sa.Text(), nullable=True),
        sa.Column("encryption_key", sa.Text(), nullable=True),
        sa.Column("authentication_key", sa.Text(), nullable=True),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(
            "authentication IN ('none', 'lls', 'hls-gmac')",
            name=op.f("ck_meter_security_authentication"),
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_meter_security_device_id")
        ),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_meter_security")),
    )


def downgrade() -> None:
    op.drop_table("meter_security")
    op.drop_table("meter_paths")
