"""HDLC of IEC 62056-46 (frame format type 3), sans-IO: frames, CRC, addresses, and the
secondary station (server side) of a link with window size 1.

A frame between 0x7E flags is: format (type 0xA, segmentation bit, 11-bit length),
destination address, source address, control, HCS (only when an information field
follows), information, FCS. HCS and FCS are CRC-16/X.25, sent least significant octet
first. Addresses are 1, 2 or 4 octets, 7 bits each, the last octet's LSB set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

FLAG = 0x7E
LLC_REQUEST = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"
DEFAULT_MAX_INFO = 128  # the value both ends assume when SNRM/UA do not negotiate
MAX_FRAME_LENGTH = 0x7FF

# Control field values (P/F bit clear).
SNRM = 0x83
DISC = 0x43
UA = 0x63
DM = 0x0F
FRMR = 0x87
UI = 0x03
RR = 0x01
RNR = 0x05
PF = 0x10

# Negotiation parameter identifiers (HDLC parameter negotiation, format 0x81 group 0x80).
PARAM_MAX_INFO_TX = 0x05
PARAM_MAX_INFO_RX = 0x06
PARAM_WINDOW_TX = 0x07
PARAM_WINDOW_RX = 0x08


class HdlcError(ValueError):
    """Malformed HDLC input."""


# -- CRC-16/X.25 (reflected 0x1021, init and xorout 0xFFFF) ------------------------------
def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_table()


def crc16(data: bytes) -> int:
    crc = 0xFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def _crc_bytes(data: bytes) -> bytes:
    crc = crc16(data)
    return bytes((crc & 0xFF, crc >> 8))


# -- addresses -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServerAddress:
    """Upper (logical device) and lower (physical device) HDLC address; ``size`` 1, 2 or
    4 octets on the wire (with 1 octet there is no lower address)."""

    logical: int
    physical: int | None = None
    size: int = 0  # 0: the smallest that fits

    def encode(self) -> bytes:
        size = self.size or self._smallest()
        if size == 1:
            if self.physical is not None or self.logical > 0x7F:
                raise ValueError("a 1-octet server address holds only a logical address <= 127")
            return bytes(((self.logical << 1) | 1,))
        physical = self.physical or 0
        if size == 2:
            if self.logical > 0x7F or physical > 0x7F:
                raise ValueError("2-octet server address parts are at most 127")
            return bytes((self.logical << 1, (physical << 1) | 1))
        if size == 4:
            if self.logical > 0x3FFF or physical > 0x3FFF:
                raise ValueError("4-octet server address parts are at most 16383")
            return bytes(
                (
                    (self.logical >> 7) << 1,
                    (self.logical & 0x7F) << 1,
                    (physical >> 7) << 1,
                    ((physical & 0x7F) << 1) | 1,
                )
            )
        raise ValueError(f"server address size {size} is not 1, 2 or 4")

    def _smallest(self) -> int:
        if self.physical is None:
            return 1 if self.logical <= 0x7F else 4
        return 2 if self.logical <= 0x7F and self.physical <= 0x7F else 4

    @property
    def key(self) -> tuple[int, int | None]:
        return (self.logical, self.physical)


def encode_client_address(sap: int) -> bytes:
    if not 0 <= sap <= 0x7F:
        raise ValueError("client SAP is 0..127")
    return bytes(((sap << 1) | 1,))


def _read_address(buf: bytes, pos: int, end: int) -> tuple[bytes, int]:
    start = pos
    while pos < end:
        if buf[pos] & 1:
            raw = bytes(buf[start : pos + 1])
            if len(raw) not in (1, 2, 4):
                raise HdlcError(f"{len(raw)}-octet HDLC address")
            return raw, pos + 1
        pos += 1
        if pos - start > 4:
            break
    raise HdlcError("HDLC address without end bit")


def decode_server_address(raw: bytes) -> ServerAddress:
    v = [b >> 1 for b in raw]
    if len(raw) == 1:
        return ServerAddress(v[0], None, 1)
    if len(raw) == 2:
        return ServerAddress(v[0], v[1], 2)
    return ServerAddress((v[0] << 7) | v[1], (v[2] << 7) | v[3], 4)


# -- frames ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Frame:
    destination: bytes  # encoded address octets
    source: bytes
    control: int
    info: bytes = b""
    segmented: bool = False

    def to_bytes(self) -> bytes:
        header_len = 2 + len(self.destination) + len(self.source) + 1
        length = header_len + 2 + (len(self.info) + 2 if self.info else 0)
        if length > MAX_FRAME_LENGTH:
            raise ValueError(f"HDLC frame of {length} octets over {MAX_FRAME_LENGTH}")
        fmt = bytes((0xA0 | (0x08 if self.segmented else 0) | (length >> 8), length & 0xFF))
        head = fmt + self.destination + self.source + bytes((self.control,))
        if self.info:
            head += _crc_bytes(head)
            body = head + self.info
        else:
            body = head
        return b"\x7e" + body + _crc_bytes(body) + b"\x7e"

    # Control field decoding.
    @property
    def is_information(self) -> bool:
        return not self.control & 1

    @property
    def is_supervisory(self) -> bool:
        return self.control & 3 == 1

    @property
    def kind(self) -> int:
        """The control value with sequence numbers and the P/F bit masked out."""
        if not self.control & 1:
            return 0
        if self.control & 3 == 1:
            return self.control & 0x0F
        return self.control & ~PF & 0xFF

    @property
    def ns(self) -> int:
        return (self.control >> 1) & 7

    @property
    def nr(self) -> int:
        return (self.control >> 5) & 7

    @property
    def poll(self) -> bool:
        return bool(self.control & PF)


def i_control(ns: int, nr: int, final: bool = True) -> int:
    return (nr << 5) | (PF if final else 0) | (ns << 1)


def rr_control(nr: int, final: bool = True) -> int:
    return (nr << 5) | (PF if final else 0) | RR


def parse_frame(body: bytes) -> Frame:
    """A frame's octets between (not including) the flags."""
    if len(body) < 7:
        raise HdlcError(f"HDLC frame of {len(body)} octets is too short")
    if body[0] & 0xF0 != 0xA0:
        raise HdlcError(f"HDLC frame format type 0x{body[0] >> 4:x}, expected 0xA")
    length = ((body[0] & 0x07) << 8) | body[1]
    if length != len(body):
        raise HdlcError(f"HDLC length field {length}, frame has {len(body)} octets")
    segmented = bool(body[0] & 0x08)
    end = len(body) - 2
    if body[end:] != _crc_bytes(body[:end]):
        raise HdlcError("HDLC FCS mismatch")
    destination, pos = _read_address(body, 2, end)
    source, pos = _read_address(body, pos, end)
    if pos >= end:
        raise HdlcError("HDLC frame without control field")
    control = body[pos]
    pos += 1
    info = b""
    if pos < end:
        if pos + 2 > end:
            raise HdlcError("HDLC frame truncated in HCS")
        if body[pos : pos + 2] != _crc_bytes(body[:pos]):
            raise HdlcError("HDLC HCS mismatch")
        info = bytes(body[pos + 2 : end])
    return Frame(destination, source, control, info, segmented)


@dataclass(frozen=True, slots=True)
class FrameError:
    """A frame (or run of octets) that was dropped; reading continues."""

    reason: str
    data: bytes


class FrameReader:
    """Split a byte stream into frames. Octets outside frames and frames that fail their
    checks come out as :class:`FrameError` events; reading always resynchronises on the
    next flag."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        buf = self._buf
        buf += data
        out: list[Frame | FrameError] = []
        pos = 0
        n = len(buf)
        while pos < n:
            if buf[pos] != FLAG:
                nxt = buf.find(FLAG, pos)
                stop = n if nxt < 0 else nxt
                out.append(FrameError("octets outside an HDLC frame", bytes(buf[pos:stop])))
                pos = stop
                continue
            # Skip repeated flags (a closing flag may double as the next opening one).
            while pos + 1 < n and buf[pos + 1] == FLAG:
                pos += 1
            if pos + 3 > n:
                break
            if buf[pos + 1] & 0xF0 != 0xA0:
                nxt = buf.find(FLAG, pos + 1)
                stop = n if nxt < 0 else nxt
                out.append(FrameError("HDLC frame format type is not 0xA", bytes(buf[pos:stop])))
                pos = stop
                continue
            length = ((buf[pos + 1] & 0x07) << 8) | buf[pos + 2]
            if length < 7:
                nxt = buf.find(FLAG, pos + 1)
                stop = n if nxt < 0 else nxt
                out.append(
                    FrameError(f"HDLC length field {length} is too short", bytes(buf[pos:stop]))
                )
                pos = stop
                continue
            end = pos + 1 + length
            if end >= n:
                break
            if buf[end] != FLAG:
                nxt = buf.find(FLAG, pos + 1)
                stop = n if nxt < 0 else nxt
                out.append(FrameError("HDLC frame without closing flag", bytes(buf[pos:stop])))
                pos = stop
                continue
            body = bytes(buf[pos + 1 : end])
            try:
                out.append(parse_frame(body))
            except HdlcError as exc:
                out.append(FrameError(str(exc), body))
            # Keep the closing flag: it may double as the next frame's opening flag.
            pos = end
        del buf[:pos]
        return out


# -- parameter negotiation -------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LinkParameters:
    """From the point of view of the station that sends them."""

    max_info_tx: int = DEFAULT_MAX_INFO
    max_info_rx: int = DEFAULT_MAX_INFO
    window_tx: int = 1
    window_rx: int = 1

    def encode(self) -> bytes:
        body = bytearray()
        for ident, value, size in (
            (PARAM_MAX_INFO_TX, self.max_info_tx, 1 if self.max_info_tx < 0x100 else 2),
            (PARAM_MAX_INFO_RX, self.max_info_rx, 1 if self.max_info_rx < 0x100 else 2),
            (PARAM_WINDOW_TX, self.window_tx, 4),
            (PARAM_WINDOW_RX, self.window_rx, 4),
        ):
            body += bytes((ident, size)) + value.to_bytes(size, "big")
        return b"\x81\x80" + bytes((len(body),)) + bytes(body)


def decode_parameters(info: bytes) -> LinkParameters:
    """Parameters of an SNRM or UA information field; absent ones take the defaults."""
    if not info:
        return LinkParameters()
    if len(info) < 3 or info[0] != 0x81 or info[1] != 0x80:
        raise HdlcError("HDLC parameter field is not format 0x81 group 0x80")
    if info[2] != len(info) - 3:
        raise HdlcError("HDLC parameter group length mismatch")
    values: dict[int, int] = {}
    pos = 3
    while pos < len(info):
        if pos + 2 > len(info):
            raise HdlcError("truncated HDLC parameter")
        ident, size = info[pos], info[pos + 1]
        if size not in (1, 2, 4) or pos + 2 + size > len(info):
            raise HdlcError(f"bad HDLC parameter 0x{ident:02x} of size {size}")
        values[ident] = int.from_bytes(info[pos + 2 : pos + 2 + size], "big")
        pos += 2 + size
    unknown = set(values) - {PARAM_MAX_INFO_TX, PARAM_MAX_INFO_RX, PARAM_WINDOW_TX, PARAM_WINDOW_RX}
    if unknown:
        raise HdlcError(f"unknown HDLC parameter(s) {sorted(unknown)}")
    return LinkParameters(
        values.get(PARAM_MAX_INFO_TX, DEFAULT_MAX_INFO),
        values.get(PARAM_MAX_INFO_RX, DEFAULT_MAX_INFO),
        values.get(PARAM_WINDOW_TX, 1),
        values.get(PARAM_WINDOW_RX, 1),
    )


# -- the server's end of one link ------------------------------------------------------
class LinkState(Enum):
    DISCONNECTED = "NDM"
    CONNECTED = "NRM"


@dataclass(frozen=True, slots=True)
class LinkEstablished:
    """SNRM accepted (also when it resets a link that was up)."""

    parameters: LinkParameters  # the server's own view: what it sends and receives


@dataclass(frozen=True, slots=True)
class LinkReleased:
    """DISC accepted: any association on this link is gone."""


@dataclass(frozen=True, slots=True)
class ApduReceived:
    apdu: bytes


@dataclass(frozen=True, slots=True)
class LinkError:
    """A frame that was valid HDLC but wrong for the link's state; it was dropped."""

    reason: str


LinkEvent = LinkEstablished | LinkReleased | ApduReceived | LinkError


@dataclass(slots=True)
class HdlcLink:
    """The server (secondary station) of one client/server address pair, window size 1.

    ``receive(frame)`` returns the frames to send and the events; ``send_apdu`` queues a
    response (segmented to the negotiated size; further segments go out on RR).
    """

    server: bytes  # encoded address octets as the client sent them
    client: bytes
    max_info: int = 512  # what this server can send and receive per frame
    state: LinkState = LinkState.DISCONNECTED
    max_info_tx: int = DEFAULT_MAX_INFO
    max_info_rx: int = DEFAULT_MAX_INFO
    vs: int = 0
    vr: int = 0
    _rx: bytearray = field(default_factory=bytearray)
    _tx: list[bytes] = field(default_factory=list)
    _last: bytes | None = None

    def _frame(self, control: int, info: bytes = b"", segmented: bool = False) -> bytes:
        return Frame(self.client, self.server, control, info, segmented).to_bytes()

    def receive(self, frame: Frame) -> tuple[list[bytes], list[LinkEvent]]:
        kind = frame.kind
        if kind == SNRM:
            return self._on_snrm(frame)
        if kind == DISC:
            if self.state is LinkState.DISCONNECTED:
                return [self._frame(DM | PF)], []
            self._reset(LinkState.DISCONNECTED)
            return [self._frame(UA | PF)], [LinkReleased()]
        if self.state is LinkState.DISCONNECTED:
            if kind == UI:
                return [], [LinkError("UI frame ignored")]
            return [self._frame(DM | PF)], [LinkError("frame while the link is disconnected")]
        if frame.is_information:
            return self._on_information(frame)
        if kind == RR:
            return self._on_rr(frame)
        if kind == RNR:
            return [], []
        return [], [LinkError(f"unsupported HDLC control 0x{frame.control:02x}")]

    def _reset(self, state: LinkState) -> None:
        self.state = state
        self.vs = self.vr = 0
        self._rx.clear()
        self._tx.clear()
        self._last = None

    def _on_snrm(self, frame: Frame) -> tuple[list[bytes], list[LinkEvent]]:
        try:
            proposed = decode_parameters(frame.info)
        except HdlcError as exc:
            return [self._frame(DM | PF)], [LinkError(f"SNRM refused: {exc}")]
        self._reset(LinkState.CONNECTED)
        # The client's receive size bounds what we send, and the other way round.
        self.max_info_tx = max(32, min(proposed.max_info_rx, self.max_info))
        self.max_info_rx = max(32, min(proposed.max_info_tx, self.max_info))
        ours = LinkParameters(self.max_info_tx, self.max_info_rx, 1, 1)
        return [self._frame(UA | PF, ours.encode())], [LinkEstablished(ours)]

    def _on_information(self, frame: Frame) -> tuple[list[bytes], list[LinkEvent]]:
        if frame.ns != self.vr:
            if frame.ns == (self.vr - 1) & 7 and self._last is not None:
                # The client repeats a frame: our answer to it was lost.
                return [self._last], [LinkError("repeated I-frame: last frame resent")]
            return [], [LinkError(f"I-frame N(S)={frame.ns}, expected {self.vr}")]
        if len(frame.info) > self.max_info_rx:
            return [self._frame(FRMR | PF)], [LinkError("I-frame over the negotiated size")]
        self.vr = (self.vr + 1) & 7
        self._tx.clear()
        self._rx += frame.info
        if frame.segmented:
            return [self._send_control(rr_control(self.vr))], []
        data = bytes(self._rx)
        self._rx.clear()
        if not data.startswith(LLC_REQUEST):
            return [], [LinkError("information without the LLC request header")]
        return [], [ApduReceived(data[3:])]

    def _on_rr(self, frame: Frame) -> tuple[list[bytes], list[LinkEvent]]:
        if frame.nr == (self.vs - 1) & 7 and self._last is not None:
            return [self._last], []  # our last frame did not arrive
        if self._tx:
            return [self._next_segment()], []
        return [self._send_control(rr_control(self.vr))], []

    def _send_control(self, control: int) -> bytes:
        data = self._frame(control)
        self._last = data
        return data

    def send_apdu(self, apdu: bytes) -> list[bytes]:
        """Frames to send now for an APDU (the first segment; the rest wait for RR)."""
        data = LLC_RESPONSE + apdu
        size = self.max_info_tx
        self._tx = [data[i : i + size] for i in range(0, len(data), size)]
        return [self._next_segment()]

    def _next_segment(self) -> bytes:
        chunk = self._tx.pop(0)
        data = self._frame(i_control(self.vs, self.vr), chunk, segmented=bool(self._tx))
        self.vs = (self.vs + 1) & 7
        self._last = data
        return data
