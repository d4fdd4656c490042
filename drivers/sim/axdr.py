"""A-XDR encoding of COSEM ``Data`` (IEC 62056-6-2 data types, IEC 61334-6 A-XDR rules).

A value is a :class:`Data`: its type tag and a Python payload. Integers stay integers,
strings of octets stay ``bytes``; nothing is converted to float. :func:`decode` raises
:class:`AxdrError` (a ``ValueError``) on truncated, unknown or absurdly nested input and on
nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from typing import Any, NamedTuple

MAX_DEPTH = 32  # nesting of arrays/structures accepted from a peer


class AxdrError(ValueError):
    """Malformed A-XDR input."""


class Tag(IntEnum):
    NULL_DATA = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    COMPACT_ARRAY = 19
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DONT_CARE = 255


# Fixed-size integer types: tag -> struct format.
_INT_FORMATS: dict[int, struct.Struct] = {
    Tag.DOUBLE_LONG: struct.Struct(">i"),
    Tag.DOUBLE_LONG_UNSIGNED: struct.Struct(">I"),
    Tag.INTEGER: struct.Struct(">b"),
    Tag.LONG: struct.Struct(">h"),
    Tag.UNSIGNED: struct.Struct(">B"),
    Tag.LONG_UNSIGNED: struct.Struct(">H"),
    Tag.LONG64: struct.Struct(">q"),
    Tag.LONG64_UNSIGNED: struct.Struct(">Q"),
    Tag.ENUM: struct.Struct(">B"),
    Tag.BCD: struct.Struct(">b"),
}
_FLOAT_FORMATS: dict[int, struct.Struct] = {
    Tag.FLOAT32: struct.Struct(">f"),
    Tag.FLOAT64: struct.Struct(">d"),
}
_FIXED_OCTETS = {Tag.DATE_TIME: 12, Tag.DATE: 5, Tag.TIME: 4}


@dataclass(frozen=True, slots=True)
class BitString:
    """``length`` bits, most significant bit of ``data[0]`` first."""

    length: int
    data: bytes

    def __post_init__(self) -> None:
        if self.length < 0 or len(self.data) != (self.length + 7) // 8:
            raise AxdrError(
                f"bit-string of {self.length} bits needs {(self.length + 7) // 8} octets"
            )

    @classmethod
    def from_bools(cls, bits: Sequence[bool]) -> BitString:
        out = bytearray((len(bits) + 7) // 8)
        for i, bit in enumerate(bits):
            if bit:
                out[i >> 3] |= 0x80 >> (i & 7)
        return cls(len(bits), bytes(out))

    def __getitem__(self, index: int) -> bool:
        if not 0 <= index < self.length:
            raise IndexError(index)
        return bool(self.data[index >> 3] & (0x80 >> (index & 7)))

    def to_bools(self) -> list[bool]:
        return [self[i] for i in range(self.length)]


class Data(NamedTuple):
    """One A-XDR value: ``tag`` and payload (int, bool, bytes, str, BitString, list[Data])."""

    tag: int
    value: Any = None


class Encoded(NamedTuple):
    """A value already in A-XDR (a profile row, a whole buffer); encodes as itself."""

    raw: bytes


# -- constructors, named after the COSEM type names ------------------------------------
NULL = Data(Tag.NULL_DATA)


def boolean(v: bool) -> Data:
    return Data(Tag.BOOLEAN, bool(v))


def integer(v: int) -> Data:
    return Data(Tag.INTEGER, v)


def long(v: int) -> Data:
    return Data(Tag.LONG, v)


def double_long(v: int) -> Data:
    return Data(Tag.DOUBLE_LONG, v)


def long64(v: int) -> Data:
    return Data(Tag.LONG64, v)


def unsigned(v: int) -> Data:
    return Data(Tag.UNSIGNED, v)


def long_unsigned(v: int) -> Data:
    return Data(Tag.LONG_UNSIGNED, v)


def double_long_unsigned(v: int) -> Data:
    return Data(Tag.DOUBLE_LONG_UNSIGNED, v)


def long64_unsigned(v: int) -> Data:
    return Data(Tag.LONG64_UNSIGNED, v)


def enum(v: int) -> Data:
    return Data(Tag.ENUM, v)


def octet_string(v: bytes) -> Data:
    return Data(Tag.OCTET_STRING, bytes(v))


def visible_string(v: str) -> Data:
    return Data(Tag.VISIBLE_STRING, v)


def bit_string(v: BitString) -> Data:
    return Data(Tag.BIT_STRING, v)


def structure(*items: Data) -> Data:
    return Data(Tag.STRUCTURE, list(items))


def array(items: Sequence[Data]) -> Data:
    return Data(Tag.ARRAY, list(items))


# -- lengths ---------------------------------------------------------------------------
def encode_length(n: int) -> bytes:
    """A-XDR/BER definite length: one octet below 128, else 0x8N and N octets."""
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def decode_length(buf: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise AxdrError("truncated length")
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    size = first & 0x7F
    if size == 0 or size > 4:
        raise AxdrError(f"unsupported length form 0x{first:02x}")
    end = pos + 1 + size
    if end > len(buf):
        raise AxdrError("truncated length")
    return int.from_bytes(buf[pos + 1 : end], "big"), end


# -- encoding --------------------------------------------------------------------------
def encode(d: Data | Encoded) -> bytes:
    out = bytearray()
    _encode_into(out, d)
    return bytes(out)


def _encode_into(out: bytearray, d: Data | Encoded) -> None:
    if type(d) is Encoded:
        out += d.raw
        return
    tag, value = d
    out.append(tag)
    fmt = _INT_FORMATS.get(tag)
    if fmt is not None:
        try:
            out += fmt.pack(value)
        except struct.error as exc:
            raise AxdrError(f"{value!r} does not fit {Tag(tag).name}") from exc
    elif tag in (Tag.STRUCTURE, Tag.ARRAY):
        out += encode_length(len(value))
        for item in value:
            _encode_into(out, item)
    elif tag == Tag.OCTET_STRING:
        out += encode_length(len(value))
        out += value
    elif tag in (Tag.VISIBLE_STRING, Tag.UTF8_STRING):
        raw = value.encode("ascii" if tag == Tag.VISIBLE_STRING else "utf-8")
        out += encode_length(len(raw))
        out += raw
    elif tag == Tag.BOOLEAN:
        out.append(0xFF if value else 0x00)
    elif tag == Tag.BIT_STRING:
        out += encode_length(value.length)
        out += value.data
    elif tag in (Tag.NULL_DATA, Tag.DONT_CARE):
        pass
    elif tag in _FIXED_OCTETS:
        if len(value) != _FIXED_OCTETS[tag]:
            raise AxdrError(f"{Tag(tag).name} needs {_FIXED_OCTETS[tag]} octets")
        out += value
    elif tag in _FLOAT_FORMATS:
        out += _FLOAT_FORMATS[tag].pack(value)
    else:
        raise AxdrError(f"cannot encode tag {tag}")


# -- decoding --------------------------------------------------------------------------
def decode(buf: bytes, pos: int = 0, _depth: int = 0) -> tuple[Data, int]:
    """Decode one value at ``pos``; return it and the position after it."""
    if pos >= len(buf):
        raise AxdrError("truncated data: no tag")
    tag = buf[pos]
    pos += 1
    fmt = _INT_FORMATS.get(tag)
    if fmt is not None:
        end = pos + fmt.size
        if end > len(buf):
            raise AxdrError(f"truncated {Tag(tag).name}")
        return Data(tag, fmt.unpack_from(buf, pos)[0]), end
    if tag in (Tag.STRUCTURE, Tag.ARRAY):
        if _depth >= MAX_DEPTH:
            raise AxdrError("data nested too deep")
        count, pos = decode_length(buf, pos)
        items = []
        for _ in range(count):
            item, pos = decode(buf, pos, _depth + 1)
            items.append(item)
        return Data(tag, items), pos
    if tag in (Tag.OCTET_STRING, Tag.VISIBLE_STRING, Tag.UTF8_STRING):
        n, pos = decode_length(buf, pos)
        end = pos + n
        if end > len(buf):
            raise AxdrError(f"truncated {Tag(tag).name}")
        raw = bytes(buf[pos:end])
        if tag == Tag.OCTET_STRING:
            return Data(tag, raw), end
        try:
            text = raw.decode("ascii" if tag == Tag.VISIBLE_STRING else "utf-8")
        except UnicodeDecodeError as exc:
            raise AxdrError(f"bad {Tag(tag).name}") from exc
        return Data(tag, text), end
    if tag == Tag.BOOLEAN:
        if pos >= len(buf):
            raise AxdrError("truncated boolean")
        return Data(tag, buf[pos] != 0), pos + 1
    if tag == Tag.BIT_STRING:
        nbits, pos = decode_length(buf, pos)
        end = pos + (nbits + 7) // 8
        if end > len(buf):
            raise AxdrError("truncated bit-string")
        return Data(tag, BitString(nbits, bytes(buf[pos:end]))), end
    if tag in (Tag.NULL_DATA, Tag.DONT_CARE):
        return Data(tag), pos
    if tag in _FIXED_OCTETS:
        end = pos + _FIXED_OCTETS[tag]
        if end > len(buf):
            raise AxdrError(f"truncated {Tag(tag).name}")
        return Data(tag, bytes(buf[pos:end])), end
    if tag in _FLOAT_FORMATS:
        f = _FLOAT_FORMATS[tag]
        if pos + f.size > len(buf):
            raise AxdrError(f"truncated {Tag(tag).name}")
        return Data(tag, f.unpack_from(buf, pos)[0]), pos + f.size
    raise AxdrError(f"unknown or unsupported data type tag {tag}")


def decode_all(buf: bytes) -> Data:
    """Decode exactly one value that fills ``buf``."""
    value, pos = decode(buf, 0)
    if pos != len(buf):
        raise AxdrError(f"{len(buf) - pos} octets after the value")
    return value


# -- date-time (12 octets) -------------------------------------------------------------
DEVIATION_UNSPECIFIED = -0x8000
STATUS_INVALID = 0x01
STATUS_DOUBTFUL = 0x02
STATUS_DIFFERENT_BASE = 0x04
STATUS_INVALID_STATUS = 0x08
STATUS_DST_ACTIVE = 0x80
_DT = struct.Struct(">HBBBBBBBhB")


@dataclass(frozen=True, slots=True)
class CosemDateTime:
    """The COSEM date-time: wildcard fields hold 0xFF (year 0xFFFF).

    ``deviation`` keeps the wire convention of the Green/Blue Book as meters and both
    reference clients use it: minutes from local time *to* UTC, so UTC+01:00 is -60.
    """

    year: int
    month: int
    day: int
    day_of_week: int
    hour: int
    minute: int
    second: int
    hundredths: int = 0
    deviation: int = DEVIATION_UNSPECIFIED
    status: int = 0

    def to_bytes(self) -> bytes:
        return _DT.pack(
            self.year,
            self.month,
            self.day,
            self.day_of_week,
            self.hour,
            self.minute,
            self.second,
            self.hundredths,
            self.deviation,
            self.status,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemDateTime:
        if len(raw) != 12:
            raise AxdrError(f"date-time needs 12 octets, got {len(raw)}")
        return cls(*_DT.unpack(raw))

    @classmethod
    def from_datetime(cls, dt: datetime, status: int = 0) -> CosemDateTime:
        """From an aware datetime in the meter's local time."""
        offset = dt.utcoffset()
        if offset is None:
            raise ValueError("datetime must be timezone-aware")
        if dt.dst():
            status |= STATUS_DST_ACTIVE
        return cls(
            dt.year,
            dt.month,
            dt.day,
            dt.isoweekday(),
            dt.hour,
            dt.minute,
            dt.second,
            dt.microsecond // 10_000,
            -int(offset.total_seconds() // 60),
            status,
        )

    def to_datetime(self, default_offset_minutes: int | None = None) -> datetime:
        """An aware datetime; an unspecified deviation uses ``default_offset_minutes``
        (UTC offset in the usual sign). Raises AxdrError if a date or time field is a
        wildcard or out of range."""
        if self.deviation == DEVIATION_UNSPECIFIED:
            if default_offset_minutes is None:
                raise AxdrError("date-time without deviation")
            offset = default_offset_minutes
        else:
            if not -840 <= self.deviation <= 840:
                raise AxdrError(f"deviation {self.deviation} out of range")
            offset = -self.deviation
        hundredths = 0 if self.hundredths == 0xFF else self.hundredths
        try:
            return datetime(
                self.year,
                self.month,
                self.day,
                self.hour,
                self.minute,
                self.second,
                hundredths * 10_000,
                tzinfo=timezone(timedelta(minutes=offset)),
            )
        except ValueError as exc:
            raise AxdrError(f"not a concrete date-time: {self}") from exc

    def to_utc_seconds(self, default_offset_minutes: int | None = None) -> float:
        return self.to_datetime(default_offset_minutes).astimezone(UTC).timestamp()
