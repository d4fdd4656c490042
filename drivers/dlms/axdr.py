"""A-XDR encoding of COSEM ``Data`` (Blue Book / IEC 62056-6-2), our own codec.

The driver decodes every value itself instead of using gurux's parser: integers stay integers
(gurux turns scaled values into floats), date-times are parsed with their deviation and status,
and the load-profile parse costs a fraction of gurux's (see docs/driver-dlms.md).

Decoded types: null -> None, array -> list, structure -> tuple, boolean -> bool, integers and
enum -> int, octet-string -> bytes, visible/utf8-string -> str, bit-string -> BitString,
float32 -> Float32 (a float subclass), float64 -> float, date-time -> CosemDateTime,
date/time -> CosemDate/CosemTime, compact-array -> list of decoded entries.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

NULL = 0
ARRAY = 1
STRUCTURE = 2
BOOLEAN = 3
BIT_STRING = 4
INT32 = 5
UINT32 = 6
OCTET_STRING = 9
VISIBLE_STRING = 10
UTF8_STRING = 12
BCD = 13
INT8 = 15
INT16 = 16
UINT8 = 17
UINT16 = 18
COMPACT_ARRAY = 19
INT64 = 20
UINT64 = 21
ENUM = 22
FLOAT32 = 23
FLOAT64 = 24
DATE_TIME = 25
DATE = 26
TIME = 27
DONT_CARE = 255

MAX_DEPTH = 16
MAX_ELEMENTS = 1_000_000

_S_I16 = struct.Struct(">h")
_S_U16 = struct.Struct(">H")
_S_I32 = struct.Struct(">i")
_S_U32 = struct.Struct(">I")
_S_I64 = struct.Struct(">q")
_S_U64 = struct.Struct(">Q")
_S_F32 = struct.Struct(">f")
_S_F64 = struct.Struct(">d")

_FIXED: dict[int, tuple[int, struct.Struct | None, bool]] = {
    # tag: (size, struct, signed-for-1-byte)
    INT32: (4, _S_I32, True),
    UINT32: (4, _S_U32, False),
    INT16: (2, _S_I16, True),
    UINT16: (2, _S_U16, False),
    INT64: (8, _S_I64, True),
    UINT64: (8, _S_U64, False),
    INT8: (1, None, True),
    UINT8: (1, None, False),
    ENUM: (1, None, False),
    BCD: (1, None, False),
}


class DecodeError(ValueError):
    """The bytes are not valid A-XDR data."""


class Float32(float):
    """A float32 value; ``decimal_text`` gives the shortest decimal that round-trips it."""

    @property
    def decimal_text(self) -> str:
        packed = _S_F32.pack(self)
        for digits in range(1, 10):
            text = f"{self:.{digits}g}"
            if _S_F32.pack(float(text)) == packed:
                return text
        return repr(float(self))


@dataclass(frozen=True, slots=True)
class BitString:
    """``size`` bits, most significant bit of ``data[0]`` first."""

    size: int
    data: bytes

    def __getitem__(self, index: int) -> bool:
        if not 0 <= index < self.size:
            raise IndexError(index)
        return bool(self.data[index >> 3] & (0x80 >> (index & 7)))

    def __len__(self) -> int:
        return self.size

    def to_int(self) -> int:
        """The bits as an unsigned integer, first bit most significant."""
        if not self.size:
            return 0
        return int.from_bytes(self.data, "big") >> (len(self.data) * 8 - self.size)

    @classmethod
    def from_bools(cls, bits: list[bool]) -> BitString:
        data = bytearray((len(bits) + 7) // 8)
        for i, bit in enumerate(bits):
            if bit:
                data[i >> 3] |= 0x80 >> (i & 7)
        return cls(len(bits), bytes(data))


STATUS_DST = 0x80


@dataclass(frozen=True, slots=True)
class CosemDateTime:
    """The 12-byte COSEM date-time, field by field; 0xFF/0xFFFF/0x8000 mean "not specified".

    ``deviation`` is minutes as DLMS defines it: UTC = local + deviation (CET is -60)."""

    year: int
    month: int
    day: int
    day_of_week: int
    hour: int
    minute: int
    second: int
    hundredths: int
    deviation: int | None
    status: int | None

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemDateTime:
        if len(raw) != 12:
            raise DecodeError(f"a date-time is 12 bytes, not {len(raw)}")
        deviation = _S_I16.unpack_from(raw, 9)[0]
        return cls(
            (raw[0] << 8) | raw[1],
            raw[2],
            raw[3],
            raw[4],
            raw[5],
            raw[6],
            raw[7],
            raw[8],
            None if deviation == -0x8000 else deviation,
            None if raw[11] == 0xFF else raw[11],
        )

    def to_bytes(self) -> bytes:
        return (
            bytes(
                [
                    self.year >> 8,
                    self.year & 0xFF,
                    self.month,
                    self.day,
                    self.day_of_week,
                    self.hour,
                    self.minute,
                    self.second,
                    self.hundredths,
                ]
            )
            + _S_I16.pack(-0x8000 if self.deviation is None else self.deviation)
            + bytes([0xFF if self.status is None else self.status])
        )

    @property
    def dst(self) -> bool | None:
        return None if self.status is None else bool(self.status & STATUS_DST)

    @property
    def is_specified(self) -> bool:
        """Whether year, month, day, hour, minute and second are all concrete values."""
        return (
            self.year != 0xFFFF
            and 1 <= self.month <= 12
            and 1 <= self.day <= 31
            and self.hour < 24
            and self.minute < 60
            and self.second < 60
        )

    def local_time(self) -> datetime | None:
        """The naive wall-clock time, or None when a field is unspecified or impossible."""
        if not self.is_specified:
            return None
        micro = 0 if self.hundredths > 99 else self.hundredths * 10_000
        try:
            return datetime(
                self.year, self.month, self.day, self.hour, self.minute, self.second, micro
            )
        except ValueError:
            return None

    def to_datetime(self) -> datetime | None:
        """Aware UTC when the deviation is given, else the naive wall-clock time."""
        local = self.local_time()
        if local is None or self.deviation is None:
            return local
        return (local + timedelta(minutes=self.deviation)).replace(tzinfo=UTC)

    @classmethod
    def from_datetime(
        cls, value: datetime, *, deviation: int | None = None, dst: bool | None = None
    ) -> CosemDateTime:
        """From an aware time (local = UTC - deviation; the deviation defaults to the value's
        own UTC offset) or a naive wall-clock time (deviation as given, else unspecified)."""
        if value.tzinfo is not None:
            if deviation is None:
                offset = value.utcoffset() or timedelta(0)
                deviation = -int(offset.total_seconds() // 60)
            utc = value.astimezone(UTC).replace(tzinfo=None)
            local = utc - timedelta(minutes=deviation)
        else:
            local = value
        if deviation is not None and not -720 <= deviation <= 840:
            raise ValueError(f"deviation {deviation} is out of range")
        status = None if dst is None else (STATUS_DST if dst else 0)
        return cls(
            local.year,
            local.month,
            local.day,
            local.isoweekday(),
            local.hour,
            local.minute,
            local.second,
            local.microsecond // 10_000,
            deviation,
            status,
        )


_S_DATETIME = struct.Struct(">HBBBBBBBhB")
_DEVIATIONS: dict[int, timedelta] = {}


def datetime_from_octets(raw: bytes) -> tuple[datetime, bool | None] | None:
    """Fast path of ``CosemDateTime.from_bytes(raw).to_datetime()`` and its DST flag, for
    profile buffers: None when the time is not fully specified."""
    if len(raw) != 12:
        raise DecodeError(f"a date-time is 12 bytes, not {len(raw)}")
    year, month, day, _, hour, minute, second, hundredths, deviation, status = _S_DATETIME.unpack(
        raw
    )
    if year == 0xFFFF or hour > 23 or minute > 59 or second > 59:
        return None
    try:
        if deviation == -0x8000:
            moment = datetime(
                year,
                month,
                day,
                hour,
                minute,
                second,
                0 if hundredths > 99 else hundredths * 10_000,
            )
        else:
            shift = _DEVIATIONS.get(deviation)
            if shift is None:
                shift = _DEVIATIONS[deviation] = timedelta(minutes=deviation)
            moment = (
                datetime(
                    year,
                    month,
                    day,
                    hour,
                    minute,
                    second,
                    0 if hundredths > 99 else hundredths * 10_000,
                    UTC,
                )
                + shift
            )
    except ValueError:
        return None  # month/day "not specified" or special values: not a concrete time
    return moment, None if status == 0xFF else bool(status & STATUS_DST)


@dataclass(frozen=True, slots=True)
class CosemDate:
    raw: bytes

    def to_date(self) -> date | None:
        year = (self.raw[0] << 8) | self.raw[1]
        try:
            return date(year, self.raw[2], self.raw[3])
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class CosemTime:
    raw: bytes


def _length(data: bytes, pos: int) -> tuple[int, int]:
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    count = first & 0x7F
    if count == 0 or count > 4:
        raise DecodeError(f"length of {count} bytes")
    end = pos + count
    if end > len(data):
        raise DecodeError("truncated length")
    return int.from_bytes(data[pos:end], "big"), end


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_ELEMENTS


def decode(data: bytes, pos: int = 0) -> tuple[object, int]:
    """One value from ``data[pos:]`` -> (value, position after it). Raises DecodeError."""
    try:
        return _decode(data, pos, 0, _Budget())
    except (IndexError, struct.error) as exc:
        raise DecodeError("truncated data") from exc


def decode_all(data: bytes) -> object:
    value, end = decode(data)
    if end != len(data):
        raise DecodeError(f"{len(data) - end} bytes after the value")
    return value


def _take(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    end = pos + size
    if end > len(data):
        raise DecodeError("truncated data")
    return data[pos:end], end


def _decode(data: bytes, pos: int, depth: int, budget: _Budget) -> tuple[object, int]:
    tag = data[pos]
    pos += 1
    fixed = _FIXED.get(tag)
    if fixed is not None:
        size, packer, signed = fixed
        if packer is not None:
            if pos + size > len(data):
                raise DecodeError("truncated data")
            return packer.unpack_from(data, pos)[0], pos + size
        value = data[pos]
        if signed and value > 127:
            value -= 256
        return value, pos + 1
    if tag == OCTET_STRING:
        size, pos = _length(data, pos)
        return _take(data, pos, size)
    if tag in (STRUCTURE, ARRAY):
        count, pos = _length(data, pos)
        if depth >= MAX_DEPTH:
            raise DecodeError("data nested too deep")
        budget.left -= count
        if budget.left < 0 or count > len(data) - pos:
            raise DecodeError(f"{count} elements cannot fit")
        items = []
        append = items.append
        size = len(data)
        for _ in range(count):
            # The leaves of profile rows decoded inline: the recursive call per value was
            # most of the decoding time of a load profile.
            leaf = data[pos]
            if leaf == UINT32:
                append(_S_U32.unpack_from(data, pos + 1)[0])
                pos += 5
            elif leaf == OCTET_STRING and pos + 1 < size and data[pos + 1] < 0x80:
                end = pos + 2 + data[pos + 1]
                if end > size:
                    raise DecodeError("truncated octet-string")
                append(data[pos + 2 : end])
                pos = end
            elif leaf in (UINT8, ENUM):
                append(data[pos + 1])
                pos += 2
            elif leaf == UINT16:
                append(_S_U16.unpack_from(data, pos + 1)[0])
                pos += 3
            elif leaf == INT32:
                append(_S_I32.unpack_from(data, pos + 1)[0])
                pos += 5
            else:
                item, pos = _decode(data, pos, depth + 1, budget)
                append(item)
        return (tuple(items) if tag == STRUCTURE else items), pos
    if tag == NULL:
        return None, pos
    if tag == BOOLEAN:
        return data[pos] != 0, pos + 1
    if tag == VISIBLE_STRING:
        size, pos = _length(data, pos)
        raw, pos = _take(data, pos, size)
        return raw.decode("latin-1"), pos
    if tag == UTF8_STRING:
        size, pos = _length(data, pos)
        raw, pos = _take(data, pos, size)
        try:
            return raw.decode("utf-8"), pos
        except UnicodeDecodeError as exc:
            raise DecodeError("invalid utf8-string") from exc
    if tag == BIT_STRING:
        bits, pos = _length(data, pos)
        raw, pos = _take(data, pos, (bits + 7) // 8)
        return BitString(bits, raw), pos
    if tag == FLOAT32:
        raw, pos = _take(data, pos, 4)
        return Float32(_S_F32.unpack(raw)[0]), pos
    if tag == FLOAT64:
        raw, pos = _take(data, pos, 8)
        return _S_F64.unpack(raw)[0], pos
    if tag == DATE_TIME:
        raw, pos = _take(data, pos, 12)
        return CosemDateTime.from_bytes(raw), pos
    if tag == DATE:
        raw, pos = _take(data, pos, 5)
        return CosemDate(raw), pos
    if tag == TIME:
        raw, pos = _take(data, pos, 4)
        return CosemTime(raw), pos
    if tag == COMPACT_ARRAY:
        return _decode_compact_array(data, pos, depth, budget)
    if tag == DONT_CARE:
        return None, pos
    raise DecodeError(f"unknown data type {tag}")


def _type_description(data: bytes, pos: int, depth: int) -> tuple[object, int]:
    if depth >= MAX_DEPTH:
        raise DecodeError("type description nested too deep")
    tag = data[pos]
    pos += 1
    if tag == ARRAY:
        count = _S_U16.unpack_from(data, pos)[0]
        element, pos = _type_description(data, pos + 2, depth + 1)
        return (ARRAY, count, element), pos
    if tag == STRUCTURE:
        count, pos = _length(data, pos)
        members = []
        for _ in range(count):
            member, pos = _type_description(data, pos, depth + 1)
            members.append(member)
        return (STRUCTURE, members), pos
    return tag, pos


def _decode_typed(
    description: object, data: bytes, pos: int, depth: int, budget: _Budget
) -> tuple[object, int]:
    if isinstance(description, tuple):
        if description[0] == ARRAY:
            _, count, element = description
            items = []
            for _ in range(count):
                item, pos = _decode_typed(element, data, pos, depth + 1, budget)
                items.append(item)
            return items, pos
        members = []
        for member in description[1]:
            item, pos = _decode_typed(member, data, pos, depth + 1, budget)
            members.append(item)
        return tuple(members), pos
    # A simple type: the same encoding as a tagged value, without its tag.
    tagged = bytes([description]) + data[pos : pos + 16]
    if description in (OCTET_STRING, VISIBLE_STRING, UTF8_STRING, BIT_STRING):
        size, after = _length(data, pos)
        width = (size + 7) // 8 if description == BIT_STRING else size
        tagged = bytes([description]) + data[pos : after + width]
    value, used = _decode(tagged, 0, depth, budget)
    return value, pos + used - 1


def _decode_compact_array(data: bytes, pos: int, depth: int, budget: _Budget) -> tuple[object, int]:
    description, pos = _type_description(data, pos, depth)
    size, pos = _length(data, pos)
    end = pos + size
    if end > len(data):
        raise DecodeError("truncated compact array")
    items = []
    while pos < end:
        item, pos = _decode_typed(description, data, pos, depth + 1, budget)
        items.append(item)
        budget.left -= 1
        if budget.left < 0:
            raise DecodeError("too many elements")
    if pos != end:
        raise DecodeError("compact array contents overrun")
    return items, pos


# ---------------------------------------------------------------------------------------------
# Encoding (what the driver sends: method parameters, SET values, selective access)


def encode_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def uint8(value: int) -> bytes:
    return bytes([UINT8, value])


def int8(value: int) -> bytes:
    return bytes([INT8, value & 0xFF])


def uint16(value: int) -> bytes:
    return bytes([UINT16]) + _S_U16.pack(value)


def int16(value: int) -> bytes:
    return bytes([INT16]) + _S_I16.pack(value)


def uint32(value: int) -> bytes:
    return bytes([UINT32]) + _S_U32.pack(value)


def enum_(value: int) -> bytes:
    return bytes([ENUM, value])


def boolean(value: bool) -> bytes:
    return bytes([BOOLEAN, 1 if value else 0])


def octet_string(value: bytes) -> bytes:
    return bytes([OCTET_STRING]) + encode_length(len(value)) + value


def date_time_octets(value: CosemDateTime) -> bytes:
    return octet_string(value.to_bytes())


def structure(*members: bytes) -> bytes:
    return bytes([STRUCTURE]) + encode_length(len(members)) + b"".join(members)


def array(members: list[bytes]) -> bytes:
    return bytes([ARRAY]) + encode_length(len(members)) + b"".join(members)


def null() -> bytes:
    return bytes([NULL])
