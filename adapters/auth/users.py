"""Managing users: add, change the password or roles, disable and enable, unlock, list.

Every change is written to the audit log (:mod:`mdm.audit`, object type ``user``) in the
same transaction, with who made it; a password is never logged, only that it changed.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, delete, insert, select, update

from adapters.auth.passwords import ScryptParams, hash_password, seal_digest_secret
from adapters.auth.schema import USER_NAME_LENGTH, login_failures, users
from headend.access import Role
from headend.keys import Keyring
from mdm import audit
from mdm.database import Store, reading, transaction

OBJECT_TYPE = "user"


class UserError(ValueError):
    """A user change refused: a bad name or role, a user that exists or does not."""


@dataclass(frozen=True)
class User:
    name: str
    roles: frozenset[Role]
    enabled: bool
    digest: bool  # may authenticate with a WS-Security PasswordDigest
    created_at: datetime
    updated_at: datetime
    failures: int = 0
    locked_until: datetime | None = None

    def locked(self, now: datetime | None = None) -> bool:
        now = now or datetime.now(UTC)
        return self.locked_until is not None and self.locked_until > now


def check_name(name: str) -> str:
    """A user name: 1..64 characters, no colon (HTTP Basic cannot carry one), no control
    characters, no surrounding spaces."""
    if not isinstance(name, str) or not name:
        raise UserError("a user name is needed")
    if len(name) > USER_NAME_LENGTH:
        raise UserError(f"a user name is at most {USER_NAME_LENGTH} characters")
    if name != name.strip():
        raise UserError("a user name must not start or end with a space")
    if ":" in name:
        raise UserError("a user name must not contain ':' (HTTP Basic cannot carry it)")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise UserError("a user name must not contain control characters")
    return name


def check_roles(roles: Iterable[str | Role]) -> frozenset[Role]:
    found = set()
    for role in roles:
        try:
            found.add(Role(role))
        except ValueError:
            known = ", ".join(r.value for r in Role)
            raise UserError(f"unknown role {role!r} (known: {known})") from None
    if not found:
        raise UserError("a user needs at least one role")
    return frozenset(found)


def roles_text(roles: frozenset[Role]) -> str:
    return ",".join(sorted(r.value for r in roles))


def roles_of(text: str) -> frozenset[Role]:
    """The roles stored in a row (names no longer known are dropped, never widened)."""
    known = {r.value for r in Role}
    return frozenset(Role(part) for part in text.split(",") if part in known)


def _secret_columns(
    name: str, password: str, digest: bool, keyring: Keyring | None
) -> dict[str, str | None]:
    if not digest:
        return {"digest_secret": None, "key_id": None}
    keyring = keyring or Keyring.from_env()
    return {
        "digest_secret": seal_digest_secret(keyring, name, password),
        "key_id": keyring.key_id,
    }


def add_user(
    db: Store | Connection,
    name: str,
    password: str,
    roles: Iterable[str | Role],
    *,
    who: str = "system",
    digest: bool = False,
    keyring: Keyring | None = None,
    params: ScryptParams | None = None,
    now: datetime | None = None,
) -> User:
    """Create a user. ``digest``: also keep the password encrypted under the master key, so
    the user may authenticate with a PasswordDigest (see docs/security.md for the cost)."""
    check_name(name)
    role_set = check_roles(roles)
    now = now or datetime.now(UTC)
    row = {
        "name": name,
        "roles": roles_text(role_set),
        "password_hash": hash_password(password, params),
        **_secret_columns(name, password, digest, keyring),
        "enabled": True,
        "created_at": now,
        "updated_at": now,
    }
    with transaction(db) as conn:
        if conn.execute(select(users.c.name).where(users.c.name == name)).first():
            raise UserError(f"user {name!r} already exists")
        conn.execute(insert(users).values(row))
        audit.record_created(
            conn,
            who=who,
            object_type=OBJECT_TYPE,
            objects={name: {"roles": row["roles"], "enabled": True, "digest": digest}},
            at=now,
        )
    return User(name, role_set, True, digest, now, now)


def _existing(conn: Connection, name: str) -> dict:
    row = conn.execute(select(users).where(users.c.name == name)).mappings().first()
    if row is None:
        raise UserError(f"no user {name!r}")
    return dict(row)


def set_password(
    db: Store | Connection,
    name: str,
    password: str,
    *,
    who: str = "system",
    digest: bool | None = None,
    keyring: Keyring | None = None,
    params: ScryptParams | None = None,
    now: datetime | None = None,
) -> None:
    """A new password (and a new salt). ``digest`` None keeps the user's PasswordDigest
    permission as it was; True or False sets it."""
    now = now or datetime.now(UTC)
    new_hash = hash_password(password, params)
    with transaction(db) as conn:
        old = _existing(conn, name)
        had_digest = old["digest_secret"] is not None
        keep = had_digest if digest is None else digest
        values = {
            "password_hash": new_hash,
            **_secret_columns(name, password, keep, keyring),
            "updated_at": now,
        }
        conn.execute(update(users).where(users.c.name == name).values(values))
        changes = [("password", "(set)", "(changed)")]
        if keep != had_digest:
            changes.append(("digest", had_digest, keep))
        audit.record(
            conn, who=who, object_type=OBJECT_TYPE, object_id=name, changes=changes, at=now
        )


def _set(
    db: Store | Connection, name: str, attribute: str, value: object, stored: object, who: str
) -> bool:
    now = datetime.now(UTC)
    with transaction(db) as conn:
        old = _existing(conn, name)
        if old[attribute] == stored:
            return False
        conn.execute(
            update(users).where(users.c.name == name).values({attribute: stored, "updated_at": now})
        )
        audit.record(
            conn,
            who=who,
            object_type=OBJECT_TYPE,
            object_id=name,
            changes=[(attribute, old[attribute], value)],
            at=now,
        )
    return True


def disable(db: Store | Connection, name: str, *, who: str = "system") -> bool:
    """Refuse every login of ``name`` from now on; False when it already was disabled."""
    return _set(db, name, "enabled", False, False, who)


def enable(db: Store | Connection, name: str, *, who: str = "system") -> bool:
    return _set(db, name, "enabled", True, True, who)


def set_roles(
    db: Store | Connection, name: str, roles: Iterable[str | Role], *, who: str = "system"
) -> bool:
    text = roles_text(check_roles(roles))
    return _set(db, name, "roles", text, text, who)


def unlock(db: Store | Connection, name: str, *, who: str = "system") -> bool:
    """Forget the failed logins of ``name`` and lift its lockout; False when there were none.
    Works for names that are not users too (they are counted and locked the same way)."""
    now = datetime.now(UTC)
    with transaction(db) as conn:
        row = conn.execute(
            select(login_failures.c.failures, login_failures.c.locked_until).where(
                login_failures.c.name == name
            )
        ).first()
        if row is None:
            return False
        conn.execute(delete(login_failures).where(login_failures.c.name == name))
        audit.record(
            conn,
            who=who,
            object_type=OBJECT_TYPE,
            object_id=name[:200],
            changes=[("locked_until", row.locked_until, None)],
            at=now,
            note=f"unlocked ({row.failures} failures in the current window)",
        )
    return True


def _user(row, failure) -> User:
    return User(
        name=row.name,
        roles=roles_of(row.roles),
        enabled=bool(row.enabled),
        digest=row.digest_secret is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        failures=failure.failures if failure is not None else 0,
        locked_until=failure.locked_until if failure is not None else None,
    )


def _query():
    return select(
        users.c.name,
        users.c.roles,
        users.c.enabled,
        users.c.digest_secret,
        users.c.created_at,
        users.c.updated_at,
        login_failures.c.failures,
        login_failures.c.locked_until,
    ).select_from(users.outerjoin(login_failures, login_failures.c.name == users.c.name))


def list_users(db: Store | Connection) -> list[User]:
    with reading(db) as conn:
        rows = conn.execute(_query().order_by(users.c.name)).all()
    return [_user(row, row if row.failures is not None else None) for row in rows]


def get_user(db: Store | Connection, name: str) -> User | None:
    with reading(db) as conn:
        row = conn.execute(_query().where(users.c.name == name)).first()
    if row is None:
        return None
    return _user(row, row if row.failures is not None else None)


__all__ = [
    "User",
    "UserError",
    "add_user",
    "check_name",
    "check_roles",
    "disable",
    "enable",
    "get_user",
    "list_users",
    "roles_of",
    "set_password",
    "set_roles",
    "unlock",
]
