"""The driver's sans-IO layers without sockets: gurux parsing our hand-built responses through
our value hook (GET normal, with-list, block transfer, errors), the profile/row decoders, the
value conversions, and the mapping of gurux exceptions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from gurux_dlms import GXReplyData
from gurux_dlms.enums import AssociationResult, Authentication, InterfaceType, SourceDiagnostic
from gurux_dlms.GXByteBuffer import GXByteBuffer
from gurux_dlms.GXDLMSException import GXDLMSException
from gurux_dlms.GXDLMSExceptionResponse import GXDLMSExceptionResponse

from drivers.base import ConnectionParams, RegisterValue, TransportKind
from drivers.dlms import axdr, errmap
from drivers.dlms.profile import (
    CaptureObject,
    RowDecoder,
    capture_objects,
    entry_access,
    range_access,
)
from drivers.dlms.session import DlmsSession
from drivers.dlms.values import clock_reading, exact_number, register_value
from drivers.errors import (
    AccessDenied,
    AssociationRefused,
    AuthenticationFailed,
    ConfigurationError,
    CounterOutOfSync,
    DeviceError,
    MalformedFrame,
    ObjectNotFound,
)


def _wrapper(apdu: bytes) -> bytes:
    return b"\x00\x01\x00\x01\x00\x10" + len(apdu).to_bytes(2, "big") + apdu


def _session() -> DlmsSession:
    session = DlmsSession(ConnectionParams(meter_id="m", host="127.0.0.1"))
    session.client.settings.connected = 3  # as if associated
    return session


def _feed(session: DlmsSession, apdu: bytes, reply: GXReplyData | None = None) -> GXReplyData:
    reply = reply or GXReplyData()
    assert session.client.getData(GXByteBuffer(_wrapper(apdu)), reply, None)
    return reply


def test_get_normal_keeps_integers_exact() -> None:
    session = _session()
    session.client._read("1.0.32.7.0.255", 3, 2, None)  # invoke-id 1
    reply = _feed(session, bytes([0xC4, 0x01, 0xC1, 0x00]) + axdr.uint16(2301))
    assert reply.value == 2301 and reply.error == 0
    assert register_value("1.0.32.7.0.255", reply.value, -1, 35) == RegisterValue(
        "1.0.32.7.0.255", 2301, -1, "V", Decimal("230.1"), None, 35, None
    )


def test_get_error_result_and_with_list() -> None:
    session = _session()
    reply = _feed(session, bytes([0xC4, 0x01, 0xC1, 0x01, 0x04]))
    assert reply.error == 4
    assert isinstance(errmap.result_error(reply.error, "GET"), ObjectNotFound)
    reply = _feed(
        session,
        bytes([0xC4, 0x03, 0xC1, 0x03])
        + b"\x00"
        + axdr.structure(axdr.int8(-1), axdr.enum_(35))
        + b"\x01\x03"
        + b"\x00"
        + axdr.uint32(123456),
    )
    assert reply.value == [(-1, 35), None, 123456]
    assert reply.error == 3


def test_get_with_data_blocks_is_reassembled() -> None:
    session = _session()
    rows = axdr.array(
        [axdr.structure(axdr.octet_string(bytes(12)), axdr.uint32(i)) for i in range(40)]
    )
    first, second = rows[:300], rows[300:]
    reply = GXReplyData()
    block1 = (
        bytes([0xC4, 0x02, 0xC1, 0x00])
        + (1).to_bytes(4, "big")
        + b"\x00"
        + axdr.encode_length(len(first))
        + first
    )
    _feed(session, block1, reply)
    assert reply.isMoreData()
    session.client.receiverReady(reply)
    block2 = (
        bytes([0xC4, 0x02, 0xC1, 0x01])
        + (2).to_bytes(4, "big")
        + b"\x00"
        + axdr.encode_length(len(second))
        + second
    )
    _feed(session, block2, reply)
    assert not reply.isMoreData()
    assert reply.value == [(bytes(12), i) for i in range(40)]


def test_exact_numbers_from_floats_and_refusals() -> None:
    assert exact_number(axdr.Float32(230.10000610351562), 0, "x") == (2301, -1)
    assert exact_number(0.5, 2, "x") == (5, 1)
    assert exact_number(-7, 3, "x") == (-7, 3)
    for bad in (True, None, b"1", "1", float("nan")):
        with pytest.raises(DeviceError):
            exact_number(bad, 0, "x")
    big = register_value("1.0.1.8.0.255", 2**63 - 1, -3, 30)
    assert big.value == Decimal(2**63 - 1).scaleb(-3) and big.unit == "Wh"


def test_clock_reading() -> None:
    raw = axdr.CosemDateTime.from_datetime(
        datetime(2026, 7, 1, 10, 0, tzinfo=UTC), deviation=-120, dst=True
    ).to_bytes()
    reading = clock_reading(raw)
    assert reading.time == datetime(2026, 7, 1, 10, 0, tzinfo=UTC)
    assert reading.local_time == datetime(2026, 7, 1, 12, 0)
    assert (reading.deviation, reading.dst, reading.status) == (-120, True, 0x80)
    with pytest.raises(DeviceError):
        clock_reading(bytes([0xFF] * 12))
    with pytest.raises(MalformedFrame):
        clock_reading(b"\x01\x02")


LP_COLUMNS = [
    CaptureObject(8, "0.0.1.0.0.255", 2),
    CaptureObject(1, "0.0.96.10.1.255", 2),
    CaptureObject(3, "1.0.1.8.0.255", 2),
    CaptureObject(3, "1.0.2.8.0.255", 2),
]


def _ts(moment: datetime) -> bytes:
    return axdr.CosemDateTime.from_datetime(moment, deviation=-60, dst=False).to_bytes()


def test_profile_rows_with_scalers_status_and_omitted_times() -> None:
    start = datetime(2026, 1, 5, 0, 0, tzinfo=UTC)
    buffer = [
        (_ts(start), 0, 1000, 5),
        (None, 0x80, 1010, 5),  # a compressed entry: time = previous + capture period
        (b"", 0, 1020, 6),
    ]
    scalers = {(3, "1.0.1.8.0.255"): (0, 30), (3, "1.0.2.8.0.255"): (1, 30)}
    rows = RowDecoder(LP_COLUMNS, scalers, 900, "lp").profile_rows(buffer)
    assert [r.timestamp for r in rows] == [start + timedelta(minutes=15 * i) for i in range(3)]
    assert [r.status for r in rows] == [0, 0x80, 0]
    assert rows[1].values["1.0.1.8.0.255"].value == Decimal(1010)
    assert rows[2].values["1.0.2.8.0.255"].value == Decimal(60)
    assert rows[0].dst is False


@pytest.mark.parametrize(
    "buffer",
    [
        "not an array",
        [(b"", 0, 1, 2)],  # no time and nothing to infer it from
        [(_ts(datetime(2026, 1, 1, tzinfo=UTC)), 0, 1)],  # a column short
        [(b"\x01", 0, 1, 2)],
    ],
)
def test_profile_rows_refuse_malformed_buffers(buffer: object) -> None:
    with pytest.raises(MalformedFrame):
        RowDecoder(LP_COLUMNS, {}, None, "lp").profile_rows(buffer)


def test_events_and_capture_objects() -> None:
    raw = [
        (8, bytes([0, 0, 1, 0, 0, 255]), 2, 0),
        (1, bytes([0, 0, 96, 11, 0, 255]), 2, 0),
    ]
    columns = capture_objects(raw, "log")
    assert [c.key for c in columns] == ["0.0.1.0.0.255", "0.0.96.11.0.255"]
    moment = datetime(2026, 2, 1, 3, 4, 5, tzinfo=UTC)
    events = RowDecoder(columns, {}, None, "log").events([(_ts(moment), 46)], "0.0.99.98.0.255")
    assert events[0].code == 46 and events[0].timestamp == moment
    with pytest.raises(MalformedFrame):
        capture_objects([(8, b"\x00", 2, 0)], "log")


def test_selective_access_encodings() -> None:
    start = axdr.CosemDateTime.from_datetime(datetime(2026, 1, 1, tzinfo=UTC))
    end = axdr.CosemDateTime.from_datetime(datetime(2026, 1, 2, tzinfo=UTC))
    access = range_access(LP_COLUMNS[0], start, end)
    assert access[0] == 1
    restricting, from_, to, columns = axdr.decode_all(access[1:])
    assert restricting == (8, bytes([0, 0, 1, 0, 0, 255]), 2, 0)
    assert from_ == start.to_bytes() and to == end.to_bytes() and columns == []
    assert axdr.decode_all(entry_access(1, 96)[1:]) == (1, 96, 1, 0)


def test_gurux_exceptions_map_to_driver_errors() -> None:
    cases = [
        (
            GXDLMSException(
                AssociationResult.PERMANENT_REJECTED, SourceDiagnostic.AUTHENTICATION_FAILURE
            ),
            AuthenticationFailed,
        ),
        (
            GXDLMSException(AssociationResult.PERMANENT_REJECTED, SourceDiagnostic.NOT_SUPPORTED),
            AssociationRefused,
        ),
        (GXDLMSException(3), AccessDenied),
        (GXDLMSExceptionResponse(1, 6, 1234), CounterOutOfSync),
        (GXDLMSExceptionResponse(1, 5, 0), AuthenticationFailed),
        (TypeError("'int' object is not subscriptable"), MalformedFrame),
        (IndexError("x"), MalformedFrame),
        (ValueError("Invalid Block number."), MalformedFrame),
        (axdr.DecodeError("x"), MalformedFrame),
        (
            Exception(
                "parseApplicationAssociationResponse failed.  Server to Client do not match."
            ),
            AuthenticationFailed,
        ),
    ]
    for exc, kind in cases:
        assert type(errmap.map_exception(exc, "op")) is kind
    assert errmap.map_exception(GXDLMSExceptionResponse(1, 6, 1234), "op").detail == {
        "expected": 1234
    }


def test_gurux_leaks_on_garbage_are_mapped() -> None:
    session = _session()
    for junk in (
        b"\xc4",
        b"\xc4\x01\xc1\x00\x09\x85",
        b"\xcc\x05\x30\x00",
        b"\x61\x03\xa1\x01\x00",
    ):
        reply = GXReplyData()
        try:
            session.client.getData(GXByteBuffer(_wrapper(junk)), reply, None)
        except Exception as exc:  # gurux raises whatever it raises
            assert isinstance(
                errmap.map_exception(exc, "op"), MalformedFrame | AuthenticationFailed
            )


def test_connection_params_validation() -> None:
    with pytest.raises(ConfigurationError):
        ConnectionParams(meter_id="m", host="h", authentication="hls-gmac")
    with pytest.raises(ConfigurationError):
        ConnectionParams(meter_id="m", host="h", security_suite=0)
    with pytest.raises(ConfigurationError):
        ConnectionParams(meter_id="m", host="h", port=0)
    with pytest.raises(ConfigurationError):
        ConnectionParams(meter_id="m", host="h", block_cipher_key=b"short")
    with pytest.raises(ConfigurationError):
        ConnectionParams(meter_id="m", host="h", transport="hdlc", client_address=0x100)
    params = ConnectionParams(
        meter_id="m",
        host="h",
        transport="hdlc",
        authentication="hls-gmac",
        security_suite=0,
        block_cipher_key=bytes(16),
        authentication_key=bytes(16),
        system_title=bytes(8),
    )
    assert params.transport is TransportKind.HDLC and params.ciphered
    assert "block_cipher_key" not in repr(params)
    session = DlmsSession(
        params, __import__("drivers.dlms.counters", fromlist=["x"]).MemoryCounterStore()
    )
    assert session.client.authentication == Authentication.HIGH_GMAC
    assert session.client.interfaceType == InterfaceType.HDLC
