"""The device registry: meters with their protocol, primary and backup communication paths,
security profile and keys, groups, location and usage point.

What mdm already holds (device, usage point, groups) is written through :mod:`mdm.devices`
(with its audit entries); paths and security live in the head-end tables of
:mod:`headend.schema`, audited the same way. Keys are stored encrypted under the master key
(:mod:`headend.keys`) and are never put in a ``repr``, a log line, an error message or the
audit log (which says only that a secret was set or changed).

:meth:`Registry.upsert` takes many meters in one transaction: new ones are inserted in bulk,
changed ones updated attribute by attribute with an audit entry each, unchanged ones left
alone, so writing the same meters twice changes nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from cim.errors import ErrorCode
from drivers.base import AuthenticationKind, ConnectionParams, Timeouts, TransportKind
from headend.keys import Keyring
from headend.schema import meter_paths, meter_security
from mdm.audit import record, record_created
from mdm.database import Store, reading, transaction
from mdm.devices import (
    DEVICE_ATTRIBUTES,
    Device,
    add_to_group,
    create_devices,
    create_group,
    update_device,
)
from mdm.errors import MdmError
from mdm.schema import device_groups, devices, usage_points

PROTOCOLS = ("dlms",)
DEFAULT_CLIENT_SYSTEM_TITLE = b"OPENHES1"
SECRET_FIELDS = ("password", "encryption_key", "authentication_key")
SECRET_SET = "(secret set)"
SECRET_CHANGED = "(secret changed)"
_CHUNK = 500
_OBIS = re.compile(r"\d{1,3}(\.\d{1,3}){5}")

PathRole = Literal["primary", "backup"]


@dataclass(frozen=True, slots=True)
class CommPath:
    """How to reach a meter: TCP (``host`` and ``port``) or a serial line (``serial_port``),
    and its address there (WRAPPER wPort, or HDLC logical/physical server address)."""

    transport: str = "wrapper"
    host: str | None = None
    port: int | None = None
    serial_port: str | None = None
    baud_rate: int | None = None
    server_logical: int = 1
    server_physical: int | None = None
    wport: int | None = None

    def problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.transport not in TransportKind._value2member_map_:
            out.append(("transport", f"{self.transport!r} is not wrapper or hdlc"))
        if self.host and self.serial_port:
            out.append(("serial_port", "a path is TCP (host) or serial, not both"))
        elif not self.host and not self.serial_port:
            out.append(("host", "missing (nor a serial_port)"))
        if self.host and self.port is None:
            out.append(("port", "missing"))
        for name, top in (
            ("port", 65535),
            ("server_logical", 0x3FFF),
            ("server_physical", 0x3FFF),
            ("wport", 0xFFFF),
        ):
            value = getattr(self, name)
            low = 1 if name == "port" else 0
            if value is not None and not low <= value <= top:
                out.append((name, f"{value} is not {low}..{top}"))
        if self.baud_rate is not None and self.baud_rate <= 0:
            out.append(("baud_rate", f"{self.baud_rate} is not a baud rate"))
        return out


@dataclass(frozen=True, slots=True)
class SecurityProfile:
    client_address: int = 16
    authentication: str = "none"  # none | lls | hls-gmac
    security_policy: str = "none"  # none | authenticated_encrypted
    security_suite: int | None = None
    server_system_title: str | None = None  # the meter's, 16 hex digits
    invocation_counter_obis: str | None = "0.0.43.1.0.255"
    logical_device_name: str | None = None

    @property
    def ciphered(self) -> bool:
        return self.security_suite is not None

    @property
    def keyed(self) -> bool:
        return self.ciphered or self.authentication == AuthenticationKind.HLS_GMAC


@dataclass(frozen=True, slots=True)
class MeterKeys:
    """A meter's secrets in the clear (in memory only). Left out of ``repr``."""

    encryption_key: bytes | None = field(default=None, repr=False)
    authentication_key: bytes | None = field(default=None, repr=False)
    password: bytes | None = field(default=None, repr=False)

    def present(self) -> dict[str, bytes]:
        return {name: getattr(self, name) for name in SECRET_FIELDS if getattr(self, name)}


@dataclass(frozen=True, slots=True)
class MeterRecord:
    device: Device
    primary: CommPath
    backup: CommPath | None = None
    security: SecurityProfile = SecurityProfile()
    keys: MeterKeys = MeterKeys()
    groups: tuple[str, ...] = ()

    @property
    def mrid(self) -> str:
        return self.device.mrid

    def problems(self) -> list[tuple[str, str]]:
        """(field, reason) for each thing wrong with this meter; empty when it is usable."""
        out: list[tuple[str, str]] = []
        if self.device.protocol not in PROTOCOLS:
            out.append(("protocol", f"{self.device.protocol!r} is not one of {PROTOCOLS}"))
        out += self.primary.problems()
        if self.backup is not None:
            out += [(f"backup_{name}", why) for name, why in self.backup.problems()]
        s, k = self.security, self.keys
        if s.authentication not in AuthenticationKind._value2member_map_:
            out.append(("authentication", f"{s.authentication!r} is not none, lls or hls-gmac"))
        if s.security_suite not in (None, 0):
            out.append(("security_suite", f"{s.security_suite} is not supported (only 0)"))
        if not 0 <= s.client_address <= 0xFFFF:
            out.append(("client_address", f"{s.client_address} is not 0..65535"))
        if s.security_policy not in ("none", "authenticated_encrypted"):
            out.append(("security_policy", f"{s.security_policy!r} is not known"))
        if s.security_policy == "authenticated_encrypted" and not s.ciphered:
            out.append(("security_suite", "missing for an authenticated_encrypted policy"))
        if s.keyed:
            for name in ("encryption_key", "authentication_key"):
                if getattr(k, name) is None:
                    out.append((name, "missing for a ciphered or HLS-GMAC profile"))
        for name in ("encryption_key", "authentication_key"):
            value = getattr(k, name)
            if value is not None and len(value) != 16:
                out.append((name, "must be 16 octets"))
        if s.authentication == AuthenticationKind.LLS and not k.password:
            out.append(("password", "missing for LLS authentication"))
        if s.server_system_title is not None and not re.fullmatch(
            r"[0-9a-fA-F]{16}", s.server_system_title
        ):
            out.append(("system_title", "must be 8 octets in hex"))
        if s.invocation_counter_obis and not _OBIS.fullmatch(s.invocation_counter_obis):
            out.append(("invocation_counter_obis", "is not a dotted OBIS code"))
        return out


@dataclass(frozen=True, slots=True)
class UpsertSummary:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    audit_entries: int = 0


_PATH_FIELDS = tuple(f.name for f in dataclasses.fields(CommPath))
_SECURITY_FIELDS = tuple(f.name for f in dataclasses.fields(SecurityProfile))


@dataclass(slots=True)
class _Stored:
    id: int
    device: Device
    paths: dict[str, CommPath]
    security: SecurityProfile | None
    tokens: dict[str, str | None]


def _fields(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in names}


def _context(mrid: str, name: str) -> str:
    return f"{mrid}/{name}"


class Registry:
    """The registry over a store. ``keyring`` defaults to the environment's master key
    (``OPENHES_MASTER_KEY``), read when a secret is first needed."""

    def __init__(
        self,
        store: Store,
        keyring: Keyring | None = None,
        *,
        client_system_title: bytes = DEFAULT_CLIENT_SYSTEM_TITLE,
    ) -> None:
        if len(client_system_title) != 8:
            raise ValueError("the client system title is 8 octets")
        self.store = store
        self._keyring = keyring
        self.client_system_title = client_system_title

    @property
    def keyring(self) -> Keyring:
        if self._keyring is None:
            self._keyring = Keyring.from_env()
        return self._keyring

    def __repr__(self) -> str:
        return f"Registry({self.store!r})"

    # -- writing -------------------------------------------------------------------------
    def upsert(
        self,
        records: Sequence[MeterRecord],
        *,
        who: str,
        note: str | None = None,
        conn: Connection | None = None,
    ) -> UpsertSummary:
        """Create or update ``records`` in one transaction (all or none)."""
        for record_ in records:
            problems = record_.problems()
            if problems:
                name, why = problems[0]
                raise MdmError(ErrorCode.BAD_VALUE, f"{name}: {why}", key=record_.mrid)
        with transaction(conn if conn is not None else self.store) as c:
            return _Upsert(self.keyring, c, who, note).run(records)

    # -- reading -------------------------------------------------------------------------
    def get(self, mrid: str) -> MeterRecord:
        """The meter without its keys (see :meth:`keys`)."""
        with reading(self.store) as conn:
            stored = _load(conn, [mrid]).get(mrid)
            if stored is None or "primary" not in stored.paths:
                raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no meter {mrid!r}", key=mrid)
            groups = _groups_of(conn, stored.id)
        return MeterRecord(
            device=stored.device,
            primary=stored.paths["primary"],
            backup=stored.paths.get("backup"),
            security=stored.security or SecurityProfile(),
            groups=groups,
        )

    def keys(self, mrid: str) -> MeterKeys:
        with reading(self.store) as conn:
            stored = _load(conn, [mrid]).get(mrid)
        if stored is None:
            raise MdmError(ErrorCode.UNKNOWN_DEVICE, f"no meter {mrid!r}", key=mrid)
        return _decrypt(self.keyring, mrid, stored.tokens)

    def connection_params(
        self,
        device: str | MeterRecord,
        path: PathRole = "primary",
        *,
        timeouts: Timeouts | None = None,
        retries: int = 2,
    ) -> ConnectionParams:
        """What a driver needs to reach ``device`` (an mRID) over its ``path``."""
        if path not in ("primary", "backup"):
            raise ValueError(f"path is 'primary' or 'backup', not {path!r}")
        meter = self.get(device if isinstance(device, str) else device.mrid)
        chosen = meter.primary if path == "primary" else meter.backup
        if chosen is None:
            raise MdmError(ErrorCode.BAD_VALUE, f"meter {meter.mrid!r} has no {path} path")
        if chosen.serial_port:
            raise MdmError(
                ErrorCode.BAD_VALUE,
                f"meter {meter.mrid!r}: serial paths are not supported by the drivers yet",
            )
        s = meter.security
        keys = self.keys(meter.mrid) if (s.keyed or s.authentication == "lls") else MeterKeys()
        wrapper = chosen.transport == TransportKind.WRAPPER
        return ConnectionParams(
            meter_id=meter.mrid,
            host=chosen.host or "",
            port=chosen.port or 4059,
            transport=TransportKind(chosen.transport),
            client_address=s.client_address,
            server_address=(chosen.wport or chosen.server_logical)
            if wrapper
            else chosen.server_logical,
            physical_address=None if wrapper else chosen.server_physical,
            authentication=AuthenticationKind(s.authentication),
            password=keys.password if s.authentication == "lls" else None,
            security_suite=s.security_suite,
            block_cipher_key=keys.encryption_key if s.keyed else None,
            authentication_key=keys.authentication_key if s.keyed else None,
            system_title=self.client_system_title if s.keyed else None,
            server_system_title=bytes.fromhex(s.server_system_title)
            if s.keyed and s.server_system_title
            else None,
            invocation_counter_obis=s.invocation_counter_obis or "0.0.43.1.0.255",
            timeouts=timeouts or Timeouts(),
            retries=retries,
        )

    def reencrypt(self, *, who: str) -> int:
        """Re-encrypt every secret stored under an older master key with the current one;
        returns the number of meters changed."""
        changed = 0
        current = self.keyring.key_id
        with transaction(self.store) as conn:
            rows = conn.execute(
                select(meter_security, devices.c.mrid)
                .join(devices, devices.c.id == meter_security.c.device_id)
                .where(meter_security.c.key_id != current)
            ).all()
            for row in rows:
                values = {
                    name: self.keyring.reencrypt(token, _context(row.mrid, name))
                    for name in SECRET_FIELDS
                    if (token := getattr(row, name))
                }
                conn.execute(
                    update(meter_security)
                    .where(meter_security.c.device_id == row.device_id)
                    .values(**values, key_id=current, updated_at=datetime.now(UTC))
                )
                record(
                    conn,
                    who=who,
                    object_type="meter_security",
                    object_id=row.mrid,
                    changes=[("key_id", row.key_id, current)],
                )
                changed += 1
        return changed


# --- loading ------------------------------------------------------------------------------


# Built once (lists as expanding parameters): building them per call cost more than running
# them on SQLite.
_DEVICES_BY_MRID = (
    select(devices, usage_points.c.mrid.label("usage_point"))
    .select_from(devices.outerjoin(usage_points))
    .where(devices.c.mrid.in_(bindparam("mrids", expanding=True)))
)
_PATHS_OF = select(meter_paths).where(meter_paths.c.device_id.in_(bindparam("ids", expanding=True)))
_SECURITY_OF = select(meter_security).where(
    meter_security.c.device_id.in_(bindparam("ids", expanding=True))
)


def _load(conn: Connection, mrids: Sequence[str]) -> dict[str, _Stored]:
    out: dict[str, _Stored] = {}
    wanted = list(dict.fromkeys(mrids))
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        by_id: dict[int, _Stored] = {}
        for row in conn.execute(_DEVICES_BY_MRID, {"mrids": chunk}):
            device = Device(mrid=row.mrid, **{k: getattr(row, k) for k in DEVICE_ATTRIBUTES})
            stored = _Stored(row.id, device, {}, None, dict.fromkeys(SECRET_FIELDS))
            out[row.mrid] = by_id[row.id] = stored
        if not by_id:
            continue
        ids = {"ids": list(by_id)}
        for row in conn.execute(_PATHS_OF, ids):
            by_id[row.device_id].paths[row.role] = CommPath(
                **{k: getattr(row, k) for k in _PATH_FIELDS}
            )
        for row in conn.execute(_SECURITY_OF, ids):
            stored = by_id[row.device_id]
            stored.security = SecurityProfile(**{k: getattr(row, k) for k in _SECURITY_FIELDS})
            stored.tokens = {name: getattr(row, name) for name in SECRET_FIELDS}
    return out


def _groups_of(conn: Connection, device_id: int) -> tuple[str, ...]:
    from mdm.schema import device_group_members

    query = (
        select(device_groups.c.name)
        .join(device_group_members, device_group_members.c.group_id == device_groups.c.id)
        .where(device_group_members.c.device_id == device_id)
        .order_by(device_groups.c.name)
    )
    return tuple(conn.execute(query).scalars())


def _decrypt(keyring: Keyring, mrid: str, tokens: dict[str, str | None]) -> MeterKeys:
    return MeterKeys(
        **{
            name: keyring.decrypt(token, _context(mrid, name)) if token else None
            for name, token in tokens.items()
        }
    )


# --- writing ------------------------------------------------------------------------------


class _Upsert:
    def __init__(self, keyring: Keyring, conn: Connection, who: str, note: str | None) -> None:
        self.keyring = keyring
        self.conn = conn
        self.who = who
        self.note = note
        self.now = datetime.now(UTC)
        self.audit = 0

    def run(self, records: Sequence[MeterRecord]) -> UpsertSummary:
        mrids = [r.mrid for r in records]
        if len(set(mrids)) != len(mrids):
            raise MdmError(ErrorCode.BAD_VALUE, "the same mRID appears twice")
        stored = _load(self.conn, mrids)
        self._usage_points(records)
        new = [r for r in records if r.mrid not in stored]
        if new:
            ids = create_devices(self.conn, [r.device for r in new], who=self.who, note=self.note)
            self.audit += len(new)
            self._insert_new(new, ids)
        updated = 0
        for r in records:
            if r.mrid in stored and self._update(r, stored[r.mrid]):
                updated += 1
        self._groups(records)
        return UpsertSummary(
            created=len(new),
            updated=updated,
            unchanged=len(records) - len(new) - updated,
            audit_entries=self.audit,
        )

    def _usage_points(self, records: Iterable[MeterRecord]) -> None:
        wanted = sorted({r.device.usage_point for r in records if r.device.usage_point})
        known: set[str] = set()
        for start in range(0, len(wanted), _CHUNK):
            query = select(usage_points.c.mrid).where(
                usage_points.c.mrid.in_(wanted[start : start + _CHUNK])
            )
            known.update(self.conn.execute(query).scalars())
        missing = [mrid for mrid in wanted if mrid not in known]
        if missing:
            # As mdm.devices.create_usage_point does, in one statement for the batch.
            self.conn.execute(
                insert(usage_points),
                [
                    {
                        "mrid": m,
                        "kind": "electricity",
                        "created_at": self.now,
                        "updated_at": self.now,
                    }
                    for m in missing
                ],
            )
            record_created(
                self.conn,
                who=self.who,
                object_type="usage_point",
                objects={m: {"kind": "electricity"} for m in missing},
                at=self.now,
                note=self.note,
            )
            self.audit += len(missing)

    def _secret_tokens(self, r: MeterRecord) -> dict[str, str | None]:
        return {
            name: self.keyring.encrypt(value, _context(r.mrid, name)) if value else None
            for name, value in ((n, getattr(r.keys, n)) for n in SECRET_FIELDS)
        }

    def _security_row(self, r: MeterRecord) -> dict[str, Any]:
        return {
            **_fields(r.security, _SECURITY_FIELDS),
            **self._secret_tokens(r),
            "key_id": self.keyring.key_id if r.keys.present() else None,
            "updated_at": self.now,
        }

    def _insert_new(self, new: Sequence[MeterRecord], ids: dict[str, int]) -> None:
        paths, security, logged = [], [], {}
        for r in new:
            for role, path in (("primary", r.primary), ("backup", r.backup)):
                if path is not None:
                    values = _fields(path, _PATH_FIELDS)
                    paths.append({"device_id": ids[r.mrid], "role": role, **values})
                    logged[f"{r.mrid}/{role}"] = values
            security.append({"device_id": ids[r.mrid], **self._security_row(r)})
        for row in paths:
            row["updated_at"] = self.now
        self.conn.execute(insert(meter_paths), paths)
        self.conn.execute(insert(meter_security), security)
        record_created(
            self.conn, who=self.who, object_type="meter_path", objects=logged, at=self.now
        )
        shown = {
            r.mrid: {
                **_fields(r.security, _SECURITY_FIELDS),
                **dict.fromkeys(r.keys.present(), SECRET_SET),
            }
            for r in new
        }
        record_created(
            self.conn, who=self.who, object_type="meter_security", objects=shown, at=self.now
        )
        self.audit += len(logged) + len(shown)

    def _update(self, r: MeterRecord, old: _Stored) -> bool:
        changed = False
        device_changes = {
            k: getattr(r.device, k)
            for k in DEVICE_ATTRIBUTES
            if getattr(r.device, k) != getattr(old.device, k)
        }
        if device_changes:
            update_device(self.conn, r.mrid, who=self.who, note=self.note, **device_changes)
            self.audit += len(device_changes)
            changed = True
        for role, path in (("primary", r.primary), ("backup", r.backup)):
            changed |= self._update_path(r.mrid, old, role, path)
        changed |= self._update_security(r, old)
        return changed

    def _update_path(self, mrid: str, old: _Stored, role: str, path: CommPath | None) -> bool:
        before = old.paths.get(role)
        if before == path:
            return False
        where = (meter_paths.c.device_id == old.id) & (meter_paths.c.role == role)
        if path is None:
            self.conn.execute(delete(meter_paths).where(where))
            changes = [(k, getattr(before, k), None) for k in _PATH_FIELDS]
        elif before is None:
            values = _fields(path, _PATH_FIELDS)
            self.conn.execute(
                insert(meter_paths).values(
                    device_id=old.id, role=role, updated_at=self.now, **values
                )
            )
            changes = [(k, None, v) for k, v in values.items() if v is not None]
        else:
            changes = [
                (k, getattr(before, k), getattr(path, k))
                for k in _PATH_FIELDS
                if getattr(before, k) != getattr(path, k)
            ]
            values = {k: new for k, _, new in changes}
            self.conn.execute(
                update(meter_paths).where(where).values(**values, updated_at=self.now)
            )
        self.audit += record(
            self.conn,
            who=self.who,
            object_type="meter_path",
            object_id=f"{mrid}/{role}",
            changes=changes,
            at=self.now,
            note=self.note,
        )
        return True

    def _update_security(self, r: MeterRecord, old: _Stored) -> bool:
        if old.security is None:  # a device registered in mdm before the head-end knew it
            self.conn.execute(
                insert(meter_security).values(device_id=old.id, **self._security_row(r))
            )
            shown = {**_fields(r.security, _SECURITY_FIELDS)}
            shown.update(dict.fromkeys(r.keys.present(), SECRET_SET))
            record_created(
                self.conn,
                who=self.who,
                object_type="meter_security",
                objects={r.mrid: shown},
                at=self.now,
                note=self.note,
            )
            self.audit += 1
            return True
        before = old.security
        changes: list[tuple[str, Any, Any]] = [
            (k, getattr(before, k), getattr(r.security, k))
            for k in _SECURITY_FIELDS
            if getattr(before, k) != getattr(r.security, k)
        ]
        current = _decrypt(self.keyring, r.mrid, old.tokens)
        values: dict[str, Any] = {k: new for k, _, new in changes}
        for name in SECRET_FIELDS:
            new, was = getattr(r.keys, name), getattr(current, name)
            if new != was:
                values[name] = self.keyring.encrypt(new, _context(r.mrid, name)) if new else None
                changes.append((name, SECRET_SET if was else None, SECRET_CHANGED if new else None))
        if not changes:
            return False
        if any(name in values for name in SECRET_FIELDS):
            # Re-encrypt the others too, so one row's secrets are under one master key.
            for name in SECRET_FIELDS:
                if name not in values and (value := getattr(r.keys, name)):
                    values[name] = self.keyring.encrypt(value, _context(r.mrid, name))
            values["key_id"] = self.keyring.key_id if r.keys.present() else None
        self.conn.execute(
            update(meter_security)
            .where(meter_security.c.device_id == old.id)
            .values(**values, updated_at=self.now)
        )
        self.audit += record(
            self.conn,
            who=self.who,
            object_type="meter_security",
            object_id=r.mrid,
            changes=changes,
            at=self.now,
            note=self.note,
        )
        return True

    def _groups(self, records: Sequence[MeterRecord]) -> None:
        members: dict[str, list[str]] = {}
        for r in records:
            for group in r.groups:
                members.setdefault(group, []).append(r.mrid)
        if not members:
            return
        known = set(
            self.conn.execute(
                select(device_groups.c.name).where(device_groups.c.name.in_(list(members)))
            ).scalars()
        )
        for group, mrids in members.items():
            if group not in known:
                create_group(self.conn, group, who=self.who, note=self.note)
                self.audit += 1
            self.audit += add_to_group(self.conn, group, mrids, who=self.who, note=self.note)


__all__ = [
    "DEFAULT_CLIENT_SYSTEM_TITLE",
    "PROTOCOLS",
    "CommPath",
    "MeterKeys",
    "MeterRecord",
    "Registry",
    "SecurityProfile",
    "UpsertSummary",
]
