"""The subset of BER (ITU-T X.690) that the ACSE APDUs of IEC 62056-5-3 use.

Single-octet tags only (every ACSE tag DLMS uses fits), definite lengths, and object
identifiers. :class:`BerError` (a ``ValueError``) on anything malformed.
"""

from __future__ import annotations

from dataclasses import dataclass


class BerError(ValueError):
    """Malformed BER input."""


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    value: bytes


def encode_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + encode_length(len(value)) + value


def read_tlv(buf: bytes, pos: int) -> tuple[Tlv, int]:
    if pos + 2 > len(buf):
        raise BerError("truncated tag or length")
    tag = buf[pos]
    if tag & 0x1F == 0x1F:
        raise BerError(f"multi-octet tag 0x{tag:02x} not used by DLMS")
    first = buf[pos + 1]
    pos += 2
    if first < 0x80:
        n = first
    else:
        size = first & 0x7F
        if size == 0 or size > 3:
            raise BerError(f"unsupported length form 0x{first:02x}")
        if pos + size > len(buf):
            raise BerError("truncated length")
        n = int.from_bytes(buf[pos : pos + size], "big")
        pos += size
    end = pos + n
    if end > len(buf):
        raise BerError(f"value of tag 0x{tag:02x} truncated ({len(buf) - pos} of {n} octets)")
    return Tlv(tag, bytes(buf[pos:end])), end


def read_all(buf: bytes) -> list[Tlv]:
    """Every TLV of a constructed value's contents, in order."""
    out = []
    pos = 0
    while pos < len(buf):
        item, pos = read_tlv(buf, pos)
        out.append(item)
    return out


def read_single(buf: bytes) -> Tlv:
    """Exactly one TLV filling ``buf``."""
    item, pos = read_tlv(buf, 0)
    if pos != len(buf):
        raise BerError(f"{len(buf) - pos} octets after the value")
    return item


def encode_oid(arcs: tuple[int, ...]) -> bytes:
    """Contents octets of an OBJECT IDENTIFIER."""
    if len(arcs) < 2:
        raise ValueError("an OID has at least two arcs")
    out = bytearray()
    for arc in (arcs[0] * 40 + arcs[1], *arcs[2:]):
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


def decode_oid(raw: bytes) -> tuple[int, ...]:
    if not raw or raw[-1] & 0x80:
        raise BerError("bad object identifier")
    values = []
    arc = 0
    for octet in raw:
        arc = (arc << 7) | (octet & 0x7F)
        if not octet & 0x80:
            values.append(arc)
            arc = 0
    first = values[0]
    head = (min(first // 40, 2), first - 40 * min(first // 40, 2))
    return (*head, *values[1:])
