"""HDLC (IEC 62056-46) and the WRAPPER (IEC 62056-47), sans-IO."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sim import hdlc, wrapper
from drivers.sim.hdlc import (
    DISC,
    DM,
    FRMR,
    LLC_REQUEST,
    LLC_RESPONSE,
    PF,
    RR,
    SNRM,
    UA,
    UI,
    ApduReceived,
    Frame,
    FrameError,
    FrameReader,
    HdlcError,
    HdlcLink,
    LinkError,
    LinkEstablished,
    LinkParameters,
    LinkReleased,
    LinkState,
    ServerAddress,
    decode_server_address,
    encode_client_address,
)

# Frames built by gurux-dlms (an independent implementation) for the same addresses.
GURUX_SNRM_4_OCTET = bytes.fromhex("7ea00a000204590393d5e07e")  # server 1/300, client 1
GURUX_SNRM_PARAMS = bytes.fromhex("7ea01600020459039386e48180070501400602010086647e")
GURUX_SNRM_1_OCTET = bytes.fromhex("7ea0070321930f017e")  # server 1, client 16
SERVER = ServerAddress(1, 300, 4).encode()
CLIENT = encode_client_address(1)


def test_crc16_x25_check_value():
    assert hdlc.crc16(b"123456789") == 0x906E
    assert hdlc.crc16(b"") == 0x0000


@pytest.mark.parametrize("raw", [GURUX_SNRM_4_OCTET, GURUX_SNRM_PARAMS, GURUX_SNRM_1_OCTET])
def test_parses_gurux_frames_and_rebuilds_them_identically(raw):
    (frame,) = FrameReader().feed(raw)
    assert isinstance(frame, Frame) and frame.kind == SNRM and frame.poll
    assert frame.to_bytes() == raw


def test_addresses():
    assert decode_server_address(bytes.fromhex("00020459")) == ServerAddress(1, 300, 4)
    for address in (
        ServerAddress(1),
        ServerAddress(1, 17),
        ServerAddress(1, 300),
        ServerAddress(0x3FFF, 0x3FFF),
    ):
        raw = address.encode()
        assert len(raw) in (1, 2, 4)
        decoded = decode_server_address(raw)
        assert (decoded.logical, decoded.physical) == (address.logical, address.physical)
    with pytest.raises(ValueError):
        ServerAddress(1, 300, 2).encode()
    with pytest.raises(ValueError):
        ServerAddress(1, 5, 1).encode()
    with pytest.raises(ValueError):
        ServerAddress(1, 5, 3).encode()
    with pytest.raises(ValueError):
        ServerAddress(0x4000, 1, 4).encode()
    with pytest.raises(ValueError):
        encode_client_address(200)


def test_parameters_round_trip_and_errors():
    p = LinkParameters(1024, 64, 1, 1)
    assert hdlc.decode_parameters(p.encode()) == p
    assert hdlc.decode_parameters(b"") == LinkParameters()
    for bad in (
        b"\x81\x80",
        b"\x82\x80\x00",
        b"\x81\x80\x05\x05\x01\x80",
        b"\x81\x80\x03\x09\x01\x01",
        b"\x81\x80\x03\x05\x03\x01",
    ):
        with pytest.raises(HdlcError):
            hdlc.decode_parameters(bad)


def frame(control: int, info: bytes = b"", segmented: bool = False) -> bytes:
    return Frame(SERVER, CLIENT, control, info, segmented).to_bytes()


def test_reader_survives_garbage_and_split_delivery():
    good = frame(SNRM | PF)
    reader = FrameReader()
    events = reader.feed(b"noise" + good[:5])
    assert [type(e) for e in events] == [FrameError]
    got = []
    for octet in good[5:]:
        got += reader.feed(bytes((octet,)))
    assert [type(e) for e in got] == [Frame]


def test_reader_reports_each_bad_frame_and_continues():
    good = frame(RR | PF)
    bad_fcs = bytearray(good)
    bad_fcs[-2] ^= 0xFF
    body = bytearray(frame(0x10, LLC_REQUEST + b"\xc0\x01")[1:-3])
    body[9] ^= 0x01  # the HCS, with an FCS that matches
    crc = hdlc.crc16(bytes(body))
    info = b"\x7e" + bytes(body) + bytes((crc & 0xFF, crc >> 8)) + b"\x7e"
    wrong_type = b"\x7e\x90\x07\x03\x21\x93\x00\x00\x7e"
    short_length = b"\x7e\xa0\x02\x03\x7e"
    no_close = bytearray(good)
    no_close[-1] = 0x00
    events = FrameReader().feed(
        bytes(bad_fcs) + bytes(info) + wrong_type + short_length + bytes(no_close) + good
    )
    errors = [e.reason for e in events if isinstance(e, FrameError)]
    frames = [e for e in events if isinstance(e, Frame)]
    assert any("FCS" in r for r in errors)
    assert any("HCS" in r for r in errors)
    assert any("format type" in r for r in errors)
    assert any("too short" in r or "length" in r for r in errors)
    assert any("closing flag" in r for r in errors)
    assert len(frames) == 1 and frames[0].kind == RR


def test_parse_frame_errors():
    for body in (b"\xa0", bytes.fromhex("a00703219300"), bytes.fromhex("a0080202020393ffff")):
        with pytest.raises(HdlcError):
            hdlc.parse_frame(body)


def test_frames_sharing_flags():
    a, b = frame(RR | PF), frame(RR | PF | 0x20)
    events = FrameReader().feed(a + b[1:])  # the closing flag of a opens b
    assert [e.control for e in events] == [RR | PF, RR | PF | 0x20]


@settings(max_examples=60)
@given(st.binary(max_size=200))
def test_reader_never_raises(data):
    reader = FrameReader()
    reader.feed(data)
    reader.feed(data[::-1])


# -- the link state machine --------------------------------------------------------------
def connect(max_info: int = 512, proposed: LinkParameters | None = None) -> HdlcLink:
    link = HdlcLink(SERVER, CLIENT, max_info)
    info = proposed.encode() if proposed else b""
    out, events = link.receive(hdlc.parse_frame(frame(SNRM | PF, info)[1:-1]))
    assert isinstance(events[0], LinkEstablished)
    ua = hdlc.parse_frame(out[0][1:-1])
    assert ua.kind == UA and ua.destination == CLIENT and ua.source == SERVER
    return link


def rx(link: HdlcLink, raw: bytes):
    return link.receive(hdlc.parse_frame(raw[1:-1]))


def test_snrm_negotiates_sizes():
    link = connect(max_info=256, proposed=LinkParameters(max_info_tx=1024, max_info_rx=100))
    assert (link.max_info_tx, link.max_info_rx) == (100, 256)
    assert link.state is LinkState.CONNECTED


def test_frames_before_snrm_get_dm_and_disc_twice():
    link = HdlcLink(SERVER, CLIENT)
    out, events = rx(link, frame(hdlc.i_control(0, 0), LLC_REQUEST + b"\xc0"))
    assert hdlc.parse_frame(out[0][1:-1]).kind == DM and isinstance(events[0], LinkError)
    out, _ = rx(link, frame(DISC | PF))
    assert hdlc.parse_frame(out[0][1:-1]).kind == DM
    assert rx(link, frame(UI | PF, b"x"))[0] == []
    link = connect()
    out, events = rx(link, frame(DISC | PF))
    assert hdlc.parse_frame(out[0][1:-1]).kind == UA and isinstance(events[0], LinkReleased)


def test_segmented_request_and_response():
    link = connect(proposed=LinkParameters(max_info_tx=32, max_info_rx=32))
    apdu = bytes(range(70))
    data = LLC_REQUEST + apdu
    chunks = [data[i : i + 32] for i in range(0, len(data), 32)]
    for n, chunk in enumerate(chunks):
        last = n == len(chunks) - 1
        out, events = rx(link, frame(hdlc.i_control(n, 0), chunk, segmented=not last))
        if not last:
            rr = hdlc.parse_frame(out[0][1:-1])
            assert rr.kind == RR and rr.nr == n + 1 and not events
    assert events == [ApduReceived(apdu)]
    first = link.send_apdu(bytes(100))
    received = bytearray()
    f = hdlc.parse_frame(first[0][1:-1])
    while True:
        assert f.is_information and f.poll and f.nr == len(chunks)
        received += f.info
        if not f.segmented:
            break
        out, _ = rx(link, frame(hdlc.rr_control(f.ns + 1)))
        f = hdlc.parse_frame(out[0][1:-1])
    assert bytes(received) == LLC_RESPONSE + bytes(100)


def test_lost_frames_are_repeated():
    link = connect()
    rx(link, frame(hdlc.i_control(0, 0), LLC_REQUEST + b"\xc0\x01"))
    (answer,) = link.send_apdu(b"\xc4\x01")
    # The client did not get our I-frame: it repeats its own, or polls with the old N(R).
    out, events = rx(link, frame(hdlc.i_control(0, 0), LLC_REQUEST + b"\xc0\x01"))
    assert out == [answer] and "repeated" in events[0].reason
    out, _ = rx(link, frame(hdlc.rr_control(0)))
    assert out == [answer]
    out, _ = rx(link, frame(hdlc.rr_control(1)))  # acknowledged: nothing pending, RR back
    assert hdlc.parse_frame(out[0][1:-1]).kind == RR


def test_link_errors_never_raise():
    link = connect()
    out, events = rx(link, frame(hdlc.i_control(5, 0), LLC_REQUEST + b"\xc0"))
    assert out == [] and "N(S)=5" in events[0].reason
    out, events = rx(link, frame(hdlc.i_control(0, 0), b"\x00" * 600))
    assert hdlc.parse_frame(out[0][1:-1]).kind == FRMR
    out, events = rx(link, frame(hdlc.i_control(0, 0), b"\xc0\x01"))
    assert "LLC" in events[0].reason
    out, events = rx(link, frame(0x87 | PF))
    assert "unsupported" in events[0].reason
    assert rx(link, frame(hdlc.RNR | PF)) == ([], [])
    out, events = rx(link, frame(SNRM | PF, b"\x81\x80\x01\x09"))
    assert hdlc.parse_frame(out[0][1:-1]).kind == DM and "SNRM refused" in events[0].reason


def test_frame_too_long_to_build():
    with pytest.raises(ValueError):
        Frame(SERVER, CLIENT, 0x10, b"\x00" * 2100).to_bytes()


# -- WRAPPER ---------------------------------------------------------------------------
def test_wrapper_round_trip_and_split_stream():
    a = wrapper.encode(16, 1, b"\x60\x00")
    b = wrapper.encode(1, 16, b"\x61" * 300)
    assert a.hex() == "000100100001000260" + "00"
    reader = wrapper.WrapperReader()
    stream = a + b
    got = []
    for i in range(0, len(stream), 7):
        got += reader.feed(stream[i : i + 7])
    assert got == [wrapper.WrapperPdu(16, 1, b"\x60\x00"), wrapper.WrapperPdu(1, 16, b"\x61" * 300)]
    assert reader.pending == 0


def test_wrapper_bad_version_and_length_are_terminal():
    reader = wrapper.WrapperReader()
    (error,) = reader.feed(b"\x00\x02\x00\x10\x00\x01\x00\x00")
    assert isinstance(error, wrapper.WrapperError) and "version" in error.reason
    assert reader.failed and reader.feed(wrapper.encode(1, 1, b"x")) == []
    reader = wrapper.WrapperReader(max_apdu=100)
    (error,) = reader.feed(wrapper.encode(16, 1, b"\x00" * 101))
    assert "over 100" in error.reason
    with pytest.raises(ValueError):
        wrapper.encode(1, 1, b"\x00" * 70_000)
