"""xDLMS APDUs of IEC 62056-5-3 for logical name referencing: InitiateRequest/Response,
ConfirmedServiceError, GET, SET, ACTION and ExceptionResponse, with A-XDR encodings.

Every ``from_bytes``/``decode_*`` raises :class:`XdlmsError` (a ``ValueError``) on
malformed input and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

from drivers.sim.axdr import AxdrError, Data, Encoded, decode, decode_length, encode, encode_length

INITIATE_REQUEST = 0x01
INITIATE_RESPONSE = 0x08
CONFIRMED_SERVICE_ERROR = 0x0E
GET_REQUEST = 0xC0
SET_REQUEST = 0xC1
ACTION_REQUEST = 0xC3
GET_RESPONSE = 0xC4
SET_RESPONSE = 0xC5
ACTION_RESPONSE = 0xC7
EXCEPTION_RESPONSE = 0xD8
DLMS_VERSION = 6
VAA_NAME_LN = 0x0007


class XdlmsError(ValueError):
    """Malformed xDLMS APDU."""


class Conformance(IntFlag):
    """The conformance block; the standard's bit n is ``1 << (23 - n)``."""

    GENERAL_PROTECTION = 1 << 22
    GENERAL_BLOCK_TRANSFER = 1 << 21
    READ = 1 << 20
    WRITE = 1 << 19
    UNCONFIRMED_WRITE = 1 << 18
    ATTRIBUTE0_SUPPORTED_WITH_SET = 1 << 15
    PRIORITY_MGMT_SUPPORTED = 1 << 14
    ATTRIBUTE0_SUPPORTED_WITH_GET = 1 << 13
    BLOCK_TRANSFER_WITH_GET_OR_READ = 1 << 12
    BLOCK_TRANSFER_WITH_SET_OR_WRITE = 1 << 11
    BLOCK_TRANSFER_WITH_ACTION = 1 << 10
    MULTIPLE_REFERENCES = 1 << 9
    INFORMATION_REPORT = 1 << 8
    DATA_NOTIFICATION = 1 << 7
    ACCESS = 1 << 6
    PARAMETERIZED_ACCESS = 1 << 5
    GET = 1 << 4
    SET = 1 << 3
    SELECTIVE_ACCESS = 1 << 2
    EVENT_NOTIFICATION = 1 << 1
    ACTION = 1 << 0


class DataAccessResult(IntEnum):
    SUCCESS = 0
    HARDWARE_FAULT = 1
    TEMPORARY_FAILURE = 2
    READ_WRITE_DENIED = 3
    OBJECT_UNDEFINED = 4
    OBJECT_CLASS_INCONSISTENT = 9
    OBJECT_UNAVAILABLE = 11
    TYPE_UNMATCHED = 12
    SCOPE_OF_ACCESS_VIOLATED = 13
    DATA_BLOCK_UNAVAILABLE = 14
    LONG_GET_ABORTED = 15
    NO_LONG_GET_IN_PROGRESS = 16
    LONG_SET_ABORTED = 17
    NO_LONG_SET_IN_PROGRESS = 18
    DATA_BLOCK_NUMBER_INVALID = 19
    OTHER_REASON = 250


# Action-Result shares the codes above (long-action-* in place of long-get-*).
ActionResult = DataAccessResult


class StateError(IntEnum):
    SERVICE_NOT_ALLOWED = 1
    SERVICE_UNKNOWN = 2


class ServiceError(IntEnum):
    OPERATION_NOT_POSSIBLE = 1
    SERVICE_NOT_SUPPORTED = 2
    OTHER_REASON = 3
    PDU_TOO_LONG = 4
    DECIPHERING_ERROR = 5
    INVOCATION_COUNTER_ERROR = 6


class ConfirmedService(IntEnum):
    INITIATE_ERROR = 1
    GET_STATUS = 2
    READ = 5
    WRITE = 6


class ServiceErrorKind(IntEnum):
    APPLICATION_REFERENCE = 0
    HARDWARE_RESOURCE = 1
    VDE_STATE_ERROR = 2
    SERVICE = 3
    DEFINITION = 4
    ACCESS = 5
    INITIATE = 6


class InitiateErrorValue(IntEnum):
    OTHER = 0
    DLMS_VERSION_TOO_LOW = 1
    INCOMPATIBLE_CONFORMANCE = 2
    PDU_SIZE_TOO_SHORT = 3
    REFUSED_BY_THE_VDE_HANDLER = 4


def _need(buf: bytes, pos: int, n: int, what: str) -> None:
    if pos + n > len(buf):
        raise XdlmsError(f"truncated {what}")


def _u8(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    _need(buf, pos, 1, what)
    return buf[pos], pos + 1


def _u32(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    _need(buf, pos, 4, what)
    return struct.unpack_from(">I", buf, pos)[0], pos + 4


def _data(buf: bytes, pos: int) -> tuple[Data, int]:
    try:
        return decode(buf, pos)
    except AxdrError as exc:
        raise XdlmsError(f"bad data: {exc}") from exc


def _octets(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    try:
        n, pos = decode_length(buf, pos)
    except AxdrError as exc:
        raise XdlmsError(f"bad length of {what}") from exc
    _need(buf, pos, n, what)
    return bytes(buf[pos : pos + n]), pos + n


def _end(buf: bytes, pos: int, what: str) -> None:
    if pos != len(buf):
        raise XdlmsError(f"{len(buf) - pos} octets after {what}")


# -- InitiateRequest / InitiateResponse / ConfirmedServiceError ------------------------
@dataclass(frozen=True, slots=True)
class InitiateRequest:
    conformance: Conformance
    client_max_receive_pdu_size: int
    dlms_version: int = DLMS_VERSION
    dedicated_key: bytes | None = None
    response_allowed: bool = True
    proposed_quality_of_service: int | None = None

    def to_bytes(self) -> bytes:
        out = bytearray((INITIATE_REQUEST,))
        if self.dedicated_key is None:
            out.append(0)
        else:
            out += b"\x01" + encode_length(len(self.dedicated_key)) + self.dedicated_key
        out.append(0 if self.response_allowed else 1)
        if not self.response_allowed:
            out.append(0)
        if self.proposed_quality_of_service is None:
            out.append(0)
        else:
            out += bytes((1, self.proposed_quality_of_service))
        out.append(self.dlms_version)
        out += b"\x5f\x1f\x04\x00" + int(self.conformance).to_bytes(3, "big")
        out += struct.pack(">H", self.client_max_receive_pdu_size)
        return bytes(out)

    @classmethod
    def from_bytes(cls, buf: bytes) -> InitiateRequest:
        tag, pos = _u8(buf, 0, "InitiateRequest")
        if tag != INITIATE_REQUEST:
            raise XdlmsError(f"0x{tag:02x} is not an InitiateRequest")
        key = None
        present, pos = _u8(buf, pos, "dedicated-key")
        if present:
            key, pos = _octets(buf, pos, "dedicated-key")
        allowed = True
        present, pos = _u8(buf, pos, "response-allowed")
        if present:
            value, pos = _u8(buf, pos, "response-allowed")
            allowed = bool(value)
        qos = None
        present, pos = _u8(buf, pos, "quality-of-service")
        if present:
            qos, pos = _u8(buf, pos, "quality-of-service")
        version, pos = _u8(buf, pos, "dlms-version-number")
        _need(buf, pos, 9, "conformance and max PDU size")
        if buf[pos : pos + 4] != b"\x5f\x1f\x04\x00":
            raise XdlmsError("conformance block tag is not 5F1F 04 00")
        conformance = Conformance(int.from_bytes(buf[pos + 4 : pos + 7], "big"))
        size = struct.unpack_from(">H", buf, pos + 7)[0]
        _end(buf, pos + 9, "InitiateRequest")
        return cls(conformance, size, version, key, allowed, qos)


@dataclass(frozen=True, slots=True)
class InitiateResponse:
    conformance: Conformance
    server_max_receive_pdu_size: int
    dlms_version: int = DLMS_VERSION
    negotiated_quality_of_service: int | None = None

    def to_bytes(self) -> bytes:
        qos = (
            b"\x00"
            if self.negotiated_quality_of_service is None
            else bytes((1, self.negotiated_quality_of_service))
        )
        return (
            bytes((INITIATE_RESPONSE,))
            + qos
            + bytes((self.dlms_version,))
            + b"\x5f\x1f\x04\x00"
            + int(self.conformance).to_bytes(3, "big")
            + struct.pack(">HH", self.server_max_receive_pdu_size, VAA_NAME_LN)
        )

    @classmethod
    def from_bytes(cls, buf: bytes) -> InitiateResponse:
        tag, pos = _u8(buf, 0, "InitiateResponse")
        if tag != INITIATE_RESPONSE:
            raise XdlmsError(f"0x{tag:02x} is not an InitiateResponse")
        qos = None
        present, pos = _u8(buf, pos, "quality-of-service")
        if present:
            qos, pos = _u8(buf, pos, "quality-of-service")
        version, pos = _u8(buf, pos, "dlms-version-number")
        _need(buf, pos, 11, "InitiateResponse")
        if buf[pos : pos + 4] != b"\x5f\x1f\x04\x00":
            raise XdlmsError("conformance block tag is not 5F1F 04 00")
        conformance = Conformance(int.from_bytes(buf[pos + 4 : pos + 7], "big"))
        size, _vaa = struct.unpack_from(">HH", buf, pos + 7)
        _end(buf, pos + 11, "InitiateResponse")
        return cls(conformance, size, version, qos)


@dataclass(frozen=True, slots=True)
class ConfirmedServiceErrorPdu:
    service: ConfirmedService
    kind: ServiceErrorKind
    value: int

    def to_bytes(self) -> bytes:
        return bytes((CONFIRMED_SERVICE_ERROR, self.service, self.kind, self.value))

    @classmethod
    def from_bytes(cls, buf: bytes) -> ConfirmedServiceErrorPdu:
        if len(buf) != 4 or buf[0] != CONFIRMED_SERVICE_ERROR:
            raise XdlmsError("not a ConfirmedServiceError")
        try:
            return cls(ConfirmedService(buf[1]), ServiceErrorKind(buf[2]), buf[3])
        except ValueError as exc:
            raise XdlmsError(str(exc)) from exc


# -- descriptors -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AttributeDescriptor:
    class_id: int
    instance: bytes  # the 6-octet logical name
    attribute: int

    def to_bytes(self) -> bytes:
        return struct.pack(">H6sb", self.class_id, self.instance, self.attribute)

    @classmethod
    def read(cls, buf: bytes, pos: int) -> tuple[AttributeDescriptor, int]:
        _need(buf, pos, 9, "cosem-attribute-descriptor")
        class_id, instance, attribute = struct.unpack_from(">H6sb", buf, pos)
        return cls(class_id, instance, attribute), pos + 9


@dataclass(frozen=True, slots=True)
class MethodDescriptor:
    class_id: int
    instance: bytes
    method: int

    def to_bytes(self) -> bytes:
        return struct.pack(">H6sb", self.class_id, self.instance, self.method)

    @classmethod
    def read(cls, buf: bytes, pos: int) -> tuple[MethodDescriptor, int]:
        _need(buf, pos, 9, "cosem-method-descriptor")
        class_id, instance, method = struct.unpack_from(">H6sb", buf, pos)
        return cls(class_id, instance, method), pos + 9


@dataclass(frozen=True, slots=True)
class AccessSelection:
    selector: int
    parameters: Data


def _write_access(out: bytearray, access: AccessSelection | None) -> None:
    if access is None:
        out.append(0)
    else:
        out += bytes((1, access.selector)) + encode(access.parameters)


def _read_access(buf: bytes, pos: int) -> tuple[AccessSelection | None, int]:
    present, pos = _u8(buf, pos, "access-selection flag")
    if not present:
        return None, pos
    selector, pos = _u8(buf, pos, "access-selector")
    params, pos = _data(buf, pos)
    return AccessSelection(selector, params), pos


def _read_count(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    try:
        return decode_length(buf, pos)
    except AxdrError as exc:
        raise XdlmsError(f"bad count of {what}") from exc


# -- GET -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class GetRequestNormal:
    invoke_id: int
    attribute: AttributeDescriptor
    access: AccessSelection | None = None

    def to_bytes(self) -> bytes:
        out = bytearray((GET_REQUEST, 1, self.invoke_id)) + self.attribute.to_bytes()
        _write_access(out, self.access)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class GetRequestNext:
    invoke_id: int
    block_number: int

    def to_bytes(self) -> bytes:
        return struct.pack(">BBBI", GET_REQUEST, 2, self.invoke_id, self.block_number)


@dataclass(frozen=True, slots=True)
class GetRequestWithList:
    invoke_id: int
    items: tuple[tuple[AttributeDescriptor, AccessSelection | None], ...]

    def to_bytes(self) -> bytes:
        out = bytearray((GET_REQUEST, 3, self.invoke_id)) + encode_length(len(self.items))
        for desc, access in self.items:
            out += desc.to_bytes()
            _write_access(out, access)
        return bytes(out)


# A Get-Data-Result: the value (possibly pre-encoded), or a DataAccessResult code.
GetResult = Data | Encoded | DataAccessResult


def _write_result(out: bytearray, result: GetResult) -> None:
    if isinstance(result, DataAccessResult):
        out += bytes((1, result))
    else:
        out.append(0)
        out += encode(result)


def _read_result(buf: bytes, pos: int) -> tuple[GetResult, int]:
    choice, pos = _u8(buf, pos, "Get-Data-Result")
    if choice == 0:
        return _data(buf, pos)
    if choice == 1:
        code, pos = _u8(buf, pos, "data-access-result")
        return _dar(code), pos
    raise XdlmsError(f"Get-Data-Result choice {choice}")


def _dar(code: int) -> DataAccessResult:
    try:
        return DataAccessResult(code)
    except ValueError as exc:
        raise XdlmsError(f"unknown data-access-result {code}") from exc


@dataclass(frozen=True, slots=True)
class GetResponseNormal:
    invoke_id: int
    result: GetResult

    def to_bytes(self) -> bytes:
        out = bytearray((GET_RESPONSE, 1, self.invoke_id))
        _write_result(out, self.result)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class GetResponseWithDataBlock:
    invoke_id: int
    last_block: bool
    block_number: int
    raw: bytes | DataAccessResult

    def to_bytes(self) -> bytes:
        out = bytearray(
            struct.pack(
                ">BBBBI", GET_RESPONSE, 2, self.invoke_id, self.last_block, self.block_number
            )
        )
        if isinstance(self.raw, DataAccessResult):
            out += bytes((1, self.raw))
        else:
            out += b"\x00" + encode_length(len(self.raw)) + self.raw
        return bytes(out)


@dataclass(frozen=True, slots=True)
class GetResponseWithList:
    invoke_id: int
    results: tuple[GetResult, ...]

    def to_bytes(self) -> bytes:
        out = bytearray((GET_RESPONSE, 3, self.invoke_id)) + encode_length(len(self.results))
        for result in self.results:
            _write_result(out, result)
        return bytes(out)


# -- SET -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SetRequestNormal:
    invoke_id: int
    attribute: AttributeDescriptor
    value: Data
    access: AccessSelection | None = None

    def to_bytes(self) -> bytes:
        out = bytearray((SET_REQUEST, 1, self.invoke_id)) + self.attribute.to_bytes()
        _write_access(out, self.access)
        return bytes(out + encode(self.value))


@dataclass(frozen=True, slots=True)
class SetRequestWithFirstDataBlock:
    invoke_id: int
    attribute: AttributeDescriptor
    last_block: bool
    block_number: int
    raw: bytes
    access: AccessSelection | None = None

    def to_bytes(self) -> bytes:
        out = bytearray((SET_REQUEST, 2, self.invoke_id)) + self.attribute.to_bytes()
        _write_access(out, self.access)
        out += struct.pack(">BI", self.last_block, self.block_number)
        return bytes(out + encode_length(len(self.raw)) + self.raw)


@dataclass(frozen=True, slots=True)
class SetRequestWithDataBlock:
    invoke_id: int
    last_block: bool
    block_number: int
    raw: bytes

    def to_bytes(self) -> bytes:
        head = struct.pack(
            ">BBBBI", SET_REQUEST, 3, self.invoke_id, self.last_block, self.block_number
        )
        return head + encode_length(len(self.raw)) + self.raw


@dataclass(frozen=True, slots=True)
class SetRequestWithList:
    invoke_id: int
    items: tuple[tuple[AttributeDescriptor, AccessSelection | None], ...]
    values: tuple[Data, ...]

    def to_bytes(self) -> bytes:
        out = bytearray((SET_REQUEST, 4, self.invoke_id)) + encode_length(len(self.items))
        for desc, access in self.items:
            out += desc.to_bytes()
            _write_access(out, access)
        out += encode_length(len(self.values))
        for value in self.values:
            out += encode(value)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class SetResponseNormal:
    invoke_id: int
    result: DataAccessResult

    def to_bytes(self) -> bytes:
        return bytes((SET_RESPONSE, 1, self.invoke_id, self.result))


@dataclass(frozen=True, slots=True)
class SetResponseDataBlock:
    invoke_id: int
    block_number: int

    def to_bytes(self) -> bytes:
        return struct.pack(">BBBI", SET_RESPONSE, 2, self.invoke_id, self.block_number)


@dataclass(frozen=True, slots=True)
class SetResponseLastDataBlock:
    invoke_id: int
    result: DataAccessResult
    block_number: int

    def to_bytes(self) -> bytes:
        return struct.pack(
            ">BBBBI", SET_RESPONSE, 3, self.invoke_id, self.result, self.block_number
        )


@dataclass(frozen=True, slots=True)
class SetResponseWithList:
    invoke_id: int
    results: tuple[DataAccessResult, ...]

    def to_bytes(self) -> bytes:
        head = bytes((SET_RESPONSE, 5, self.invoke_id)) + encode_length(len(self.results))
        return head + bytes(self.results)


# -- ACTION ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ActionRequestNormal:
    invoke_id: int
    method: MethodDescriptor
    parameters: Data | None = None

    def to_bytes(self) -> bytes:
        out = bytearray((ACTION_REQUEST, 1, self.invoke_id)) + self.method.to_bytes()
        if self.parameters is None:
            out.append(0)
        else:
            out += b"\x01" + encode(self.parameters)
        return bytes(out)


@dataclass(frozen=True, slots=True)
class ActionResponseNormal:
    invoke_id: int
    result: ActionResult
    return_parameters: GetResult | None = None

    def to_bytes(self) -> bytes:
        out = bytearray((ACTION_RESPONSE, 1, self.invoke_id, self.result))
        if self.return_parameters is None:
            out.append(0)
        else:
            out.append(1)
            _write_result(out, self.return_parameters)
        return bytes(out)


# -- ExceptionResponse -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    state_error: StateError
    service_error: ServiceError
    invocation_counter: int | None = None  # with INVOCATION_COUNTER_ERROR: the expected one

    def to_bytes(self) -> bytes:
        out = bytes((EXCEPTION_RESPONSE, self.state_error, self.service_error))
        if self.service_error == ServiceError.INVOCATION_COUNTER_ERROR:
            out += struct.pack(">I", self.invocation_counter or 0)
        return out


Request = (
    GetRequestNormal
    | GetRequestNext
    | GetRequestWithList
    | SetRequestNormal
    | SetRequestWithFirstDataBlock
    | SetRequestWithDataBlock
    | SetRequestWithList
    | ActionRequestNormal
)
Response = (
    GetResponseNormal
    | GetResponseWithDataBlock
    | GetResponseWithList
    | SetResponseNormal
    | SetResponseDataBlock
    | SetResponseLastDataBlock
    | SetResponseWithList
    | ActionResponseNormal
    | ExceptionResponse
)


@dataclass(frozen=True, slots=True)
class UnsupportedRequest:
    """A well-formed request of a kind this server does not implement."""

    tag: int
    choice: int
    invoke_id: int = field(default=0)


def decode_request(buf: bytes) -> Request | UnsupportedRequest:
    if len(buf) < 3:
        raise XdlmsError("xDLMS request shorter than 3 octets")
    tag, choice, invoke = buf[0], buf[1], buf[2]
    pos = 3
    if tag == GET_REQUEST:
        if choice == 1:
            desc, pos = AttributeDescriptor.read(buf, pos)
            access, pos = _read_access(buf, pos)
            _end(buf, pos, "get-request-normal")
            return GetRequestNormal(invoke, desc, access)
        if choice == 2:
            block, pos = _u32(buf, pos, "block-number")
            _end(buf, pos, "get-request-next")
            return GetRequestNext(invoke, block)
        if choice == 3:
            count, pos = _read_count(buf, pos, "attribute descriptors")
            items = []
            for _ in range(count):
                desc, pos = AttributeDescriptor.read(buf, pos)
                access, pos = _read_access(buf, pos)
                items.append((desc, access))
            _end(buf, pos, "get-request-with-list")
            return GetRequestWithList(invoke, tuple(items))
    elif tag == SET_REQUEST:
        if choice in (1, 2):
            desc, pos = AttributeDescriptor.read(buf, pos)
            access, pos = _read_access(buf, pos)
            if choice == 1:
                value, pos = _data(buf, pos)
                _end(buf, pos, "set-request-normal")
                return SetRequestNormal(invoke, desc, value, access)
            last, pos = _u8(buf, pos, "last-block")
            block, pos = _u32(buf, pos, "block-number")
            raw, pos = _octets(buf, pos, "raw-data")
            _end(buf, pos, "set-request-with-first-datablock")
            return SetRequestWithFirstDataBlock(invoke, desc, bool(last), block, raw, access)
        if choice == 3:
            last, pos = _u8(buf, pos, "last-block")
            block, pos = _u32(buf, pos, "block-number")
            raw, pos = _octets(buf, pos, "raw-data")
            _end(buf, pos, "set-request-with-datablock")
            return SetRequestWithDataBlock(invoke, bool(last), block, raw)
        if choice == 4:
            count, pos = _read_count(buf, pos, "attribute descriptors")
            items = []
            for _ in range(count):
                desc, pos = AttributeDescriptor.read(buf, pos)
                access, pos = _read_access(buf, pos)
                items.append((desc, access))
            count, pos = _read_count(buf, pos, "values")
            values = []
            for _ in range(count):
                value, pos = _data(buf, pos)
                values.append(value)
            _end(buf, pos, "set-request-with-list")
            if len(values) != len(items):
                raise XdlmsError("set-request-with-list: value count differs from descriptors")
            return SetRequestWithList(invoke, tuple(items), tuple(values))
    elif tag == ACTION_REQUEST:
        if choice == 1:
            method, pos = MethodDescriptor.read(buf, pos)
            present, pos = _u8(buf, pos, "method-invocation-parameters flag")
            params = None
            if present:
                params, pos = _data(buf, pos)
            _end(buf, pos, "action-request-normal")
            return ActionRequestNormal(invoke, method, params)
    else:
        raise XdlmsError(f"0x{tag:02x} is not a GET, SET or ACTION request")
    return UnsupportedRequest(tag, choice, invoke)


def decode_response(buf: bytes) -> Response:
    """The responses this server sends, taken apart again (for tests and tools)."""
    if len(buf) >= 3 and buf[0] == EXCEPTION_RESPONSE:
        try:
            state, service = StateError(buf[1]), ServiceError(buf[2])
        except ValueError as exc:
            raise XdlmsError(str(exc)) from exc
        ic = None
        if service == ServiceError.INVOCATION_COUNTER_ERROR:
            ic, pos = _u32(buf, 3, "invocation counter")
            _end(buf, pos, "exception-response")
        else:
            _end(buf, 3, "exception-response")
        return ExceptionResponse(state, service, ic)
    if len(buf) < 3:
        raise XdlmsError("xDLMS response shorter than 3 octets")
    tag, choice, invoke = buf[0], buf[1], buf[2]
    pos = 3
    if tag == GET_RESPONSE:
        if choice == 1:
            result, pos = _read_result(buf, pos)
            _end(buf, pos, "get-response-normal")
            return GetResponseNormal(invoke, result)
        if choice == 2:
            last, pos = _u8(buf, pos, "last-block")
            block, pos = _u32(buf, pos, "block-number")
            kind, pos = _u8(buf, pos, "DataBlock-G result")
            if kind == 0:
                raw, pos = _octets(buf, pos, "raw-data")
                _end(buf, pos, "get-response-with-datablock")
                return GetResponseWithDataBlock(invoke, bool(last), block, raw)
            code, pos = _u8(buf, pos, "data-access-result")
            _end(buf, pos, "get-response-with-datablock")
            return GetResponseWithDataBlock(invoke, bool(last), block, _dar(code))
        if choice == 3:
            count, pos = _read_count(buf, pos, "results")
            results = []
            for _ in range(count):
                result, pos = _read_result(buf, pos)
                results.append(result)
            _end(buf, pos, "get-response-with-list")
            return GetResponseWithList(invoke, tuple(results))
    elif tag == SET_RESPONSE:
        if choice == 1:
            code, pos = _u8(buf, pos, "result")
            _end(buf, pos, "set-response-normal")
            return SetResponseNormal(invoke, _dar(code))
        if choice == 2:
            block, pos = _u32(buf, pos, "block-number")
            _end(buf, pos, "set-response-datablock")
            return SetResponseDataBlock(invoke, block)
        if choice == 3:
            code, pos = _u8(buf, pos, "result")
            block, pos = _u32(buf, pos, "block-number")
            _end(buf, pos, "set-response-last-datablock")
            return SetResponseLastDataBlock(invoke, _dar(code), block)
        if choice == 5:
            count, pos = _read_count(buf, pos, "results")
            _need(buf, pos, count, "results")
            codes = tuple(_dar(c) for c in buf[pos : pos + count])
            _end(buf, pos + count, "set-response-with-list")
            return SetResponseWithList(invoke, codes)
    elif tag == ACTION_RESPONSE and choice == 1:
        code, pos = _u8(buf, pos, "action-result")
        present, pos = _u8(buf, pos, "return-parameters flag")
        ret = None
        if present:
            ret, pos = _read_result(buf, pos)
        _end(buf, pos, "action-response-normal")
        return ActionResponseNormal(invoke, _dar(code), ret)
    raise XdlmsError(f"response 0x{tag:02x}/{choice} not understood")
