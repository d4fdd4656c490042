"""The device registry: keys encrypted at rest under the master key, upserts with audit, and
connection parameters built from what is stored."""

from __future__ import annotations

import base64
import dataclasses

import pytest
from sqlalchemy import select

from drivers.base import AuthenticationKind, TransportKind
from headend.keys import Keyring, MasterKey, MasterKeyError, key_id_of, parse_master_key
from headend.registry import CommPath, MeterKeys, MeterRecord, Registry, SecurityProfile
from headend.schema import meter_paths, meter_security
from mdm import audit
from mdm.devices import Device, create_devices, group_members
from mdm.errors import MdmError
from mdm.schema import audit_log

pytest_plugins = ["mdm_conftest"]

MASTER = bytes(range(32))
EK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AK = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")
PASSWORD = b"s3cret-lls"


def keyring(key: bytes = MASTER) -> Keyring:
    return Keyring(MasterKey(key))


def meter(mrid: str = "M1", **changes) -> MeterRecord:
    record = MeterRecord(
        device=Device(mrid, serial="0001", name=f"N-{mrid}", protocol="dlms", usage_point="UP1"),
        primary=CommPath("wrapper", host="10.0.0.1", port=4059, wport=7),
        backup=CommPath("hdlc", host="10.0.0.2", port=4060, server_physical=17),
        security=SecurityProfile(
            client_address=1,
            authentication="hls-gmac",
            security_policy="authenticated_encrypted",
            security_suite=0,
            server_system_title="4f48530100000001",
        ),
        keys=MeterKeys(EK, AK, None),
        groups=("feeder-1",),
    )
    return dataclasses.replace(record, **changes)


# --- keys ---------------------------------------------------------------------------------


def test_master_key_from_hex_or_base64_and_clear_errors():
    assert parse_master_key(MASTER.hex()) == MASTER
    assert parse_master_key(base64.b64encode(MASTER).decode()) == MASTER
    assert parse_master_key(base64.urlsafe_b64encode(MASTER).decode()) == MASTER
    for bad in ("", "abcd", "zz" * 32, base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(MasterKeyError, match="32 bytes"):
            parse_master_key(bad)
    with pytest.raises(MasterKeyError, match="no master key: set OPENHES_MASTER_KEY"):
        Keyring.from_env({})
    ring = Keyring.from_env({"OPENHES_MASTER_KEY": MASTER.hex()})
    assert ring.key_id == key_id_of(MASTER)
    assert MASTER.hex() not in repr(ring) and MASTER.hex() not in repr(ring.current)


def test_encryption_round_trip_context_binding_and_wrong_key():
    ring = keyring()
    token = ring.encrypt(EK, "M1/encryption_key")
    assert token != ring.encrypt(EK, "M1/encryption_key")  # a random nonce per value
    assert EK.hex() not in token and EK not in token.encode()
    assert ring.decrypt(token, "M1/encryption_key") == EK
    with pytest.raises(MasterKeyError, match="tampered"):
        ring.decrypt(token, "M2/encryption_key")  # copied to another meter: refused
    other = keyring(bytes(32))
    with pytest.raises(MasterKeyError, match="not configured") as caught:
        other.decrypt(token, "M1/encryption_key")
    assert EK.hex() not in str(caught.value)
    impostor = Keyring(MasterKey(bytes(32), key_id=ring.key_id))  # same id, wrong key
    with pytest.raises(MasterKeyError, match="wrong master key"):
        impostor.decrypt(token, "M1/encryption_key")


def test_meter_keys_and_connection_params_repr_hide_secrets():
    keys = MeterKeys(EK, AK, PASSWORD)
    assert EK.hex() not in repr(keys) and "s3cret" not in repr(keys)
    assert "s3cret" not in repr(meter(keys=keys))


# --- the registry -------------------------------------------------------------------------


def test_keys_are_encrypted_at_rest_and_decrypt(store):
    registry = Registry(store, keyring())
    registry.upsert([meter(keys=MeterKeys(EK, AK, PASSWORD))], who="test")
    with store.connect() as conn:
        row = conn.execute(select(meter_security)).one()
        paths = conn.execute(select(meter_paths)).all()
        logged = conn.execute(select(audit_log)).all()
    stored = " ".join(str(v) for v in row)
    for secret in (EK.hex(), AK.hex(), "s3cret", EK.hex().upper()):
        assert secret not in stored
        assert all(secret not in str(v) for entry in logged for v in entry)
    assert row.key_id == key_id_of(MASTER)
    assert registry.keys("M1") == MeterKeys(EK, AK, PASSWORD)
    assert {p.role for p in paths} == {"primary", "backup"}
    with pytest.raises(MasterKeyError):
        Registry(store, keyring(bytes(32))).keys("M1")


def test_connection_params_round_trip(store):
    registry = Registry(store, keyring(), client_system_title=b"HEADEND1")
    registry.upsert([meter()], who="test")
    primary = registry.connection_params("M1")
    assert (primary.host, primary.port, primary.transport) == ("10.0.0.1", 4059, "wrapper")
    assert primary.server_address == 7 and primary.physical_address is None
    assert primary.client_address == 1
    assert primary.authentication is AuthenticationKind.HLS_GMAC
    assert primary.security_suite == 0
    assert (primary.block_cipher_key, primary.authentication_key) == (EK, AK)
    assert primary.system_title == b"HEADEND1"
    assert primary.server_system_title == bytes.fromhex("4f48530100000001")
    backup = registry.connection_params("M1", "backup")
    assert backup.transport is TransportKind.HDLC
    assert (backup.host, backup.port, backup.server_address, backup.physical_address) == (
        "10.0.0.2",
        4060,
        1,
        17,
    )
    assert EK.hex() not in repr(primary)


def test_lls_and_missing_backup(store):
    registry = Registry(store, keyring())
    lls = meter(
        backup=None,
        security=SecurityProfile(client_address=32, authentication="lls"),
        keys=MeterKeys(password=PASSWORD),
    )
    registry.upsert([lls], who="test")
    params = registry.connection_params("M1")
    assert params.password == PASSWORD and params.block_cipher_key is None
    with pytest.raises(MdmError, match="no backup path"):
        registry.connection_params("M1", "backup")
    with pytest.raises(MdmError, match="no meter"):
        registry.connection_params("nope")


def test_upsert_is_idempotent_and_audits_changes(store):
    registry = Registry(store, keyring())
    first = registry.upsert([meter("M1"), meter("M2")], who="test")
    assert (first.created, first.updated, first.unchanged) == (2, 0, 0)
    assert group_members(store, "feeder-1") == ["M1", "M2"]
    again = registry.upsert([meter("M1"), meter("M2")], who="test")
    assert (again.created, again.updated, again.unchanged, again.audit_entries) == (0, 0, 2, 0)
    new_ak = bytes(16)
    changed = meter(
        "M1",
        primary=CommPath("wrapper", host="10.9.9.9", port=4059, wport=7),
        keys=MeterKeys(EK, new_ak, None),
    )
    summary = registry.upsert([changed, meter("M2")], who="ops")
    assert (summary.created, summary.updated, summary.unchanged) == (0, 1, 1)
    entries = [e for e in audit.entries(store) if e.who == "ops"]
    assert {(e.object_type, e.object_id, e.attribute) for e in entries} == {
        ("meter_path", "M1/primary", "host"),
        ("meter_security", "M1", "authentication_key"),
    }
    host = next(e for e in entries if e.attribute == "host")
    assert (host.old_value, host.new_value) == ("10.0.0.1", "10.9.9.9")
    secret = next(e for e in entries if e.attribute == "authentication_key")
    assert new_ak.hex() not in f"{secret.old_value}{secret.new_value}"
    assert registry.keys("M1").authentication_key == new_ak
    assert registry.get("M1").primary.host == "10.9.9.9"


def test_a_bad_meter_refuses_the_whole_batch(store):
    registry = Registry(store, keyring())
    bad = meter("M2", keys=MeterKeys(None, AK, None))
    with pytest.raises(MdmError, match="encryption_key: missing"):
        registry.upsert([meter("M1"), bad], who="test")
    with store.connect() as conn:
        assert conn.execute(select(meter_security)).all() == []


def test_rotation_reencrypts_under_the_new_master_key(store):
    old = keyring()
    Registry(store, old).upsert([meter()], who="test")
    new_key = MasterKey(bytes(range(100, 132)))
    rotated = Registry(store, Keyring(new_key, (old.current,)))
    assert rotated.reencrypt(who="ops") == 1
    assert rotated.reencrypt(who="ops") == 0
    assert Registry(store, Keyring(new_key)).keys("M1") == MeterKeys(EK, AK, None)
    with pytest.raises(MasterKeyError):
        Registry(store, old).keys("M1")


def test_a_device_known_to_mdm_gets_its_head_end_data(store):
    create_devices(store, [Device("M1", protocol="dlms", usage_point=None)], who="mdm")
    registry = Registry(store, keyring())
    summary = registry.upsert([meter()], who="test")
    assert (summary.created, summary.updated) == (0, 1)
    assert registry.keys("M1") == MeterKeys(EK, AK, None)
    assert registry.connection_params("M1").port == 4059
    assert registry.get("M1").device.usage_point == "UP1"
    with pytest.raises(ValueError, match="primary"):
        registry.connection_params("M1", "tertiary")  # type: ignore[arg-type]
