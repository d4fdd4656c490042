"""Tables of authentication (revision 0007): users and their roles, the login-failure and
lockout state per user name, and the UsernameToken nonces seen within the freshness window.

On the same :data:`mdm.schema.metadata` as every other table, so one migration history
covers the database. Passwords are kept only as salted scrypt hashes
(:mod:`adapters.auth.passwords`); ``digest_secret``, present only for users allowed to use
WS-Security PasswordDigest, is the password encrypted under the master key
(:mod:`headend.keys`), and ``key_id`` names that key. docs/security.md explains the design.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Index, Integer, String, Table, Text

from mdm.schema import WHO_LENGTH, metadata
from mdm.sqltypes import UtcDateTime

#: A user name is at most this long (and fits the audit log's "who").
USER_NAME_LENGTH = WHO_LENGTH
ROLES_LENGTH = 64
PEER_LENGTH = 128

users = Table(
    "users",
    metadata,
    Column("name", String(USER_NAME_LENGTH), primary_key=True),
    # Comma-separated role names, sorted: "admin,operator,reader".
    Column("roles", String(ROLES_LENGTH), nullable=False),
    # "$scrypt$ln=15,r=8,p=1$<salt>$<hash>": parameters travel with the hash.
    Column("password_hash", String(255), nullable=False),
    # For PasswordDigest users only: a token of headend.keys (AES-GCM under the master key).
    Column("digest_secret", Text),
    Column("key_id", String(32)),
    Column("enabled", Boolean, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# Keyed by the name tried, not a foreign key: unknown names are counted and locked exactly as
# known ones, so the answers do not tell them apart.
login_failures = Table(
    "login_failures",
    metadata,
    Column("name", String(USER_NAME_LENGTH), primary_key=True),
    Column("failures", Integer, nullable=False),  # in the current window
    Column("window_start", UtcDateTime),
    Column("last_failure_at", UtcDateTime, nullable=False),
    Column("last_peer", String(PEER_LENGTH)),
    Column("locked_until", UtcDateTime),
)

# One row per UsernameToken nonce accepted, kept until the token could no longer be fresh.
wss_nonces = Table(
    "wss_nonces",
    metadata,
    # SHA-256 (hex) of the user name and the nonce: fixed length, whatever the client sends.
    Column("digest", String(64), primary_key=True),
    Column("username", String(USER_NAME_LENGTH), nullable=False),
    Column("seen_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Index(None, "expires_at"),
)

__all__ = [
    "PEER_LENGTH",
    "ROLES_LENGTH",
    "USER_NAME_LENGTH",
    "login_failures",
    "users",
    "wss_nonces",
]
