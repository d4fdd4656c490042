"""The TCP-UDP/IP WRAPPER of IEC 62056-47 (Green Book 'wrapper' sub-layer), sans-IO.

Each APDU travels behind an 8-octet header: version (always 1), source wPort,
destination wPort and the APDU length, all big-endian 16-bit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

VERSION = 1
HEADER = struct.Struct(">HHHH")
HEADER_SIZE = HEADER.size


@dataclass(frozen=True, slots=True)
class WrapperPdu:
    source: int
    destination: int
    apdu: bytes

    def to_bytes(self) -> bytes:
        if len(self.apdu) > 0xFFFF:
            raise ValueError("an APDU behind the wrapper is at most 65535 octets")
        return HEADER.pack(VERSION, self.source, self.destination, len(self.apdu)) + self.apdu


@dataclass(frozen=True, slots=True)
class WrapperError:
    """The stream cannot be read further (bad version or length): close the connection."""

    reason: str
    header: bytes


def encode(source: int, destination: int, apdu: bytes) -> bytes:
    return WrapperPdu(source, destination, apdu).to_bytes()


class WrapperReader:
    """Feed stream bytes; take complete PDUs (and at most one terminal error) out.

    ``max_apdu`` bounds what a peer can make us buffer.
    """

    def __init__(self, max_apdu: int = 0xFFFF) -> None:
        self._buf = bytearray()
        self._max_apdu = max_apdu
        self.failed = False

    def feed(self, data: bytes) -> list[WrapperPdu | WrapperError]:
        if self.failed:
            return []
        self._buf += data
        out: list[WrapperPdu | WrapperError] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= HEADER_SIZE:
            version, source, destination, length = HEADER.unpack_from(buf, pos)
            if version != VERSION:
                out.append(self._fail(f"wrapper version {version}, expected 1", buf, pos))
                return out
            if length > self._max_apdu:
                out.append(self._fail(f"APDU length {length} over {self._max_apdu}", buf, pos))
                return out
            end = pos + HEADER_SIZE + length
            if end > len(buf):
                break
            out.append(WrapperPdu(source, destination, bytes(buf[pos + HEADER_SIZE : end])))
            pos = end
        del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Octets of an incomplete PDU held back."""
        return len(self._buf)

    def _fail(self, reason: str, buf: bytearray, pos: int) -> WrapperError:
        self.failed = True
        header = bytes(buf[pos : pos + HEADER_SIZE])
        self._buf.clear()
        return WrapperError(reason, header)
