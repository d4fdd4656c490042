"""ACSE APDUs of IEC 62056-5-3 (ISO/IEC 8650-1 as profiled by DLMS): AARQ, AARE, RLRQ,
RLRE, with the DLMS application context and authentication mechanism names."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from drivers.sim.ber import BerError, decode_oid, encode_oid, read_all, read_single, tlv

DLMS_UA = (2, 16, 756, 5, 8)

AARQ_TAG = 0x60
AARE_TAG = 0x61
RLRQ_TAG = 0x62
RLRE_TAG = 0x63


class AcseError(ValueError):
    """Malformed ACSE APDU."""


class ApplicationContext(IntEnum):
    LN = 1
    SN = 2
    LN_CIPHERED = 3
    SN_CIPHERED = 4


class Mechanism(IntEnum):
    NONE = 0
    LOW = 1
    HIGH = 2
    HIGH_MD5 = 3
    HIGH_SHA1 = 4
    HIGH_GMAC = 5
    HIGH_SHA256 = 6
    HIGH_ECDSA = 7


class AssociationResult(IntEnum):
    ACCEPTED = 0
    REJECTED_PERMANENT = 1
    REJECTED_TRANSIENT = 2


class ServiceUserDiagnostic(IntEnum):
    NULL = 0
    NO_REASON_GIVEN = 1
    APPLICATION_CONTEXT_NAME_NOT_SUPPORTED = 2
    CALLING_AP_TITLE_NOT_RECOGNIZED = 3
    AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED = 11
    AUTHENTICATION_MECHANISM_NAME_REQUIRED = 12
    AUTHENTICATION_FAILURE = 13
    AUTHENTICATION_REQUIRED = 14


def context_oid(context: ApplicationContext) -> tuple[int, ...]:
    return (*DLMS_UA, 1, int(context))


def mechanism_oid(mechanism: Mechanism) -> tuple[int, ...]:
    return (*DLMS_UA, 2, int(mechanism))


def _context_from(raw: bytes) -> ApplicationContext | int:
    """The DLMS context, or -1 for any other OID."""
    oid = decode_oid(raw)
    if oid[:-1] == (*DLMS_UA, 1) and oid[-1] in ApplicationContext._value2member_map_:
        return ApplicationContext(oid[-1])
    return -1


def _user_information(xdlms: bytes) -> bytes:
    return tlv(0xBE, tlv(0x04, xdlms))


def _read_user_information(value: bytes) -> bytes:
    inner = read_single(value)
    if inner.tag != 0x04:
        raise AcseError("user-information is not an OCTET STRING")
    return inner.value


def _ap_title(value: bytes) -> bytes:
    inner = read_single(value)
    if inner.tag != 0x04:
        raise AcseError("AP title is not an OCTET STRING")
    return inner.value


@dataclass(frozen=True, slots=True)
class Aarq:
    application_context: ApplicationContext | int
    calling_ap_title: bytes | None = None
    mechanism: Mechanism | int | None = None  # None: no mechanism-name
    calling_authentication_value: bytes | None = None
    authentication_required: bool = False  # sender-acse-requirements bit 0
    user_information: bytes | None = None  # the xDLMS APDU (InitiateRequest or ciphered)

    def to_bytes(self) -> bytes:
        body = tlv(
            0xA1, tlv(0x06, encode_oid(context_oid(ApplicationContext(self.application_context))))
        )
        if self.calling_ap_title is not None:
            body += tlv(0xA6, tlv(0x04, self.calling_ap_title))
        if self.authentication_required:
            body += tlv(0x8A, b"\x07\x80")
        if self.mechanism is not None:
            body += tlv(0x8B, encode_oid(mechanism_oid(Mechanism(self.mechanism))))
        if self.calling_authentication_value is not None:
            body += tlv(0xAC, tlv(0x80, self.calling_authentication_value))
        if self.user_information is not None:
            body += _user_information(self.user_information)
        return tlv(AARQ_TAG, body)

    @classmethod
    def from_bytes(cls, apdu: bytes) -> Aarq:
        try:
            outer = read_single(apdu)
            if outer.tag != AARQ_TAG:
                raise AcseError(f"0x{outer.tag:02x} is not an AARQ")
            context: ApplicationContext | int | None = None
            title = mechanism = auth_value = user = None
            required = False
            for item in read_all(outer.value):
                if item.tag == 0xA1:
                    oid = read_single(item.value)
                    if oid.tag != 0x06:
                        raise AcseError("application-context-name is not an OID")
                    context = _context_from(oid.value)
                elif item.tag == 0xA6:
                    title = _ap_title(item.value)
                elif item.tag == 0x8A:
                    required = len(item.value) >= 2 and bool(item.value[1] & 0x80)
                elif item.tag == 0x8B:
                    oid_arcs = decode_oid(item.value)
                    mech = oid_arcs[-1]
                    known = oid_arcs[:-1] == (*DLMS_UA, 2) and mech in Mechanism._value2member_map_
                    mechanism = Mechanism(mech) if known else -1
                elif item.tag == 0xAC:
                    inner = read_single(item.value)
                    if inner.tag not in (0x80, 0x81):
                        raise AcseError("calling-authentication-value is not charstring/bitstring")
                    auth_value = inner.value
                elif item.tag == 0xBE:
                    user = _read_user_information(item.value)
                # Other fields (protocol-version, called-*, AE qualifiers, implementation
                # information) carry nothing a DLMS server acts on.
        except BerError as exc:
            raise AcseError(f"malformed AARQ: {exc}") from exc
        if context is None:
            raise AcseError("AARQ without application-context-name")
        return cls(context, title, mechanism, auth_value, required, user)


@dataclass(frozen=True, slots=True)
class Aare:
    application_context: ApplicationContext
    result: AssociationResult
    diagnostic: int  # acse-service-user diagnostic
    responding_ap_title: bytes | None = None
    mechanism: Mechanism | None = None
    responding_authentication_value: bytes | None = None
    user_information: bytes | None = None

    def to_bytes(self) -> bytes:
        body = tlv(0xA1, tlv(0x06, encode_oid(context_oid(self.application_context))))
        body += tlv(0xA2, tlv(0x02, bytes((int(self.result),))))
        body += tlv(0xA3, tlv(0xA1, tlv(0x02, bytes((int(self.diagnostic),)))))
        if self.responding_ap_title is not None:
            body += tlv(0xA4, tlv(0x04, self.responding_ap_title))
        if self.mechanism is not None:
            body += tlv(0x88, b"\x07\x80")
            body += tlv(0x89, encode_oid(mechanism_oid(self.mechanism)))
        if self.responding_authentication_value is not None:
            body += tlv(0xAA, tlv(0x80, self.responding_authentication_value))
        if self.user_information is not None:
            body += _user_information(self.user_information)
        return tlv(AARE_TAG, body)

    @classmethod
    def from_bytes(cls, apdu: bytes) -> Aare:
        try:
            outer = read_single(apdu)
            if outer.tag != AARE_TAG:
                raise AcseError(f"0x{outer.tag:02x} is not an AARE")
            fields = {item.tag: item.value for item in read_all(outer.value)}
            context = _context_from(read_single(fields[0xA1]).value)
            result = AssociationResult(read_single(fields[0xA2]).value[0])
            diag = read_single(read_single(fields[0xA3]).value).value[0]
            title = _ap_title(fields[0xA4]) if 0xA4 in fields else None
            mech = Mechanism(decode_oid(fields[0x89])[-1]) if 0x89 in fields else None
            auth = read_single(fields[0xAA]).value if 0xAA in fields else None
            user = _read_user_information(fields[0xBE]) if 0xBE in fields else None
        except (BerError, KeyError, IndexError, ValueError) as exc:
            raise AcseError(f"malformed AARE: {exc!r}") from exc
        if context == -1:
            raise AcseError("AARE with a foreign application context")
        return cls(ApplicationContext(context), result, diag, title, mech, auth, user)


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    reason: int | None = 0  # 0 normal, 1 urgent, 30 user-defined
    user_information: bytes | None = None

    def to_bytes(self) -> bytes:
        body = b"" if self.reason is None else tlv(0x80, bytes((self.reason,)))
        if self.user_information is not None:
            body += _user_information(self.user_information)
        return tlv(RLRQ_TAG, body)

    @classmethod
    def from_bytes(cls, apdu: bytes) -> ReleaseRequest:
        return cls(*_release_fields(apdu, RLRQ_TAG, "RLRQ"))


@dataclass(frozen=True, slots=True)
class ReleaseResponse:
    reason: int | None = 0  # 0 normal, 1 not-finished, 30 user-defined
    user_information: bytes | None = None

    def to_bytes(self) -> bytes:
        body = b"" if self.reason is None else tlv(0x80, bytes((self.reason,)))
        if self.user_information is not None:
            body += _user_information(self.user_information)
        return tlv(RLRE_TAG, body)

    @classmethod
    def from_bytes(cls, apdu: bytes) -> ReleaseResponse:
        return cls(*_release_fields(apdu, RLRE_TAG, "RLRE"))


def _release_fields(apdu: bytes, tag: int, name: str) -> tuple[int | None, bytes | None]:
    try:
        outer = read_single(apdu)
        if outer.tag != tag:
            raise AcseError(f"0x{outer.tag:02x} is not an {name}")
        reason = user = None
        for item in read_all(outer.value):
            if item.tag == 0x80:
                if len(item.value) != 1:
                    raise AcseError(f"{name} reason is not one octet")
                reason = item.value[0]
            elif item.tag == 0xBE:
                user = _read_user_information(item.value)
    except BerError as exc:
        raise AcseError(f"malformed {name}: {exc}") from exc
    return reason, user
