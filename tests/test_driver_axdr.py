"""Our A-XDR codec: every Data type, date-times, and hostile input (no sockets)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.dlms import axdr
from drivers.dlms.axdr import BitString, CosemDateTime, DecodeError, decode, decode_all


def test_integers_of_every_width() -> None:
    cases = [
        (bytes([axdr.INT8, 0xFF]), -1),
        (bytes([axdr.UINT8, 0xFF]), 255),
        (bytes([axdr.INT16, 0x80, 0x00]), -32768),
        (bytes([axdr.UINT16, 0xFF, 0xFE]), 65534),
        (bytes([axdr.INT32]) + (-5).to_bytes(4, "big", signed=True), -5),
        (bytes([axdr.UINT32, 0, 0, 0x08, 0xFD]), 2301),
        (bytes([axdr.INT64]) + (-(2**63)).to_bytes(8, "big", signed=True), -(2**63)),
        (bytes([axdr.UINT64]) + (2**64 - 1).to_bytes(8, "big"), 2**64 - 1),
        (bytes([axdr.ENUM, 30]), 30),
    ]
    for raw, value in cases:
        assert decode_all(raw) == value


def test_strings_bits_and_floats() -> None:
    assert decode_all(axdr.octet_string(b"\x01\x02")) == b"\x01\x02"
    assert decode_all(bytes([axdr.VISIBLE_STRING, 3]) + b"abc") == "abc"
    assert decode_all(bytes([axdr.UTF8_STRING, 2]) + "é".encode()) == "é"
    bits = decode_all(bytes([axdr.BIT_STRING, 10, 0b10100000, 0b01000000]))
    assert isinstance(bits, BitString)
    assert [bits[i] for i in range(10)] == [1, 0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert bits.to_int() == 0b1010000001
    f = decode_all(bytes([axdr.FLOAT32]) + bytes.fromhex("4366199a"))
    assert isinstance(f, axdr.Float32)
    assert f.decimal_text == "230.1"
    assert decode_all(bytes([axdr.BOOLEAN, 1])) is True
    assert decode_all(bytes([axdr.NULL])) is None


def test_structures_arrays_and_long_lengths() -> None:
    rows = axdr.array(
        [axdr.structure(axdr.uint8(i), axdr.octet_string(b"x" * 200)) for i in range(3)]
    )
    value = decode_all(rows)
    assert value == [(i, b"x" * 200) for i in range(3)]
    assert axdr.encode_length(200) == b"\x81\xc8"
    assert axdr.encode_length(70000) == b"\x83\x01\x11\x70"


def test_compact_array() -> None:
    # compact-array of structure {long-unsigned, unsigned}, two entries
    raw = bytes([axdr.COMPACT_ARRAY, axdr.STRUCTURE, 2, axdr.UINT16, axdr.UINT8, 6]) + bytes(
        [0, 1, 2, 0, 3, 4]
    )
    assert decode_all(raw) == [(1, 2), (3, 4)]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        bytes([axdr.UINT32, 0, 0]),
        bytes([axdr.OCTET_STRING, 5, 1, 2]),
        bytes([axdr.ARRAY, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]),  # 4 billion elements claimed
        bytes([axdr.ARRAY, 0x85, 0, 0, 0, 0, 1]),  # 5-byte length
        bytes([axdr.STRUCTURE, 2, axdr.UINT8, 1]),
        bytes([0x42]),  # unknown type
        bytes([axdr.UTF8_STRING, 1, 0xFF]),
        bytes([axdr.ARRAY, 1]) * 40 + bytes([axdr.NULL]),  # nested too deep
    ],
)
def test_hostile_input_raises_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_all(raw)


@given(st.binary(max_size=64))
def test_random_bytes_never_leak_other_exceptions(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        decode(raw)


_leaf = st.one_of(
    st.integers(0, 255).map(axdr.uint8),
    st.integers(-(2**31), 2**31 - 1).map(
        lambda v: bytes([axdr.INT32]) + v.to_bytes(4, "big", signed=True)
    ),
    st.binary(max_size=300).map(axdr.octet_string),
    st.booleans().map(axdr.boolean),
    st.just(axdr.null()),
)
_data = st.recursive(
    _leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=5).map(axdr.array),
        st.lists(children, max_size=5).map(lambda m: axdr.structure(*m)),
    ),
    max_leaves=30,
)


@given(_data)
def test_encoded_data_decodes_to_its_end(raw: bytes) -> None:
    _, end = decode(raw)
    assert end == len(raw)


def test_date_time_fields_deviation_and_dst() -> None:
    # 2026-03-29 02:30:00.50, deviation -120 (CEST: local = UTC + 2 h), DST active
    raw = (
        bytes([0x07, 0xEA, 3, 29, 7, 2, 30, 0, 50])
        + (-120).to_bytes(2, "big", signed=True)
        + b"\x80"
    )
    dt = CosemDateTime.from_bytes(raw)
    assert dt.dst is True
    assert dt.local_time() == datetime(2026, 3, 29, 2, 30, 0, 500000)
    assert dt.to_datetime() == datetime(2026, 3, 29, 0, 30, 0, 500000, tzinfo=UTC)
    assert dt.to_bytes() == raw


def test_date_time_unspecified_fields() -> None:
    raw = bytes([0xFF, 0xFF, 1, 1, 0xFF, 0, 0, 0, 0xFF, 0x80, 0x00, 0xFF])
    dt = CosemDateTime.from_bytes(raw)
    assert dt.deviation is None and dt.status is None and dt.dst is None
    assert dt.to_datetime() is None
    naive = CosemDateTime.from_bytes(bytes([0x07, 0xEA, 1, 1, 4, 0, 15, 0, 0, 0x80, 0, 0]))
    assert naive.to_datetime() == datetime(2026, 1, 1, 0, 15)  # no deviation: wall-clock time


def test_date_time_from_aware_and_naive() -> None:
    cet = timezone(timedelta(hours=1))
    dt = CosemDateTime.from_datetime(datetime(2026, 1, 5, 13, 0, tzinfo=cet))
    assert (dt.hour, dt.deviation, dt.day_of_week, dt.status) == (13, -60, 1, None)
    assert dt.to_datetime() == datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    utc = CosemDateTime.from_datetime(
        datetime(2026, 1, 5, 12, 0, tzinfo=UTC), deviation=-60, dst=False
    )
    assert (utc.hour, utc.deviation, utc.status) == (13, -60, 0)
    naive = CosemDateTime.from_datetime(datetime(2026, 7, 1, 8, 0), dst=True)
    assert naive.deviation is None and naive.dst is True


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
    st.integers(-720, 840),
)
def test_date_time_round_trip(moment: datetime, deviation: int) -> None:
    moment = moment.replace(microsecond=moment.microsecond // 10000 * 10000, tzinfo=UTC)
    encoded = CosemDateTime.from_datetime(moment, deviation=deviation)
    assert CosemDateTime.from_bytes(encoded.to_bytes()).to_datetime() == moment
