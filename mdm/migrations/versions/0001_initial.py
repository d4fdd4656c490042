"""The initial meter data store: registry, reading types, raw values, readings, history,
events and the audit log.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mdm.sqltypes import ExactDecimal, UtcDateTime, key_text

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_KINDS = "kind IN ('electricity', 'gas', 'water', 'heat')"
_SOURCES = "source IN ('meter', 'estimated', 'edited')"
_READING_TYPE_FIELDS = (
    "macro_period",
    "aggregate",
    "measuring_period",
    "accumulation",
    "flow_direction",
    "commodity",
    "measurement_kind",
    "interharmonic_numerator",
    "interharmonic_denominator",
    "argument_numerator",
    "argument_denominator",
    "tou",
    "cpp",
    "consumption_tier",
    "phases",
    "multiplier",
    "unit",
    "currency",
)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False)


def _fk(table: str, column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}"))


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns), unique=False)


def upgrade() -> None:
    op.create_table(
        "usage_points",
        _id(),
        sa.Column("mrid", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(_KINDS, name=op.f("ck_usage_points_kind")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_points")),
        sa.UniqueConstraint("mrid", name=op.f("uq_usage_points_mrid")),
        sa.UniqueConstraint("name", name=op.f("uq_usage_points_name")),
    )
    op.create_table(
        "devices",
        _id(),
        sa.Column("mrid", sa.String(64), nullable=False),
        sa.Column("serial", sa.String(64), nullable=True),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("protocol", sa.String(32), nullable=True),
        sa.Column("manufacturer", sa.String(64), nullable=True),
        sa.Column("model", sa.String(64), nullable=True),
        sa.Column("firmware_version", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("usage_point_id", sa.Integer(), nullable=True),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(_KINDS, name=op.f("ck_devices_kind")),
        sa.CheckConstraint(
            "status IN ('planned', 'active', 'inactive', 'removed')",
            name=op.f("ck_devices_status"),
        ),
        sa.CheckConstraint("latitude BETWEEN -90 AND 90", name=op.f("ck_devices_latitude")),
        sa.CheckConstraint("longitude BETWEEN -180 AND 180", name=op.f("ck_devices_longitude")),
        _fk("devices", "usage_point_id", "usage_points"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sa.UniqueConstraint("mrid", name=op.f("uq_devices_mrid")),
        sa.UniqueConstraint("name", name=op.f("uq_devices_name")),
    )
    _index("devices", "serial")
    _index("devices", "usage_point_id")
    op.create_table(
        "device_names",
        _id(),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("name_type", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        _fk("device_names", "device_id", "devices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_names")),
        sa.UniqueConstraint("name_type", "name", name=op.f("uq_device_names_name_type_name")),
    )
    _index("device_names", "device_id")
    op.create_table(
        "device_groups",
        _id(),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("description", sa.String(400), nullable=True),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        _fk("device_groups", "parent_id", "device_groups"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_groups")),
        sa.UniqueConstraint("name", name=op.f("uq_device_groups_name")),
    )
    _index("device_groups", "parent_id")
    op.create_table(
        "device_group_members",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("added_at", UtcDateTime(), nullable=False),
        _fk("device_group_members", "device_id", "devices"),
        _fk("device_group_members", "group_id", "device_groups"),
        sa.PrimaryKeyConstraint("group_id", "device_id", name=op.f("pk_device_group_members")),
    )
    _index("device_group_members", "device_id")
    op.create_table(
        "reading_types",
        _id(),
        sa.Column("code", sa.String(200), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=False) for name in _READING_TYPE_FIELDS),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reading_types")),
        sa.UniqueConstraint("code", name=op.f("uq_reading_types_code")),
    )
    op.create_table(
        "raw_values",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("source_id", key_text(64), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("scaler", sa.SmallInteger(), nullable=False),
        sa.Column("unit", key_text(16), nullable=False),
        sa.Column("status", sa.BigInteger(), nullable=False),
        sa.Column("source_task", key_text(64), nullable=False),
        sa.Column("meter_time", sa.String(40), nullable=True),
        sa.Column("meter_dst", sa.SmallInteger(), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "device_id",
            "ts",
            "source_id",
            "value",
            "scaler",
            "unit",
            "status",
            "source_task",
            name=op.f("pk_raw_values"),
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "readings",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("reading_type_id", sa.Integer(), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("value", ExactDecimal(), nullable=True),
        sa.Column("qualities", sa.String(200), nullable=True),
        sa.Column("status", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.CheckConstraint(_SOURCES, name=op.f("ck_readings_source")),
        sa.PrimaryKeyConstraint("device_id", "reading_type_id", "ts", name=op.f("pk_readings")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "reading_history",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("reading_type_id", sa.Integer(), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value", ExactDecimal(), nullable=True),
        sa.Column("qualities", sa.String(200), nullable=True),
        sa.Column("status", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(10), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.Column("superseded_at", UtcDateTime(), nullable=False),
        sa.Column("superseded_by", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.CheckConstraint(_SOURCES, name=op.f("ck_reading_history_source")),
        sa.PrimaryKeyConstraint(
            "device_id", "reading_type_id", "ts", "version", name=op.f("pk_reading_history")
        ),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "events",
        sa.Column("id", _BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("event_type", sa.String(32), nullable=False),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("source_task", sa.String(64), nullable=True),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        _fk("events", "device_id", "devices"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
        sa.UniqueConstraint(
            "device_id", "ts", "event_type", name=op.f("uq_events_device_id_ts_event_type")
        ),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", _BIG_ID, sa.Identity(always=False), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("who", sa.String(64), nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(200), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    _index("audit_log", "at")
    _index("audit_log", "object_type", "object_id", "at")
    if op.get_context().dialect.name == "oracle":
        _create_oracle_staging()


def _create_oracle_staging() -> None:
    # Oracle has no session temporary tables created on the fly; ingest stages its array-bound
    # rows in this global temporary table (rows private to the transaction). On SQLite and
    # PostgreSQL the same table is a TEMPORARY table made by mdm.bulk per connection.
    op.create_table(
        "mdm_stage_readings",
        sa.Column("device_id", sa.Integer(), nullable=False),
        sa.Column("reading_type_id", sa.Integer(), nullable=True),
        sa.Column("ts", UtcDateTime(), nullable=False),
        sa.Column("value", ExactDecimal(), nullable=True),
        sa.Column("qualities", sa.String(200), nullable=True),
        sa.Column("status", sa.BigInteger(), nullable=False),
        sa.Column("source_id", key_text(64), nullable=True),
        sa.Column("raw_value", sa.BigInteger(), nullable=True),
        sa.Column("scaler", sa.SmallInteger(), nullable=True),
        sa.Column("unit", key_text(16), nullable=True),
        sa.Column("source_task", key_text(64), nullable=True),
        sa.Column("meter_time", sa.String(40), nullable=True),
        sa.Column("meter_dst", sa.SmallInteger(), nullable=True),
        prefixes=["GLOBAL TEMPORARY"],
        oracle_on_commit="DELETE ROWS",
    )
    # The correlated UPDATE of superseded values looks staged rows up by key.
    op.create_index(
        "ix_mdm_stage_readings_key", "mdm_stage_readings", ["device_id", "reading_type_id", "ts"]
    )


def downgrade() -> None:
    if op.get_context().dialect.name == "oracle":
        op.drop_table("mdm_stage_readings")
    for table in (
        "audit_log",
        "events",
        "reading_history",
        "readings",
        "raw_values",
        "reading_types",
        "device_group_members",
        "device_groups",
        "device_names",
        "devices",
        "usage_points",
    ):
        op.drop_table(table)
