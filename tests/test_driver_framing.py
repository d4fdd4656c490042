"""Frame extraction from a TCP stream (no sockets): WRAPPER and HDLC, garbage, truncation,
wrong addresses, corrupted checksums, frames split at every byte."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.dlms.framing import HdlcFramer, WrapperFramer, fcs16


def wrapper(source: int, dest: int, apdu: bytes) -> bytes:
    return (
        b"\x00\x01"
        + source.to_bytes(2, "big")
        + dest.to_bytes(2, "big")
        + len(apdu).to_bytes(2, "big")
        + apdu
    )


def hdlc(dest: int, source: int, control: int, info: bytes = b"", segmented: bool = False) -> bytes:
    # format (2) + destination + source + control [+ HCS + information] + FCS
    length = 2 + 1 + 1 + 1 + (2 + len(info) if info else 0) + 2
    body = bytearray(
        [0xA0 | (0x08 if segmented else 0) | (length >> 8), length & 0xFF, dest, source, control]
    )
    if info:
        body += fcs16(body).to_bytes(2, "little") + info
    body += fcs16(body).to_bytes(2, "little")
    return b"\x7e" + bytes(body) + b"\x7e"


def test_wrapper_frames_split_and_joined() -> None:
    framer = WrapperFramer(client_wport=16, server_wport=1)
    a, b = wrapper(1, 16, b"\xc4\x01\xc1\x00\x11\x05"), wrapper(1, 16, b"\x63\x00")
    stream = a + b
    for i in range(len(stream)):
        framer.feed(stream[i : i + 1])
    assert [framer.next_frame(), framer.next_frame(), framer.next_frame()] == [a, b, None]
    assert framer.skipped_bytes == 0


def test_wrapper_skips_garbage_and_other_addresses() -> None:
    framer = WrapperFramer(client_wport=16, server_wport=1)
    good = wrapper(1, 16, b"\xc4\x01\xc1\x00\x11\x05")
    framer.feed(b"\xde\xad\xbe\xef" + wrapper(2, 16, b"\x01\x02") + wrapper(1, 17, b"\x03") + good)
    assert framer.next_frame() == good
    assert framer.next_frame() is None
    assert framer.skipped_bytes > 0


def test_wrapper_truncated_frame_then_discard() -> None:
    framer = WrapperFramer(client_wport=16, server_wport=1)
    good = wrapper(1, 16, b"\xc4\x01\xc1\x00\x11\x05")
    framer.feed(good[:-2])
    assert framer.next_frame() is None and framer.pending
    framer.discard()  # the session gives up on it before retrying
    framer.feed(good)
    assert framer.next_frame() == good


@given(st.binary(max_size=200), st.binary(max_size=40))
def test_wrapper_finds_a_frame_after_any_garbage(garbage: bytes, apdu: bytes) -> None:
    framer = WrapperFramer(client_wport=16, server_wport=1)
    frame = wrapper(1, 16, apdu or b"\x00")
    framer.feed(garbage.replace(b"\x00\x01\x00\x01", b"") + frame)
    assert frame in [framer.next_frame(), framer.next_frame(), framer.next_frame()]


def test_hdlc_frames_shared_flag_and_segmentation() -> None:
    framer = HdlcFramer(client_address=16)
    ua = hdlc(0x21, 0x03, 0x73)
    info = hdlc(0x21, 0x03, 0x30, b"\xe6\xe7\x00\xc4\x01\xc1\x00\x11\x05", segmented=True)
    stream = ua + info[1:]  # the second frame reuses the first one's closing flag
    for i in range(len(stream)):
        framer.feed(stream[i : i + 1])
    assert framer.next_frame() == ua
    assert framer.next_frame() == info
    assert framer.next_frame() is None


def test_hdlc_drops_bad_fcs_wrong_address_and_garbage() -> None:
    framer = HdlcFramer(client_address=16)
    good = hdlc(0x21, 0x03, 0x30, b"\xe6\xe7\x00\xc4\x01\xc1\x00\x11\x05")
    corrupt = bytearray(good)
    corrupt[-4] ^= 0xFF
    other_client = hdlc(0x23, 0x03, 0x30, b"\xe6\xe7\x00\x01")
    framer.feed(b"\x7e\x7e\x00\xa0garbage" + bytes(corrupt) + other_client + good)
    assert framer.next_frame() == good
    assert framer.next_frame() is None
    assert framer.skipped_frames >= 2


@given(st.binary(max_size=300))
def test_hdlc_random_bytes_never_raise(data: bytes) -> None:
    framer = HdlcFramer(client_address=16)
    framer.feed(data)
    while framer.next_frame() is not None:
        pass
