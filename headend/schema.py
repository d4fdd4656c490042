"""The head-end's registry tables, on the same :data:`mdm.schema.metadata` as the meter data
store, so one migration history (``mdm/migrations``, revision 0002) covers the database.

What mdm already holds (a device's mRID, serial, name, protocol, location, usage point,
groups, time zone) stays in mdm's tables; these add how to reach a meter and how to talk to
it securely. Secrets are stored only as tokens of :mod:`headend.keys` (AES-GCM under the
master key); ``key_id`` names the master key they are under, for rotation.
"""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)

from mdm.schema import devices, metadata
from mdm.sqltypes import UtcDateTime

PATH_ROLES = ("primary", "backup")
TRANSPORTS = ("wrapper", "hdlc")
AUTHENTICATIONS = ("none", "lls", "hls-gmac")
SECURITY_POLICIES = ("none", "authenticated_encrypted")

meter_paths = Table(
    "meter_paths",
    metadata,
    Column("device_id", Integer, ForeignKey(devices.c.id), nullable=False),
    Column("role", String(8), nullable=False),
    Column("transport", String(16), nullable=False),
    # A TCP path has host and port; a serial path has serial_port (and baud_rate).
    Column("host", String(255)),
    Column("port", Integer),
    Column("serial_port", String(128)),
    Column("baud_rate", Integer),
    Column("server_logical", Integer, nullable=False),
    Column("server_physical", Integer),  # HDLC lower address
    Column("wport", Integer),  # WRAPPER destination wPort
    Column("updated_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("device_id", "role"),
    CheckConstraint("role IN ('primary', 'backup')", name="role"),
    CheckConstraint("transport IN ('wrapper', 'hdlc')", name="transport"),
    CheckConstraint(
        "(host IS NOT NULL AND port IS NOT NULL) OR serial_port IS NOT NULL", name="where"
    ),
)

meter_security = Table(
    "meter_security",
    metadata,
    Column("device_id", Integer, ForeignKey(devices.c.id), primary_key=True),
    Column("client_address", Integer, nullable=False),
    Column("authentication", String(16), nullable=False),
    Column("security_policy", String(32), nullable=False),
    Column("security_suite", SmallInteger),
    Column("server_system_title", String(16)),  # the meter's, hex (public)
    Column("invocation_counter_obis", String(32)),
    Column("logical_device_name", String(64)),
    Column("key_id", String(32)),  # the master key the secrets are under
    Column("password", Text),  # tokens of headend.keys, never plaintext
    Column("encryption_key", Text),
    Column("authentication_key", Text),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("authentication IN ('none', 'lls', 'hls-gmac')", name="authentication"),
)

__all__ = [
    "AUTHENTICATIONS",
    "PATH_ROLES",
    "SECURITY_POLICIES",
    "TRANSPORTS",
    "meter_paths",
    "meter_security",
]
