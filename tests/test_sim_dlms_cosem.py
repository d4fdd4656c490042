"""A second, independent client: dlms-cosem 21.3.2 (MIT, test-only) reads registers and
the load profile from the simulator over TCP (WRAPPER) and over HDLC (through a pty, since
its HDLC transport is serial-only), plain, LLS and HLS-GMAC with suite 0 ciphering (its
general-glo-ciphering)."""

from __future__ import annotations

import itertools
import logging
import os
import pty
import select
import socket
import threading
import tty
from datetime import UTC, datetime, timedelta

import pytest
from dlms_cosem import cosem, enumerations, utils
from dlms_cosem.clients.dlms_client import DlmsClient
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.parsers import ProfileGenericBufferParser
from test_sim_gurux import SimServer, sim_config

TIMEOUT = 10.0
Interface = enumerations.CosemInterface
CLOCK = cosem.CosemAttribute(
    interface=Interface.CLOCK, instance=cosem.Obis(0, 0, 1, 0, 0), attribute=2
)
COLUMNS = [
    CLOCK,
    cosem.CosemAttribute(
        interface=Interface.DATA, instance=cosem.Obis(0, 0, 96, 10, 1), attribute=2
    ),
    *(
        cosem.CosemAttribute(
            interface=Interface.REGISTER, instance=cosem.Obis(1, 0, c, 8, 0), attribute=2
        )
        for c in (1, 2, 3, 4)
    ),
]


@pytest.fixture(autouse=True)
def _quiet_dlms_cosem():
    logging.disable(logging.CRITICAL)  # it logs every frame at INFO/WARNING
    yield
    logging.disable(logging.NOTSET)


def within(timeout: float, fn):
    """Run a blocking client call; fail (not hang) if it takes longer than ``timeout``.
    dlms-cosem's serial reader loops forever on silence."""
    result: list = []
    error: list[BaseException] = []

    def run():
        try:
            result.append(fn())
        except BaseException as exc:
            error.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"dlms-cosem did not finish within {timeout} s")
    if error:
        raise error[0]
    return result[0]


def credentials(row: dict[str, str]) -> dict:
    kw: dict = {}
    if row["authentication"] == "high_gmac" or row["security_policy"] != "none":
        kw.update(
            encryption_key=bytes.fromhex(row["encryption_key"]),
            authentication_key=bytes.fromhex(row["authentication_key"]),
            client_system_title=b"DLC00001",
        )
    if row["authentication"] == "high_gmac":
        kw["authentication_method"] = enumerations.AuthenticationMechanism.HLS_GMAC
    elif row["authentication"] == "low":
        kw.update(
            authentication_method=enumerations.AuthenticationMechanism.LLS,
            password=row["password"].encode(),
        )
    return kw


def read_meter(client: DlmsClient, disconnect: bool = True) -> dict:
    out: dict = {}
    c = client
    c.connect()
    c.associate()
    try:
        for code in (1, 2, 32):
            reg = cosem.Obis(1, 0, code, 8 if code < 3 else 7, 0)
            scaler_unit = c.get(
                cosem.CosemAttribute(interface=Interface.REGISTER, instance=reg, attribute=3)
            )
            value = c.get(
                cosem.CosemAttribute(interface=Interface.REGISTER, instance=reg, attribute=2)
            )
            out[code] = (utils.parse_as_dlms_data(value), utils.parse_as_dlms_data(scaler_unit))
        end = datetime.now(UTC).replace(second=0, microsecond=0)
        rd = RangeDescriptor(
            restricting_object=CaptureObject(cosem_attribute=CLOCK, data_index=0),
            from_value=end - timedelta(days=1),
            to_value=end,
        )
        profile = cosem.CosemAttribute(
            interface=Interface.PROFILE_GENERIC, instance=cosem.Obis(1, 0, 99, 1, 0), attribute=2
        )
        raw = c.get(profile, access_descriptor=rd)
        out["profile"] = ProfileGenericBufferParser(
            capture_objects=COLUMNS, capture_period=15
        ).parse_bytes(raw)
        c.release_association()
    finally:
        if disconnect:
            c.disconnect()
    return out


@pytest.mark.parametrize(
    ("authentication", "security"),
    [("none", "none"), ("low", "none"), ("high_gmac", "none"), ("high_gmac", "suite0")],
)
def test_tcp_registers_and_profile(authentication, security):
    with SimServer(sim_config(authentication=authentication, security=security)) as sim:
        row = sim.row()
        client = DlmsClient.with_tcp_transport(
            host=row["host"],
            port=int(row["port"]),
            client_logical_address=int(row["client_address"]),
            server_logical_address=int(row["wport"]),
            timeout=5,
            **credentials(row),
        )
        got = within(TIMEOUT, lambda: read_meter(client))
        expected = sim.call(lambda m: m.energy(m.clock.now()), sim.fleet.meter(0))
    energy, (scaler, unit) = got[1]
    assert (scaler, unit) == (0, 30)
    assert abs(energy - expected[0]) < 2_000  # the same meter, read a moment apart
    assert got[32][1] == [-1, 35] and 2200 < got[32][0] < 2400
    rows = got["profile"]
    assert 96 <= len(rows) <= 97
    stamps = [r[0].value for r in rows]
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(stamps))
    assert [r[2].value for r in rows] == sorted(r[2].value for r in rows)
    assert rows[-1][2].value <= energy


def _bridge(master: int, sock: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        ready, _, _ = select.select([master, sock], [], [], 0.05)
        try:
            if master in ready:
                data = os.read(master, 4096)
                if not data:
                    return
                sock.sendall(data)
            if sock in ready:
                data = sock.recv(4096)
                if not data:
                    return
                os.write(master, data)
        except OSError:
            return


def test_hdlc_over_a_pty():
    with SimServer(sim_config(transport="hdlc", meters=8)) as sim:
        row = sim.row(5)  # physical 21: dlms-cosem mis-encodes physical addresses > 127
        master, slave = pty.openpty()
        tty.setraw(slave)
        sock = socket.create_connection((row["host"], int(row["port"])), timeout=5)
        stop = threading.Event()
        bridge = threading.Thread(target=_bridge, args=(master, sock, stop), daemon=True)
        bridge.start()
        try:
            client = DlmsClient.with_serial_hdlc_transport(
                serial_port=os.ttyname(slave),
                client_logical_address=1,
                server_logical_address=1,
                server_physical_address=int(row["server_physical"]),
                # Its reader splits frames on 0x7E: a 0x7E octet right before the
                # closing flag makes it wait for a flag until this timeout, and the
                # stray flag it then keeps makes it fail to parse the UA to DISC. So
                # the link is left to the socket close, not DISC.
                timeout=0.5,
            )
            got = within(TIMEOUT, lambda: read_meter(client, disconnect=False))
            client.io_interface._serial.close()
        finally:
            stop.set()
            bridge.join(2)
            sock.close()
            os.close(master)
            os.close(slave)
    assert got[1][1] == [0, 30] and len(got["profile"]) >= 96
