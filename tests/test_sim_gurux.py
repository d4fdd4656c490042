"""The simulator speaks DLMS: the gurux-dlms client, driven sans-IO over a plain socket,
associates (none, LLS, HLS-GMAC; plain and suite-0 ciphered; WRAPPER and HDLC), reads the
object list and every attribute it may read, reads the load profile by range and by
entry, switches the disconnector and transfers a firmware image.

``SimServer`` and ``GuruxSession`` are imported by the other simulator tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from gurux_dlms import GXByteBuffer, GXDateTime, GXDLMSException, GXReplyData
from gurux_dlms.enums import Authentication, InterfaceType, ObjectType, Security
from gurux_dlms.objects import (
    GXDLMSClock,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSImageTransfer,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
)
from gurux_dlms.secure import GXDLMSSecureClient

from drivers.sim.faults import FaultSpec, FleetFaults
from drivers.sim.fleet import Fleet, FleetConfig

TIMEOUT = 5.0
CLIENT_TITLE = b"GRX12345"


class SimServer:
    """A fleet served by an asyncio loop in a background thread (ephemeral ports)."""

    def __init__(self, config: FleetConfig) -> None:
        self.fleet = Fleet(config)
        self.loop = asyncio.new_event_loop()
        self._servers: list[asyncio.Server] = []
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> SimServer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self.fleet.serve(), self.loop)
        self._servers = future.result(TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.fleet.close(self._servers), self.loop).result(
                TIMEOUT
            )
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(TIMEOUT)
        self.loop.close()

    def call(self, fn, *args):
        """Run ``fn`` on the simulator's loop thread (meters are not thread-safe)."""

        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(TIMEOUT)

    @property
    def port(self) -> int:
        return self.fleet.ports[0]

    def row(self, index: int = 0) -> dict[str, str]:
        return self.fleet.address_book()[index]


def sim_config(**kw) -> FleetConfig:
    base = {
        "meters": 1,
        "base_port": 0,
        "shared_port": True,
        "profile_days": 3,
        "key_secret": b"k" * 32,
    }
    base.update(kw)
    return FleetConfig(**base)


class GuruxSession:
    """A gurux-dlms client over a blocking socket, set up from an address-book row."""

    def __init__(
        self,
        row: dict[str, str],
        *,
        client_sap: int | None = None,
        authentication: str | None = None,
        password: bytes | None = None,
        ciphered: bool | None = None,
        dedicated_key: bytes | None = None,
        max_pdu: int = 0xFFFF,
        max_info: int | None = None,
        invocation_counter: int = 0,
        ek: bytes | None = None,
    ) -> None:
        auth = {
            "none": Authentication.NONE,
            "low": Authentication.LOW,
            "high_gmac": Authentication.HIGH_GMAC,
        }[authentication or row["authentication"]]
        hdlc = row["transport"] == "hdlc"
        if hdlc:
            physical = int(row["server_physical"])
            server = (1 << 14) | physical if physical > 0x7F else (1 << 7) | physical
        else:
            server = int(row["wport"])
        sap = client_sap if client_sap is not None else int(row["client_address"])
        secret = password if password is not None else (row["password"].encode() or None)
        c = GXDLMSSecureClient(
            True, sap, server, auth, secret, InterfaceType.HDLC if hdlc else InterfaceType.WRAPPER
        )
        if hdlc:
            c.serverAddressSize = 4 if physical > 0x7F else 2
            if max_info:
                c.hdlcSettings.maxInfoTX = max_info
                c.hdlcSettings.maxInfoRX = max_info
        c.maxReceivePDUSize = max_pdu
        c.ciphering.systemTitle = CLIENT_TITLE
        c.ciphering.blockCipherKey = ek or bytes.fromhex(row["encryption_key"])
        c.ciphering.authenticationKey = bytes.fromhex(row["authentication_key"])
        if ciphered if ciphered is not None else row["security_policy"] != "none":
            c.ciphering.security = Security.AUTHENTICATION_ENCRYPTION
        if dedicated_key is not None:
            c.ciphering.dedicatedKey = dedicated_key
        c.ciphering.invocationCounter = invocation_counter
        self.client = c
        self.hdlc = hdlc
        self.address = (row["host"], int(row["port"]))
        self.sock: socket.socket | None = None

    def __enter__(self) -> GuruxSession:
        self.sock = socket.create_connection(self.address, timeout=TIMEOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sock is not None:
            self.sock.close()

    def _packet(self, data: bytes | None, reply: GXReplyData) -> None:
        if data:
            self.sock.sendall(bytes(data))
        buf = GXByteBuffer()
        notify = GXReplyData()
        # gurux prints on ciphered frames; keep test output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            while not self.client.getData(buf, reply, notify):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("simulator closed the connection")
                buf.set(chunk)

    def exchange(self, request) -> GXReplyData:
        frames = []
        pending = [request]
        while pending:  # gurux nests frame lists (readList, method with blocks)
            item = pending.pop(0)
            if isinstance(item, bytes | bytearray):
                frames.append(item)
            else:
                pending[:0] = list(item)
        reply = GXReplyData()
        for frame in frames:
            reply.clear()
            self._packet(frame, reply)
            while reply.isMoreData():
                self._packet(self.client.receiverReady(reply), reply)
            if reply.error:  # gurux raises for some errors and records others
                raise GXDLMSException(reply.error)
        return reply

    def associate(self) -> None:
        c = self.client
        if self.hdlc:
            c.parseUAResponse(self.exchange(c.snrmRequest()).data)
        c.parseAareResponse(self.exchange(c.aarqRequest()).data)
        if c.isAuthenticationRequired:
            reply = self.exchange(c.getApplicationAssociationRequest())
            with contextlib.redirect_stdout(io.StringIO()):
                c.parseApplicationAssociationResponse(reply.data)

    def release(self) -> None:
        c = self.client
        request = c.releaseRequest()
        if request:
            self.exchange(request)
        if self.hdlc:
            self.exchange(c.disconnectRequest())

    def read(self, obj, attribute: int):
        reply = self.exchange(self.client.read(obj, attribute))
        self.client.updateValue(obj, attribute, reply.value)
        return obj

    def objects(self):
        reply = self.exchange(self.client.getObjectsRequest())
        return self.client.parseObjects(reply.data, True)

    def method(self, frames) -> GXReplyData:
        return self.exchange(frames)


def octets(value) -> bytes:
    """gurux hands printable octet-strings back as str."""
    return value.encode() if isinstance(value, str) else bytes(value)


def full_read(s: GuruxSession) -> dict:
    """Registers (scaler_unit then value) and one day of load profile by range."""
    out = {}
    for ln in ("1.0.1.8.0.255", "1.0.2.8.0.255", "1.0.32.7.0.255", "1.0.31.7.0.255"):
        reg = GXDLMSRegister(ln)
        s.read(reg, 3)
        s.read(reg, 2)
        out[ln] = (reg.value, reg.scaler, reg.unit)
    pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
    s.read(pg, 3)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    reply = s.exchange(s.client.readRowsByRange(pg, end - timedelta(hours=24), end))
    s.client.updateValue(pg, 2, reply.value)
    out["profile"] = pg.buffer
    return out


# -- tests ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain():
    with SimServer(sim_config(meters=2)) as sim:
        yield sim


@pytest.mark.parametrize(
    ("transport", "authentication", "security"),
    [("wrapper", "none", "none"), ("wrapper", "high_gmac", "suite0"), ("hdlc", "low", "suite0")],
)
def test_reads_object_list_and_every_readable_attribute(transport, authentication, security):
    config = sim_config(transport=transport, authentication=authentication, security=security)
    with SimServer(config) as sim, GuruxSession(sim.row(0)) as s:
        s.associate()
        objects = s.objects()
        assert len(objects) >= 35
        read = failures = 0
        for obj in objects:
            attrs = list(range(1, obj.getAttributeCount() + 1))
            if obj.objectType == ObjectType.PROFILE_GENERIC:
                attrs = [3, *(a for a in attrs if a not in (2, 3)), 2]  # columns before rows
            for attr in attrs:
                if not int(obj.getAccess(attr)) & 1:
                    continue
                try:
                    s.read(obj, attr)
                    read += 1
                except GXDLMSException as exc:
                    failures += 1
                    print(obj.objectType, obj.logicalName, attr, exc)
        s.release()
    assert failures == 0
    assert read >= 120
    kinds = {o.objectType for o in objects}
    assert {
        ObjectType.ASSOCIATION_LOGICAL_NAME,
        ObjectType.CLOCK,
        ObjectType.REGISTER,
        ObjectType.PROFILE_GENERIC,
        ObjectType.DISCONNECT_CONTROL,
        ObjectType.IMAGE_TRANSFER,
        ObjectType.SECURITY_SETUP,
        ObjectType.DATA,
    } <= kinds
    ldn = objects.findByLN(ObjectType.DATA, "0.0.42.0.0.255")
    assert octets(ldn.value).startswith(b"OHS")
    clock = objects.findByLN(ObjectType.CLOCK, "0.0.1.0.0.255")
    assert abs(clock.time.value.timestamp() - time.time()) < 5
    assert clock.timeZone == -60 and clock.enabled and clock.deviation == 60


def test_public_client_sees_only_public_objects(plain):
    with GuruxSession(plain.row(0), client_sap=16) as s:
        s.associate()
        names = {o.logicalName for o in s.objects()}
        s.release()
    assert "0.0.43.1.0.255" in names and "0.0.1.0.0.255" in names
    assert "1.0.99.1.0.255" not in names


def test_registers_and_load_profile_by_range_and_entry(plain):
    with GuruxSession(plain.row(1)) as s:
        s.associate()
        got = full_read(s)
        rows = got["profile"]
        pg = GXDLMSProfileGeneric("1.0.99.1.0.255")
        s.read(pg, 3)
        s.read(pg, 7)
        reply = s.exchange(s.client.readRowsByEntry(pg, 1, 4))
        s.client.updateValue(pg, 2, reply.value)
        first = pg.buffer
        s.release()
    energy, scaler, unit = got["1.0.1.8.0.255"]
    assert isinstance(energy, int) and scaler == 1 and unit == 30
    assert got["1.0.32.7.0.255"][1] == pytest.approx(0.1)
    assert len(rows) in (96, 97)  # both range ends are inclusive
    stamps = [r[0].value for r in rows]
    assert all(b - a == timedelta(minutes=15) for a, b in itertools.pairwise(stamps))
    imports = [r[2] for r in rows]
    assert imports == sorted(imports) and imports[-1] <= energy
    assert energy - imports[-1] < 5_000  # the register moved on by at most one slot
    assert pg.entriesInUse == 3 * 96  # the buffer is full: profile_days x 96
    assert len(first) == 4


def test_get_with_list_set_and_action(plain):
    with GuruxSession(plain.row(0)) as s:
        s.associate()
        regs = [GXDLMSRegister("1.0.1.8.0.255"), GXDLMSRegister("1.0.2.8.0.255")]
        reply = s.exchange(s.client.readList([(r, 3) for r in regs]))
        values = reply.value
        assert len(values) == 2 and all(v[1] in (30,) for v in values)
        clock = GXDLMSClock("0.0.1.0.0.255")
        target = datetime(2026, 1, 15, 10, 0, 0, tzinfo=UTC)
        clock.time = GXDateTime(
            target.astimezone(plain.fleet.meter(0).clock.local(target.timestamp()).tzinfo)
        )
        s.exchange(s.client.write(clock, 2))
        s.read(clock, 2)
        assert abs((clock.time.value - target).total_seconds()) < 3
        s.exchange(clock.shiftTime(s.client, 30))
        s.read(clock, 2)
        assert 25 < (clock.time.value - target).total_seconds() < 40
        s.release()
    plain.call(plain.fleet.meter(0).clock.set_time, time.time())


def test_disconnect_reconnect_with_read_back(plain):
    dc = GXDLMSDisconnectControl("0.0.96.3.10.255")
    with GuruxSession(plain.row(1)) as s:
        s.associate()
        s.method(dc.remoteDisconnect(s.client))
        for attr in (2, 3, 4):
            s.read(dc, attr)
        assert (dc.outputState, int(dc.controlState)) == (False, 0)
        s.method(dc.remoteReconnect(s.client))
        s.read(dc, 2)
        s.read(dc, 3)
        assert (dc.outputState, int(dc.controlState)) == (True, 1)
        log = GXDLMSProfileGeneric("0.0.99.98.2.255")
        s.read(log, 3)
        s.read(log, 2)
        s.release()
    assert [row[1] for row in log.buffer][-2:] == [62, 63]


def _transfer(s: GuruxSession, image: bytes, ident: str) -> GXDLMSImageTransfer:
    it = GXDLMSImageTransfer("0.0.44.0.0.255")
    s.read(it, 2)
    s.method(it.imageTransferInitiate(s.client, ident, len(image)))
    for frames in it.imageBlockTransfer(s.client, image, None):
        s.method(frames)
    return it


def test_firmware_transfer_verify_activate(plain):
    image = bytes(range(256)) * 5 + b"tail"
    with GuruxSession(plain.row(0)) as s:
        s.associate()
        it = _transfer(s, image, "OHS-SIM-2.0.0")
        s.method(it.imageVerify(s.client))
        s.method(it.imageActivate(s.client))
        for attr in (3, 4, 6, 7):
            s.read(it, attr)
        fw = GXDLMSData("1.0.0.2.0.255")
        s.read(fw, 2)
        s.release()
    assert int(it.imageTransferStatus) == 6
    assert it.imageFirstNotTransferredBlockNumber == (len(image) + 199) // 200
    assert octets(fw.value) == b"OHS-SIM-2.0.0"
    assert plain.fleet.meter(0).image_activated == image


def test_firmware_lost_blocks_are_resumed():
    faults = FleetFaults(default=FaultSpec(block_loss=0.3))
    image = bytes(i % 251 for i in range(3000))
    with SimServer(sim_config(faults=faults)) as sim, GuruxSession(sim.row()) as s:
        s.associate()
        it = _transfer(s, image, "FW-3")
        with pytest.raises(GXDLMSException):
            s.method(it.imageVerify(s.client))  # some blocks never arrived
        s.read(it, 3)
        s.read(it, 4)
        missing = [i for i, bit in enumerate(str(it.imageTransferredBlocksStatus)) if bit == "0"]
        assert missing and it.imageFirstNotTransferredBlockNumber == missing[0]
        for _ in range(20):  # resend what is missing until it all arrived
            blocks = it.imageBlockTransfer(s.client, image, None)
            for i in missing:
                s.method(blocks[i])
            s.read(it, 3)
            missing = [
                i for i, bit in enumerate(str(it.imageTransferredBlocksStatus)) if bit == "0"
            ]
            if not missing:
                break
        s.method(it.imageVerify(s.client))
        s.method(it.imageActivate(s.client))
        s.read(it, 6)
        s.release()
        assert int(it.imageTransferStatus) == 6
        assert sim.fleet.meter(0).image_activated == image


def test_block_transfer_with_a_small_client_pdu(plain):
    with GuruxSession(plain.row(0), max_pdu=256) as s:
        s.associate()
        objects = s.objects()
        got = full_read(s)
        s.release()
    assert len(objects) >= 35 and len(got["profile"]) >= 96


@pytest.mark.parametrize(
    ("authentication", "security"),
    [
        ("none", "none"),
        ("low", "none"),
        ("high_gmac", "none"),
        ("none", "suite0"),
        ("low", "suite0"),
        ("high_gmac", "suite0"),
    ],
)
def test_associations_plain_and_ciphered(authentication, security):
    with SimServer(sim_config(authentication=authentication, security=security)) as sim:
        row = sim.row()
        for attempt in range(2):  # a second session must use fresh invocation counters
            with GuruxSession(row, invocation_counter=attempt * 100) as s:
                s.associate()
                got = full_read(s)
                s.release()
            assert len(got["profile"]) >= 96
        events = list(sim.fleet.events)
    assert any(
        type(e).__name__ == "AssociationAccepted" and e.ciphered == (security == "suite0")
        for e in events
    )


def test_dedicated_key_ciphering():
    config = sim_config(authentication="high_gmac", security="suite0")
    with SimServer(config) as sim, GuruxSession(sim.row(), dedicated_key=bytes(range(16, 32))) as s:
        s.associate()
        got = full_read(s)
        s.release()
    assert len(got["profile"]) >= 96


def test_wrong_lls_password_is_refused():
    with SimServer(sim_config(authentication="low")) as sim:
        with GuruxSession(sim.row(), password=b"wrong!!!") as s, pytest.raises(GXDLMSException):
            s.associate()
        assert sim.call(sim.fleet.meter(0).last_event, 1) == 46


def test_wrong_hls_key_fails_pass_4():
    with SimServer(sim_config(authentication="high_gmac")) as sim:
        with GuruxSession(sim.row(), ek=b"\x01" * 16) as s, pytest.raises(GXDLMSException):
            s.associate()  # pass 3 fails at the meter: the ACTION is refused
        assert any(type(e).__name__ == "AssociationRefused" for e in sim.fleet.events)


@pytest.mark.parametrize("security", ["none", "suite0"])
def test_hdlc_full_read_with_segmentation(security):
    config = sim_config(transport="hdlc", authentication="high_gmac", security=security, meters=200)
    with SimServer(config) as sim:
        row = sim.row(150)  # physical address 166: 4-octet server address
        with GuruxSession(row, max_info=64) as s:  # tiny frames: segmentation both ways
            s.associate()
            got = full_read(s)
            objects = s.objects()
            s.release()
        with GuruxSession(sim.row(3)) as s:  # 2-octet address, default 128-octet frames
            s.associate()
            got3 = full_read(s)
            s.release()
    assert len(got["profile"]) >= 96 and len(objects) >= 35 and len(got3["profile"]) >= 96


def test_shared_wrapper_port_addresses_meters_by_wport(plain):
    values = []
    for index in (0, 1):
        with GuruxSession(plain.row(index)) as s:
            s.associate()
            ldn = GXDLMSData("0.0.42.0.0.255")
            s.read(ldn, 2)
            values.append(octets(ldn.value))
            s.release()
    assert values[0] != values[1]


def test_port_range_one_meter_per_port():
    config = sim_config(meters=3, shared_port=False, base_port=_free_port_range(3))
    with SimServer(config) as sim:
        rows = sim.fleet.address_book()
        assert len({r["port"] for r in rows}) == 3 and {r["wport"] for r in rows} == {"1"}
        with GuruxSession(rows[2]) as s:
            s.associate()
            sn = GXDLMSData("0.0.96.1.0.255")
            s.read(sn, 2)
            s.release()
    assert octets(sn.value).decode() == rows[2]["serial"]


def _free_port_range(n: int) -> int:
    for base in range(47000, 60000, 97):
        socks = []
        try:
            for i in range(n):
                sock = socket.socket()
                sock.bind(("127.0.0.1", base + i))
                socks.append(sock)
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")
