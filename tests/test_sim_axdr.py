"""A-XDR data encoding (drivers/sim/axdr.py) and the BER subset (drivers/sim/ber.py)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.sim import axdr, ber
from drivers.sim.axdr import AxdrError, BitString, CosemDateTime, Data, Encoded, Tag

INT_RANGES = {
    Tag.INTEGER: (-128, 127),
    Tag.LONG: (-(2**15), 2**15 - 1),
    Tag.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    Tag.LONG64: (-(2**63), 2**63 - 1),
    Tag.UNSIGNED: (0, 255),
    Tag.LONG_UNSIGNED: (0, 2**16 - 1),
    Tag.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    Tag.LONG64_UNSIGNED: (0, 2**64 - 1),
    Tag.ENUM: (0, 255),
}


def scalars() -> st.SearchStrategy[Data]:
    ints = [
        st.integers(lo, hi).map(lambda v, t=t: Data(t, v)) for t, (lo, hi) in INT_RANGES.items()
    ]
    return st.one_of(
        *ints,
        st.just(axdr.NULL),
        st.booleans().map(axdr.boolean),
        st.binary(max_size=300).map(axdr.octet_string),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(
            axdr.visible_string
        ),
        st.lists(st.booleans(), max_size=70).map(
            lambda b: axdr.bit_string(BitString.from_bools(b))
        ),
        st.binary(min_size=12, max_size=12).map(lambda b: Data(Tag.DATE_TIME, b)),
        st.binary(min_size=5, max_size=5).map(lambda b: Data(Tag.DATE, b)),
        st.binary(min_size=4, max_size=4).map(lambda b: Data(Tag.TIME, b)),
    )


values = st.recursive(
    scalars(),
    lambda children: st.one_of(
        st.lists(children, max_size=6).map(axdr.array),
        st.lists(children, max_size=6).map(lambda items: axdr.structure(*items)),
    ),
    max_leaves=30,
)


@given(values)
def test_round_trip(value):
    encoded = axdr.encode(value)
    assert axdr.decode_all(encoded) == value


@given(st.binary(max_size=64))
def test_decoding_garbage_raises_only_axdr_error(data):
    with contextlib.suppress(AxdrError):
        axdr.decode_all(data)


@pytest.mark.parametrize(
    ("value", "hex_"),
    [
        (axdr.double_long_unsigned(0x01020304), "0601020304"),
        (axdr.long(-2), "10fffe"),
        (axdr.structure(axdr.integer(-1), axdr.enum(35)), "02020fff1623"),
        (axdr.bit_string(BitString.from_bools([True, False, True])), "0403a0"),
        (axdr.boolean(True), "03ff"),
        (axdr.octet_string(b"\x01" * 200), "0981c8" + "01" * 200),
        (axdr.octet_string(b"\x00" * 300), "0982012c" + "00" * 300),
        (axdr.visible_string("OHS"), "0a034f4853"),
        (Encoded(b"\x11\x07"), "1107"),
    ],
)
def test_known_encodings(value, hex_):
    assert axdr.encode(value).hex() == hex_


@pytest.mark.parametrize(
    "hex_",
    [
        "",  # no tag
        "06010203",  # truncated double-long-unsigned
        "0905aabb",  # octet-string shorter than its length
        "0980",  # length form 0x80 (indefinite) is not A-XDR
        "098501020304050607",  # 5-octet length
        "07",  # tag 7 is unassigned
        "13",  # compact-array: not supported
        "0a02ff80",  # visible-string not ASCII
        "0409ff",  # bit-string of 9 bits needs 2 octets
        "0201",  # structure missing its element
        "1905",  # truncated date-time
        "03",  # truncated boolean
        "17aabb",  # truncated float32
    ],
)
def test_malformed_input(hex_):
    with pytest.raises(AxdrError):
        axdr.decode_all(bytes.fromhex(hex_))


def test_trailing_octets_and_nesting_limit():
    with pytest.raises(AxdrError, match="after the value"):
        axdr.decode_all(bytes.fromhex("110100"))
    deep = b"\x02\x01" * (axdr.MAX_DEPTH + 1) + b"\x00"
    with pytest.raises(AxdrError, match="too deep"):
        axdr.decode_all(deep)


def test_values_out_of_range_do_not_encode():
    with pytest.raises(AxdrError):
        axdr.encode(axdr.unsigned(256))
    with pytest.raises(AxdrError):
        axdr.encode(Data(Tag.DATE_TIME, b"\x00" * 11))
    with pytest.raises(AxdrError):
        axdr.encode(Data(99, 1))
    with pytest.raises(AxdrError):
        BitString(9, b"\x00")


def test_bit_string_indexing():
    bits = BitString.from_bools([False, True] * 5)
    assert bits.to_bools() == [False, True] * 5
    with pytest.raises(IndexError):
        bits[10]


def test_date_time_uses_the_classic_deviation_sign():
    cet = timezone(timedelta(hours=1))
    dt = CosemDateTime.from_datetime(datetime(2026, 1, 15, 10, 30, 5, 250_000, tzinfo=cet))
    assert dt.deviation == -60 and dt.day_of_week == 4 and dt.hundredths == 25
    assert dt.to_bytes().hex() == "07ea010f040a1e0519ffc400"
    back = CosemDateTime.from_bytes(dt.to_bytes())
    assert back == dt
    assert back.to_datetime() == datetime(2026, 1, 15, 9, 30, 5, 250_000, tzinfo=UTC)


def test_date_time_errors():
    with pytest.raises(AxdrError):
        CosemDateTime.from_bytes(b"\x00" * 11)
    wildcard = CosemDateTime(0xFFFF, 3, 0xFE, 7, 2, 0, 0, 0)
    with pytest.raises(AxdrError):
        wildcard.to_datetime(0)
    no_deviation = CosemDateTime(2026, 1, 1, 4, 0, 0, 0)
    with pytest.raises(AxdrError):
        no_deviation.to_datetime()
    assert no_deviation.to_datetime(60).utcoffset() == timedelta(hours=1)
    with pytest.raises(AxdrError):
        CosemDateTime(2026, 1, 1, 4, 0, 0, 0, 0, 2000).to_datetime()
    with pytest.raises(ValueError):
        CosemDateTime.from_datetime(datetime(2026, 1, 1))


# -- BER -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arcs",
    [
        (2, 16, 756, 5, 8, 1, 1),
        (2, 16, 756, 5, 8, 2, 5),
        (1, 2, 840, 113549),
        (0, 9, 2342, 19200300),
    ],
)
def test_oid_round_trip(arcs):
    assert ber.decode_oid(ber.encode_oid(arcs)) == arcs


def test_dlms_context_oid_octets():
    assert ber.encode_oid((2, 16, 756, 5, 8, 1, 3)).hex() == "60857405080103"


def test_ber_errors():
    with pytest.raises(ber.BerError):
        ber.read_tlv(b"\x60", 0)
    with pytest.raises(ber.BerError):
        ber.read_tlv(b"\x60\x05\x00", 0)
    with pytest.raises(ber.BerError):
        ber.read_tlv(b"\x7f\x01\x00", 0)  # multi-octet tag
    with pytest.raises(ber.BerError):
        ber.read_tlv(b"\x60\x84\x00\x00\x00\x01\x00", 0)
    with pytest.raises(ber.BerError):
        ber.read_single(b"\x80\x00\x00")
    with pytest.raises(ber.BerError):
        ber.decode_oid(b"\x85")
    with pytest.raises(ValueError):
        ber.encode_oid((2,))
    long_value = b"\x00" * 300
    item, end = ber.read_tlv(ber.tlv(0x04, long_value), 0)
    assert item.value == long_value and end == 304
