"""Meters for the head-end service, job store and results tests: a registry over a store
with meters of every kind a job must accept or refuse."""

from __future__ import annotations

from headend.keys import Keyring, MasterKey
from headend.registry import CommPath, MeterKeys, MeterRecord, Registry, SecurityProfile
from mdm.database import Store
from mdm.devices import Device, create_devices

MASTER = bytes(range(32))
EK = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
AK = bytes.fromhex("d0d1d2d3d4d5d6d7d8d9dadbdcdddedf")


def keyring(key: bytes = MASTER) -> Keyring:
    return Keyring(MasterKey(key))


def plain(
    mrid: str,
    *,
    port: int = 4059,
    zone: str = "UTC",
    backup: bool = False,
    groups: tuple[str, ...] = ("feeder-1",),
) -> MeterRecord:
    return MeterRecord(
        device=Device(mrid, protocol="dlms", time_zone=zone, manufacturer="ACME", model="X1"),
        primary=CommPath("wrapper", host="10.0.0.1", port=port, wport=1),
        backup=CommPath("hdlc", host="10.0.0.2", port=port, server_physical=17) if backup else None,
        groups=groups,
    )


def ciphered(mrid: str) -> MeterRecord:
    return MeterRecord(
        device=Device(mrid, protocol="dlms"),
        primary=CommPath("wrapper", host="10.0.0.3", port=4059, wport=1),
        security=SecurityProfile(
            client_address=1,
            authentication="hls-gmac",
            security_policy="authenticated_encrypted",
            security_suite=0,
            server_system_title="4f48530100000001",
        ),
        keys=MeterKeys(EK, AK, None),
        groups=("secure",),
    )


def register(store: Store) -> Registry:
    """M1, M2 (feeder-1, UTC), AMS (feeder-1, Europe/Amsterdam, with a backup path), K1
    (HLS-GMAC with keys), and NOPATH (known to mdm only)."""
    registry = Registry(store, keyring())
    registry.upsert(
        [
            plain("M1"),
            plain("M2", port=4060),
            plain("AMS", port=4061, zone="Europe/Amsterdam", backup=True),
            ciphered("K1"),
        ],
        who="test",
    )
    create_devices(store, [Device("NOPATH", protocol="dlms")], who="test")
    return registry
