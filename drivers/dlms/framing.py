"""Frame boundaries in a TCP byte stream, sans-IO: the WRAPPER header (IEC 62056-47) and HDLC
frame format type 3 (IEC 62056-46). Each framer takes bytes in and hands out complete frames
(the exact bytes gurux parses), skipping what cannot be one of our frames:

- bytes before a frame start (garbage, the tail of a truncated frame),
- HDLC frames whose FCS does not check, or that are addressed to another client,
- WRAPPER frames between other wPorts.

What was skipped is counted, so a timeout can say that garbage arrived instead of an answer.
"""

from __future__ import annotations

from collections import deque

HDLC_FLAG = 0x7E
WRAPPER_HEADER = 8


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC = _crc_table()


def fcs16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X.25 as HDLC uses it (HCS and FCS)."""
    crc = 0xFFFF
    table = _CRC
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


class Framer:
    """Common part: a buffer, complete frames queued, skip statistics."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._frames: deque[bytes] = deque()
        self.skipped_bytes = 0
        self.skipped_frames = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data
        self._scan()

    def next_frame(self) -> bytes | None:
        return self._frames.popleft() if self._frames else None

    def has_frame(self) -> bool:
        return bool(self._frames)

    def discard(self) -> None:
        """Forget buffered bytes and queued frames (stale answers before a retry)."""
        self.skipped_bytes += len(self._buffer)
        self.skipped_frames += len(self._frames)
        self._buffer.clear()
        self._frames.clear()

    def reset_stats(self) -> None:
        self.skipped_bytes = 0
        self.skipped_frames = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def _scan(self) -> None:
        raise NotImplementedError


class WrapperFramer(Framer):
    """Frames from ``server_wport`` to ``client_wport``; the 6-byte version+addresses prefix
    is the synchronisation pattern."""

    def __init__(self, client_wport: int, server_wport: int, max_apdu: int = 0xFFFF) -> None:
        super().__init__()
        self._sync = b"\x00\x01" + server_wport.to_bytes(2, "big") + client_wport.to_bytes(2, "big")
        self._max_apdu = max_apdu

    def _scan(self) -> None:
        buf = self._buffer
        while True:
            start = buf.find(self._sync)
            if start < 0:
                keep = len(self._sync) - 1
                if len(buf) > keep:
                    self.skipped_bytes += len(buf) - keep
                    del buf[: len(buf) - keep]
                return
            if start:
                self.skipped_bytes += start
                del buf[:start]
            if len(buf) < WRAPPER_HEADER:
                return
            length = int.from_bytes(buf[6:8], "big")
            if length > self._max_apdu or length == 0:
                self.skipped_bytes += 1
                del buf[:1]
                continue
            end = WRAPPER_HEADER + length
            if len(buf) < end:
                return
            self._frames.append(bytes(buf[:end]))
            del buf[:end]


class HdlcFramer(Framer):
    """Frames of format type 3 with a valid FCS, addressed to ``client_address``."""

    def __init__(self, client_address: int) -> None:
        super().__init__()
        self._client = bytes([(client_address << 1) | 1])

    def _scan(self) -> None:
        buf = self._buffer
        while True:
            start = buf.find(HDLC_FLAG)
            if start < 0:
                self.skipped_bytes += len(buf)
                buf.clear()
                return
            if start:
                self.skipped_bytes += start
                del buf[:start]
            if len(buf) < 3:
                return
            fmt = buf[1]
            if fmt & 0xF0 != 0xA0:
                # Not a frame start (a closing flag followed by another flag, or garbage).
                self.skipped_bytes += 1
                del buf[:1]
                continue
            length = ((fmt & 0x07) << 8) | buf[2]
            if length < 7:
                self.skipped_bytes += 1
                del buf[:1]
                continue
            if len(buf) < length + 2:
                return
            if buf[length + 1] != HDLC_FLAG:
                self.skipped_bytes += 1
                del buf[:1]
                continue
            body = bytes(buf[1 : length + 1])
            if fcs16(body[:-2]) != int.from_bytes(body[-2:], "little"):
                self.skipped_frames += 1
                del buf[:1]
                continue
            # Keep the closing flag: it may open the next frame.
            del buf[: length + 1]
            if body[2:3] != self._client:
                self.skipped_frames += 1
                continue
            self._frames.append(b"\x7e" + body + b"\x7e")
