"""The meter data store's tables (SQLAlchemy Core), one MetaData for all of them.

The migration ``mdm/migrations/versions/0001_initial.py`` creates exactly this; a test
compares the migrated database with :data:`metadata`. docs/storage.md explains the design.

Hot tables (``raw_values``, ``readings``, ``reading_history``) use small integer surrogate keys
for device and reading type, and their primary key is the natural key, so "one device, one
reading type, one window" is a range scan of the primary key. On SQLite they are WITHOUT ROWID
tables: the primary key b-tree holds the row. They have no foreign keys: on PostgreSQL each
foreign key check costs more than the insert itself (measured in docs/storage.md); ingest
takes the ids from the registry in the same transaction, and devices and reading types are
never deleted (a device is retired with status ``removed``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from cim.codelists.readingtype import FIELDS
from mdm.sqltypes import ExactDecimal, UtcDateTime, key_text

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

DEVICE_KINDS = ("electricity", "gas", "water", "heat")
DEVICE_STATUSES = ("planned", "active", "inactive", "removed")
SOURCE_METER = "meter"
SOURCE_ESTIMATED = "estimated"
SOURCE_EDITED = "edited"
READING_SOURCES = (SOURCE_METER, SOURCE_ESTIMATED, SOURCE_EDITED)

MRID_LENGTH = 64
NAME_LENGTH = 128
SOURCE_ID_LENGTH = 64
UNIT_LENGTH = 16
TASK_LENGTH = 64
WHO_LENGTH = 64
QUALITIES_LENGTH = 200
READING_TYPE_CODE_LENGTH = 200

# Surrogate keys: Integer everywhere (SQLite's INTEGER PRIMARY KEY is its rowid alias; a
# BIGINT key would not autoincrement there).
_BigId = BigInteger().with_variant(Integer(), "sqlite")


_NO_QUALITIES: frozenset[str] = frozenset()
_QUALITY_TEXT: dict[frozenset[str], str | None] = {_NO_QUALITIES: None}


def qualities_text(qualities: frozenset[str]) -> str | None:
    """How quality codes are stored: sorted, comma-separated; NULL for none."""
    try:
        return _QUALITY_TEXT[qualities]
    except KeyError:
        text = ",".join(sorted(qualities)) or None
        if len(_QUALITY_TEXT) < 4096:
            _QUALITY_TEXT[qualities] = text
        return text


def qualities_from_text(text: str | None) -> frozenset[str]:
    return frozenset(text.split(",")) if text else _NO_QUALITIES


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


usage_points = Table(
    "usage_points",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("mrid", String(MRID_LENGTH), nullable=False, unique=True),
    Column("name", String(NAME_LENGTH), unique=True),
    Column("kind", String(16), nullable=False),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint(_in("kind", DEVICE_KINDS), name="kind"),
)

devices = Table(
    "devices",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("mrid", String(MRID_LENGTH), nullable=False, unique=True),
    Column("serial", String(64), index=True),
    Column("name", String(NAME_LENGTH), unique=True),
    Column("kind", String(16), nullable=False),
    Column("protocol", String(32)),
    Column("manufacturer", String(64)),
    Column("model", String(64)),
    Column("firmware_version", String(64)),
    Column("status", String(16), nullable=False),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("usage_point_id", Integer, ForeignKey(usage_points.c.id), index=True),
    # IANA zone of the meter's local clock, used for timestamps sent as wall-clock time.
    Column("time_zone", String(64), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint(_in("kind", DEVICE_KINDS), name="kind"),
    CheckConstraint(_in("status", DEVICE_STATUSES), name="status"),
    CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude"),
    CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude"),
)

device_names = Table(
    "device_names",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("device_id", Integer, ForeignKey(devices.c.id), nullable=False, index=True),
    Column("name_type", String(32), nullable=False),
    Column("name", String(NAME_LENGTH), nullable=False),
    UniqueConstraint("name_type", "name"),
)

device_groups = Table(
    "device_groups",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    Column("description", String(400)),
    Column("parent_id", Integer, ForeignKey("device_groups.id"), index=True),
    Column("created_at", UtcDateTime, nullable=False),
)

device_group_members = Table(
    "device_group_members",
    metadata,
    Column("group_id", Integer, ForeignKey(device_groups.c.id), nullable=False),
    Column("device_id", Integer, ForeignKey(devices.c.id), nullable=False, index=True),
    Column("added_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("group_id", "device_id"),
)

reading_types = Table(
    "reading_types",
    metadata,
    Column("id", Integer, Identity(), primary_key=True),
    Column("code", String(READING_TYPE_CODE_LENGTH), nullable=False, unique=True),
    *(Column(attr, Integer, nullable=False) for attr, _ in FIELDS),
    # Length of the measuring period when it is a fixed interval (NULL for registers).
    Column("interval_seconds", Integer),
)

# Exactly as received. Append-only: never updated, never deleted. Its primary key is the
# whole received content, so an identical row arriving again is not stored twice.
raw_values = Table(
    "raw_values",
    metadata,
    Column("device_id", Integer, nullable=False),
    Column("source_id", key_text(SOURCE_ID_LENGTH), nullable=False),  # OBIS code or native id
    Column("ts", UtcDateTime, nullable=False),  # the meter's timestamp, resolved to UTC
    Column("value", BigInteger, nullable=False),
    Column("scaler", SmallInteger, nullable=False),
    Column("unit", key_text(UNIT_LENGTH), nullable=False),
    Column("status", BigInteger, nullable=False),
    Column("source_task", key_text(TASK_LENGTH), nullable=False),
    # The timestamp as the meter sent it when that was not a UTC instant (a wall-clock time,
    # or a time with its UTC offset); NULL when the meter sent UTC, which ``ts`` is.
    Column("meter_time", String(40)),
    Column("meter_dst", SmallInteger),  # the meter's DST flag when it sent one (0/1)
    Column("received_at", UtcDateTime, nullable=False),
    # ts second: comparisons in the index are mostly settled on integers.
    PrimaryKeyConstraint(
        "device_id", "ts", "source_id", "value", "scaler", "unit", "status", "source_task"
    ),
    sqlite_with_rowid=False,
)

_SOURCE_CHECK = _in("source", READING_SOURCES)

# The current version of each value.
readings = Table(
    "readings",
    metadata,
    Column("device_id", Integer, nullable=False),
    Column("reading_type_id", Integer, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    Column("value", ExactDecimal),
    Column("qualities", String(QUALITIES_LENGTH)),  # sorted, comma-separated; NULL: none
    Column("status", BigInteger, nullable=False),
    Column("version", Integer, nullable=False),
    Column("source", String(10), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("device_id", "reading_type_id", "ts"),
    CheckConstraint(_SOURCE_CHECK, name="source"),
    sqlite_with_rowid=False,
)

# Superseded versions: the row as it was, and who replaced it, when and why.
reading_history = Table(
    "reading_history",
    metadata,
    Column("device_id", Integer, nullable=False),
    Column("reading_type_id", Integer, nullable=False),
    Column("ts", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    Column("value", ExactDecimal),
    Column("qualities", String(QUALITIES_LENGTH)),
    Column("status", BigInteger, nullable=False),
    Column("source", String(10), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    Column("superseded_at", UtcDateTime, nullable=False),
    Column("superseded_by", String(WHO_LENGTH), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("note", Text),  # free-text comment
    PrimaryKeyConstraint("device_id", "reading_type_id", "ts", "version"),
    CheckConstraint(_SOURCE_CHECK, name="source"),
    sqlite_with_rowid=False,
)

events = Table(
    "events",
    metadata,
    Column("id", _BigId, Identity(), primary_key=True),
    Column("device_id", Integer, ForeignKey(devices.c.id), nullable=False),
    Column("event_type", String(32), nullable=False),  # EndDeviceEventType code
    Column("ts", UtcDateTime, nullable=False),
    Column("details", Text),  # JSON
    Column("source_task", String(TASK_LENGTH)),
    Column("received_at", UtcDateTime, nullable=False),
    UniqueConstraint("device_id", "ts", "event_type"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _BigId, Identity(), primary_key=True),
    Column("at", UtcDateTime, nullable=False),
    Column("who", String(WHO_LENGTH), nullable=False),
    Column("object_type", String(32), nullable=False),
    Column("object_id", String(200), nullable=False),
    Column("attribute", String(64), nullable=False),
    Column("old_value", Text),
    Column("new_value", Text),
    Column("note", Text),  # free-text comment
    Index(None, "object_type", "object_id", "at"),
    Index(None, "at"),
)
