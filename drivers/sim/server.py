"""The DLMS/COSEM server, sans-IO: bytes in, bytes out, events on the side.

:class:`Association` is one client's application association with one meter
(idle -> [awaiting HLS pass 3] -> associated -> idle). :class:`ServerConnection` is one
transport connection: it frames (WRAPPER or HDLC), finds the meter each frame is
addressed to, applies that meter's faults and runs the associations. Nothing here
raises on peer input; problems become events and DLMS error responses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from drivers.sim import acse, axdr, security, wrapper
from drivers.sim.acse import (
    Aare,
    Aarq,
    AcseError,
    ApplicationContext,
    AssociationResult,
    Mechanism,
    ReleaseRequest,
    ReleaseResponse,
    ServiceUserDiagnostic,
)
from drivers.sim.axdr import Data, Encoded
from drivers.sim.ber import encode_oid
from drivers.sim.cosem import CosemObject, Ctx, Level
from drivers.sim.faults import Verdict
from drivers.sim.hdlc import (
    ApduReceived,
    FrameError,
    FrameReader,
    HdlcLink,
    LinkError,
    LinkEstablished,
    LinkReleased,
    decode_server_address,
)
from drivers.sim.meter import FRAUD_LOG, ClientPolicy, EventCode, Meter
from drivers.sim.security import SecurityError
from drivers.sim.xdlms import (
    AccessSelection,
    ActionRequestNormal,
    ActionResponseNormal,
    AttributeDescriptor,
    ConfirmedService,
    ConfirmedServiceErrorPdu,
    Conformance,
    DataAccessResult,
    ExceptionResponse,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseNormal,
    GetResponseWithDataBlock,
    GetResponseWithList,
    InitiateErrorValue,
    InitiateRequest,
    InitiateResponse,
    ServiceError,
    ServiceErrorKind,
    SetRequestNormal,
    SetRequestWithDataBlock,
    SetRequestWithFirstDataBlock,
    SetRequestWithList,
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseNormal,
    SetResponseWithList,
    StateError,
    UnsupportedRequest,
    XdlmsError,
    decode_request,
)

SERVER_CONFORMANCE = (
    Conformance.GET
    | Conformance.SET
    | Conformance.ACTION
    | Conformance.SELECTIVE_ACCESS
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    | Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
)
MIN_PDU_SIZE = 64
CIPHER_OVERHEAD = 24  # tag, length (up to 3), SC, IC, GCM tag
BLOCK_OVERHEAD = 16  # GET-Response-with-datablock header and raw-data length
MAX_SET_BLOCKS = 1 << 20  # octets a client may stage with SET-with-datablock
COUNTER_JUMP = 1_000_000


# -- events ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FrameRejected:
    reason: str


@dataclass(frozen=True, slots=True)
class AddressUnknown:
    address: tuple


@dataclass(frozen=True, slots=True)
class RequestDropped:
    meter: int
    verdict: str  # 'drop' (lost) or 'silent' (stalled, no power)


@dataclass(frozen=True, slots=True)
class AssociationAccepted:
    meter: int
    client_sap: int
    mechanism: Mechanism
    ciphered: bool


@dataclass(frozen=True, slots=True)
class AssociationRefused:
    meter: int
    client_sap: int
    diagnostic: int
    reason: str


@dataclass(frozen=True, slots=True)
class AssociationReleased:
    meter: int
    client_sap: int


@dataclass(frozen=True, slots=True)
class ApduRejected:
    meter: int
    reason: str


@dataclass(frozen=True, slots=True)
class InternalError:
    meter: int | None
    detail: str


Event = (
    FrameRejected
    | AddressUnknown
    | RequestDropped
    | AssociationAccepted
    | AssociationRefused
    | AssociationReleased
    | ApduRejected
    | InternalError
)


class State(Enum):
    IDLE = "idle"
    AWAITING_HLS = "awaiting_hls"
    ASSOCIATED = "associated"


class _Refuse(Exception):
    def __init__(self, diagnostic: int, reason: str, user_information: bytes | None = None) -> None:
        super().__init__(reason)
        self.diagnostic = diagnostic
        self.reason = reason
        self.user_information = user_information


class _CounterError(Exception):
    pass


# -- one association -------------------------------------------------------------------
class Association:
    """The association of one client SAP with one meter."""

    def __init__(self, meter: Meter, client_sap: int, server_sap: int, events: list[Event]) -> None:
        self.meter = meter
        self.client_sap = client_sap
        self.server_sap = server_sap
        self.policy: ClientPolicy | None = meter.spec.policy(client_sap)
        self.events = events
        self.state = State.IDLE
        self._reset()

    def _reset(self) -> None:
        self.state = State.IDLE
        self.ciphered = False
        self.mechanism = Mechanism.NONE
        self.context = ApplicationContext.LN
        self.conformance = Conformance(0)
        self.client_max_pdu = MIN_PDU_SIZE
        self.client_system_title: bytes | None = None
        self.dedicated_key: bytes | None = None
        self.ctos = b""
        self.stoc = b""
        self._blocks: list[bytes] = []
        self._block_invoke = 0
        self._block_number = 0
        self._long_set: (
            tuple[int, AttributeDescriptor, AccessSelection | None, bytearray, int] | None
        ) = None

    @property
    def associated(self) -> bool:
        return self.state is State.ASSOCIATED

    @property
    def level(self) -> Level:
        return self.policy.level if self.policy else Level.PUBLIC

    @property
    def context_oid(self) -> bytes:
        return encode_oid(acse.context_oid(self.context))

    @property
    def mechanism_oid(self) -> bytes:
        return encode_oid(acse.mechanism_oid(self.mechanism))

    @property
    def send_limit(self) -> int:
        return min(self.client_max_pdu, self.meter.spec.max_pdu_size)

    def _event(self, event: Event) -> None:
        self.events.append(event)

    # -- entry point -------------------------------------------------------------------
    def handle(self, apdu: bytes) -> bytes | None:
        """The response APDU to one request APDU (None: nothing to send)."""
        try:
            return self._handle(apdu)
        except Exception as exc:  # a bug must not take the server down; report it
            self._event(InternalError(self.meter.spec.index, repr(exc)))
            return ExceptionResponse(
                StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON
            ).to_bytes()

    def released(self) -> None:
        """The association ends without RLRQ (transport or link gone)."""
        if self.state is not State.IDLE:
            self._event(AssociationReleased(self.meter.spec.index, self.client_sap))
            self._end_of_session()
        self._reset()

    def _end_of_session(self) -> None:
        faults = self.meter.faults
        if faults.reset_counters():
            self.meter.reset_counters()
        elif faults.jump_counter():
            self.meter.rx_invocation_counter += COUNTER_JUMP

    def _handle(self, apdu: bytes) -> bytes | None:
        if not apdu:
            self._event(ApduRejected(self.meter.spec.index, "empty APDU"))
            return None
        tag = apdu[0]
        if tag == acse.AARQ_TAG:
            return self._aarq(apdu)
        if tag == acse.RLRQ_TAG:
            return self._rlrq(apdu)
        if self.state is State.IDLE:
            self._event(
                ApduRejected(self.meter.spec.index, f"APDU 0x{tag:02x} outside an association")
            )
            return ExceptionResponse(
                StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE
            ).to_bytes()
        protection: tuple[int, bool, bool] | None = None
        if (
            tag in security.GLO_TAGS
            or tag in security.DED_TAGS
            or tag in (security.GENERAL_GLO, security.GENERAL_DED)
        ):
            if not self.ciphered:
                return self._reject(
                    "ciphered APDU in an unciphered association",
                    ServiceError.OPERATION_NOT_POSSIBLE,
                )
            try:
                apdu, protection = self._decipher(apdu)
            except _CounterError:
                return self._counter_error()
            except SecurityError as exc:
                return self._reject(f"deciphering failed: {exc}", ServiceError.DECIPHERING_ERROR)
        elif self.ciphered and tag in (0xC0, 0xC1, 0xC3):
            return self._reject(
                "unprotected request in a ciphered association", ServiceError.OPERATION_NOT_POSSIBLE
            )
        try:
            request = decode_request(apdu)
        except XdlmsError as exc:
            self._event(ApduRejected(self.meter.spec.index, f"malformed request: {exc}"))
            if apdu[0] in (0xC0, 0xC1, 0xC3):
                return ExceptionResponse(
                    StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON
                ).to_bytes()
            return ExceptionResponse(
                StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED
            ).to_bytes()
        if self.state is State.AWAITING_HLS and not self._is_hls_reply(request):
            return self._reject(
                "only reply_to_HLS_authentication before HLS pass 4",
                ServiceError.OPERATION_NOT_POSSIBLE,
            )
        response = self._serve(request)
        return self._protect(response, protection) if protection else response

    def _reject(self, reason: str, error: ServiceError) -> bytes:
        self._event(ApduRejected(self.meter.spec.index, reason))
        return ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, error).to_bytes()

    def _counter_error(self) -> bytes:
        self._event(ApduRejected(self.meter.spec.index, "invocation counter not increasing"))
        return ExceptionResponse(
            StateError.SERVICE_NOT_ALLOWED,
            ServiceError.INVOCATION_COUNTER_ERROR,
            self.meter.rx_invocation_counter,
        ).to_bytes()

    # -- ciphering ---------------------------------------------------------------------
    def _keys(self, dedicated: bool) -> tuple[bytes, bytes]:
        spec = self.meter.spec
        if spec.ek is None or spec.ak is None:
            raise SecurityError("meter has no keys")
        if dedicated:
            if self.dedicated_key is None:
                raise SecurityError("ded- APDU without a dedicated key")
            return self.dedicated_key, spec.ak
        return spec.ek, spec.ak

    def _decipher(self, apdu: bytes) -> tuple[bytes, tuple[int, bool, bool]]:
        """Plain APDU and how to protect the answer: (SC, dedicated, general)."""
        p = security.parse_protected(apdu)
        if self.client_system_title is None:
            raise SecurityError("no client system title")
        if p.system_title is not None and p.system_title != self.client_system_title:
            raise SecurityError("general ciphering from another system title")
        ek, ak = self._keys(p.dedicated)
        self._check_counter(p.invocation_counter)
        sc, ic, plain = security.unprotect(p.payload, self.client_system_title, ek, ak)
        self.meter.rx_invocation_counter = ic + 1
        if not plain or (p.plain_tag is not None and plain[0] != p.plain_tag):
            raise SecurityError("ciphered APDU does not hold the APDU its tag names")
        return plain, (sc, p.dedicated, p.system_title is not None)

    def _check_counter(self, ic: int) -> None:
        if ic < self.meter.rx_invocation_counter:
            raise _CounterError

    def _protect(self, plain: bytes, protection: tuple[int, bool, bool]) -> bytes:
        sc, dedicated, general = protection
        if plain[0] not in security.GLO_DED_TAGS:  # exception-response goes unprotected
            return plain
        glo, ded = security.GLO_DED_TAGS[plain[0]]
        ek, ak = self._keys(dedicated)
        title = self.meter.spec.system_title
        content = security.protect(sc, title, self.meter.next_tx_counter(), ek, ak, plain)
        if general:
            return security.wrap_general(dedicated, title, content)
        return security.wrap(ded if dedicated and ded is not None else glo, content)

    # -- ACSE --------------------------------------------------------------------------
    def _aarq(self, apdu: bytes) -> bytes:
        if self.state is not State.IDLE:
            self.released()
        index = self.meter.spec.index
        try:
            response = self._accept(apdu)
        except _Refuse as refusal:
            self._event(
                AssociationRefused(index, self.client_sap, refusal.diagnostic, refusal.reason)
            )
            if refusal.diagnostic == ServiceUserDiagnostic.AUTHENTICATION_FAILURE:
                self.meter.log(FRAUD_LOG, EventCode.AUTHENTICATION_FAILURE)
            aare = Aare(
                self.context,
                AssociationResult.REJECTED_PERMANENT,
                refusal.diagnostic,
                user_information=refusal.user_information,
            ).to_bytes()
            self._reset()
            return aare
        except _CounterError:
            self._event(
                AssociationRefused(
                    index,
                    self.client_sap,
                    ServiceUserDiagnostic.NO_REASON_GIVEN,
                    "invocation counter",
                )
            )
            self._reset()
            return self._counter_error()
        if self.state is State.ASSOCIATED:
            self._event(AssociationAccepted(index, self.client_sap, self.mechanism, self.ciphered))
        return response

    def _accept(self, apdu: bytes) -> bytes:
        spec = self.meter.spec
        try:
            aarq = Aarq.from_bytes(apdu)
        except AcseError as exc:
            raise _Refuse(ServiceUserDiagnostic.NO_REASON_GIVEN, str(exc)) from exc
        if aarq.application_context not in (ApplicationContext.LN, ApplicationContext.LN_CIPHERED):
            raise _Refuse(
                ServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED, "only LN contexts"
            )
        self.context = ApplicationContext(aarq.application_context)
        policy = self.policy
        if policy is None:
            raise _Refuse(
                ServiceUserDiagnostic.NO_REASON_GIVEN, f"client SAP {self.client_sap} unknown"
            )
        ciphered = aarq.application_context == ApplicationContext.LN_CIPHERED
        if policy.ciphered and not ciphered:
            raise _Refuse(
                ServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
                "this client must cipher",
            )
        mechanism = aarq.mechanism if aarq.mechanism is not None else Mechanism.NONE
        if mechanism != policy.mechanism:
            diag = (
                ServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_REQUIRED
                if mechanism == Mechanism.NONE
                else ServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED
            )
            raise _Refuse(
                diag, f"mechanism {mechanism!r}, this client uses {policy.mechanism.name}"
            )
        needs_title = ciphered or mechanism == Mechanism.HIGH_GMAC
        if needs_title:
            if spec.ek is None or spec.ak is None:
                raise _Refuse(
                    ServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
                    "meter has no keys",
                )
            if aarq.calling_ap_title is None or len(aarq.calling_ap_title) != 8:
                raise _Refuse(
                    ServiceUserDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED,
                    "8-octet calling AP title needed",
                )
        self.client_system_title = aarq.calling_ap_title if needs_title else None
        self.ciphered = ciphered
        self.mechanism = mechanism

        # xDLMS InitiateRequest, ciphered in a ciphered context.
        if aarq.user_information is None:
            raise _Refuse(ServiceUserDiagnostic.NO_REASON_GIVEN, "AARQ without user-information")
        user = aarq.user_information
        protection = None
        if ciphered:
            if not user or user[0] != 0x21:
                raise _Refuse(
                    ServiceUserDiagnostic.NO_REASON_GIVEN,
                    "ciphered context needs a glo-initiateRequest",
                )
            try:
                user, protection = self._decipher(user)
            except SecurityError as exc:
                raise _Refuse(
                    ServiceUserDiagnostic.NO_REASON_GIVEN, f"deciphering failed: {exc}"
                ) from exc
        elif user[:1] != b"\x01":
            raise _Refuse(
                ServiceUserDiagnostic.NO_REASON_GIVEN, "user-information is not an InitiateRequest"
            )
        try:
            initiate = InitiateRequest.from_bytes(user)
        except XdlmsError as exc:
            raise _Refuse(ServiceUserDiagnostic.NO_REASON_GIVEN, str(exc)) from exc
        problem = None
        if initiate.dlms_version < 6:
            problem = InitiateErrorValue.DLMS_VERSION_TOO_LOW
        elif (
            initiate.client_max_receive_pdu_size
            and initiate.client_max_receive_pdu_size < MIN_PDU_SIZE
        ):
            problem = InitiateErrorValue.PDU_SIZE_TOO_SHORT
        elif not initiate.conformance & SERVER_CONFORMANCE:
            problem = InitiateErrorValue.INCOMPATIBLE_CONFORMANCE
        elif initiate.dedicated_key is not None and len(initiate.dedicated_key) != 16:
            problem = InitiateErrorValue.OTHER
        if problem is not None:
            error = ConfirmedServiceErrorPdu(
                ConfirmedService.INITIATE_ERROR, ServiceErrorKind.INITIATE, problem
            )
            raise _Refuse(
                ServiceUserDiagnostic.NO_REASON_GIVEN,
                f"initiate error {problem.name}",
                error.to_bytes(),
            )

        # Authentication.
        if self.meter.faults.refuse_authentication() and mechanism != Mechanism.NONE:
            raise _Refuse(
                ServiceUserDiagnostic.AUTHENTICATION_FAILURE, "injected authentication failure"
            )
        if mechanism == Mechanism.LOW and aarq.calling_authentication_value != spec.password:
            raise _Refuse(ServiceUserDiagnostic.AUTHENTICATION_FAILURE, "wrong LLS password")
        stoc = None
        if mechanism == Mechanism.HIGH_GMAC:
            ctos = aarq.calling_authentication_value or b""
            if not 8 <= len(ctos) <= 64:
                raise _Refuse(
                    ServiceUserDiagnostic.AUTHENTICATION_FAILURE, "CtoS must be 8..64 octets"
                )
            self.ctos = ctos
            self.stoc = stoc = security.new_challenge(16)
        elif mechanism not in (Mechanism.NONE, Mechanism.LOW):
            raise _Refuse(
                ServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED,
                f"{mechanism!r} not implemented",
            )

        self.conformance = initiate.conformance & SERVER_CONFORMANCE
        size = initiate.client_max_receive_pdu_size or 0xFFFF
        self.client_max_pdu = size
        self.dedicated_key = initiate.dedicated_key
        response = InitiateResponse(self.conformance, spec.max_pdu_size).to_bytes()
        if protection is not None:
            response = self._protect(response, (protection[0], False, False))
        self.state = State.AWAITING_HLS if stoc is not None else State.ASSOCIATED
        return Aare(
            self.context,
            AssociationResult.ACCEPTED,
            ServiceUserDiagnostic.AUTHENTICATION_REQUIRED
            if stoc is not None
            else ServiceUserDiagnostic.NULL,
            responding_ap_title=spec.system_title if needs_title else None,
            mechanism=mechanism if mechanism != Mechanism.NONE else None,
            responding_authentication_value=stoc,
            user_information=response,
        ).to_bytes()

    def _rlrq(self, apdu: bytes) -> bytes:
        user_information = None
        try:
            rlrq = ReleaseRequest.from_bytes(apdu)
            if rlrq.user_information and self.ciphered and rlrq.user_information[0] == 0x21:
                plain, protection = self._decipher(rlrq.user_information)
                InitiateRequest.from_bytes(plain)
                response = InitiateResponse(
                    self.conformance, self.meter.spec.max_pdu_size
                ).to_bytes()
                user_information = self._protect(response, (protection[0], False, False))
        except (AcseError, SecurityError, XdlmsError, _CounterError) as exc:
            self._event(ApduRejected(self.meter.spec.index, f"release request: {exc!r}"))
        was = self.state
        self._reset()
        if was is not State.IDLE:
            self._event(AssociationReleased(self.meter.spec.index, self.client_sap))
            self._end_of_session()
        return ReleaseResponse(0, user_information).to_bytes()

    # -- HLS pass 3 / 4 ----------------------------------------------------------------
    @staticmethod
    def _is_hls_reply(request: object) -> bool:
        return (
            isinstance(request, ActionRequestNormal)
            and request.method.class_id == 15
            and request.method.instance == b"\x00\x00\x28\x00\x00\xff"
            and request.method.method == 1
        )

    def reply_to_hls(self, f_stoc: bytes) -> tuple[DataAccessResult, Data | None]:
        if self.state is not State.AWAITING_HLS:
            return DataAccessResult.READ_WRITE_DENIED, None
        spec = self.meter.spec
        assert spec.ek is not None and spec.ak is not None and self.client_system_title is not None
        if (
            security.verify_gmac_response(
                f_stoc, self.client_system_title, spec.ek, spec.ak, self.stoc
            )
            is None
        ):
            self._event(
                AssociationRefused(
                    spec.index,
                    self.client_sap,
                    ServiceUserDiagnostic.AUTHENTICATION_FAILURE,
                    "HLS f(StoC) wrong",
                )
            )
            self.meter.log(FRAUD_LOG, EventCode.AUTHENTICATION_FAILURE)
            self.state = State.IDLE
            return DataAccessResult.READ_WRITE_DENIED, None
        self.state = State.ASSOCIATED
        self._event(AssociationAccepted(spec.index, self.client_sap, self.mechanism, self.ciphered))
        f_ctos = security.gmac_response(
            spec.system_title, self.meter.next_tx_counter(), spec.ek, spec.ak, self.ctos
        )
        return DataAccessResult.SUCCESS, axdr.octet_string(f_ctos)

    # -- xDLMS services ----------------------------------------------------------------
    def _ctx(self) -> Ctx:
        return Ctx(self.meter, self, self.level)

    def _serve(self, request: object) -> bytes:
        if isinstance(request, GetRequestNormal):
            self._blocks = []
            result = self._get(request.attribute, request.access)
            return self._fit(
                request.invoke_id, GetResponseNormal(request.invoke_id, result).to_bytes(), result
            )
        if isinstance(request, GetRequestNext):
            return self._next_block(request)
        if isinstance(request, GetRequestWithList):
            self._blocks = []
            results = tuple(self._get(d, a) for d, a in request.items)
            plain = GetResponseWithList(request.invoke_id, results).to_bytes()
            return self._fit(request.invoke_id, plain, None)
        if isinstance(request, SetRequestNormal):
            return SetResponseNormal(
                request.invoke_id, self._set(request.attribute, request.access, request.value)
            ).to_bytes()
        if isinstance(request, SetRequestWithFirstDataBlock | SetRequestWithDataBlock):
            return self._set_block(request)
        if isinstance(request, SetRequestWithList):
            codes = tuple(
                self._set(d, a, v) for (d, a), v in zip(request.items, request.values, strict=True)
            )
            return SetResponseWithList(request.invoke_id, codes).to_bytes()
        if isinstance(request, ActionRequestNormal):
            return self._action(request)
        assert isinstance(request, UnsupportedRequest)
        self._event(
            ApduRejected(
                self.meter.spec.index,
                f"service 0x{request.tag:02x}/{request.choice} not implemented",
            )
        )
        return ExceptionResponse(
            StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED
        ).to_bytes()

    def _object(self, class_id: int, ln: bytes) -> CosemObject | DataAccessResult:
        found = self.meter.find(class_id, ln)
        if found is None:
            return DataAccessResult.OBJECT_UNDEFINED
        if isinstance(found, int):
            return DataAccessResult.OBJECT_CLASS_INCONSISTENT
        if not found.visible(self.level):
            return DataAccessResult.OBJECT_UNDEFINED
        return found

    def _get(
        self, d: AttributeDescriptor, access: AccessSelection | None
    ) -> Data | Encoded | DataAccessResult:
        obj = self._object(d.class_id, d.instance)
        if isinstance(obj, DataAccessResult):
            return obj
        a = obj.attr_def(d.attribute)
        if a is None:
            return DataAccessResult.OBJECT_UNAVAILABLE
        if not obj.access_mode(a, self.level) & 1:
            return DataAccessResult.READ_WRITE_DENIED
        if access is not None and not self.conformance & Conformance.SELECTIVE_ACCESS:
            return DataAccessResult.OTHER_REASON
        return obj.get(d.attribute, self._ctx(), access)

    def _fit(self, invoke_id: int, plain: bytes, single: object) -> bytes:
        """The response, or its first block when it does not fit the client's PDU."""
        limit = self.send_limit - (CIPHER_OVERHEAD if self.ciphered else 0)
        if len(plain) <= limit:
            return plain
        if not self.conformance & Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ:
            return GetResponseNormal(invoke_id, DataAccessResult.OTHER_REASON).to_bytes()
        raw = plain[4:] if plain[1] == 1 else plain[3:]  # the Data, or count + results
        size = max(1, limit - BLOCK_OVERHEAD)
        self._blocks = [raw[i : i + size] for i in range(0, len(raw), size)]
        self._block_invoke = invoke_id
        self._block_number = 1
        return self._block_response(1)

    def _block_response(self, number: int) -> bytes:
        last = number == len(self._blocks)
        return GetResponseWithDataBlock(
            self._block_invoke, last, number, self._blocks[number - 1]
        ).to_bytes()

    def _next_block(self, request: GetRequestNext) -> bytes:
        blocks = self._blocks
        if not blocks:
            return GetResponseWithDataBlock(
                request.invoke_id,
                True,
                request.block_number,
                DataAccessResult.NO_LONG_GET_IN_PROGRESS,
            ).to_bytes()
        n = request.block_number
        if n == self._block_number and n < len(blocks):
            self._block_number += 1
        elif n != self._block_number - 1:  # (one behind: the client missed a block)
            self._blocks = []
            return GetResponseWithDataBlock(
                request.invoke_id, True, n, DataAccessResult.LONG_GET_ABORTED
            ).to_bytes()
        return self._block_response(self._block_number)

    def _set(
        self, d: AttributeDescriptor, access: AccessSelection | None, value: Data
    ) -> DataAccessResult:
        obj = self._object(d.class_id, d.instance)
        if isinstance(obj, DataAccessResult):
            return obj
        a = obj.attr_def(d.attribute)
        if a is None:
            return DataAccessResult.OBJECT_UNAVAILABLE
        if not obj.access_mode(a, self.level) & 2:
            return DataAccessResult.READ_WRITE_DENIED
        if access is not None:
            return DataAccessResult.OTHER_REASON
        return obj.set(d.attribute, value, self._ctx())

    def _set_block(self, request: SetRequestWithFirstDataBlock | SetRequestWithDataBlock) -> bytes:
        if isinstance(request, SetRequestWithFirstDataBlock):
            if request.block_number != 1:
                return SetResponseLastDataBlock(
                    request.invoke_id,
                    DataAccessResult.DATA_BLOCK_NUMBER_INVALID,
                    request.block_number,
                ).to_bytes()
            self._long_set = (
                request.invoke_id,
                request.attribute,
                request.access,
                bytearray(request.raw),
                1,
            )
        else:
            if self._long_set is None:
                return SetResponseLastDataBlock(
                    request.invoke_id,
                    DataAccessResult.NO_LONG_SET_IN_PROGRESS,
                    request.block_number,
                ).to_bytes()
            invoke, desc, access, buf, number = self._long_set
            if request.block_number != number + 1:
                self._long_set = None
                return SetResponseLastDataBlock(
                    request.invoke_id, DataAccessResult.LONG_SET_ABORTED, request.block_number
                ).to_bytes()
            buf += request.raw
            if len(buf) > MAX_SET_BLOCKS:
                self._long_set = None
                return SetResponseLastDataBlock(
                    request.invoke_id, DataAccessResult.LONG_SET_ABORTED, request.block_number
                ).to_bytes()
            self._long_set = (invoke, desc, access, buf, number + 1)
        if not request.last_block:
            return SetResponseDataBlock(request.invoke_id, request.block_number).to_bytes()
        _, desc, access, buf, _ = self._long_set
        self._long_set = None
        try:
            value = axdr.decode_all(bytes(buf))
        except axdr.AxdrError:
            return SetResponseLastDataBlock(
                request.invoke_id, DataAccessResult.TYPE_UNMATCHED, request.block_number
            ).to_bytes()
        return SetResponseLastDataBlock(
            request.invoke_id, self._set(desc, access, value), request.block_number
        ).to_bytes()

    def _action(self, request: ActionRequestNormal) -> bytes:
        m = request.method
        obj = self._object(m.class_id, m.instance)
        if isinstance(obj, DataAccessResult):
            return ActionResponseNormal(request.invoke_id, obj).to_bytes()
        mdef = obj.method_def(m.method)
        if mdef is None:
            return ActionResponseNormal(
                request.invoke_id, DataAccessResult.OBJECT_UNAVAILABLE
            ).to_bytes()
        if mdef.level is None or self.level < mdef.level:
            return ActionResponseNormal(
                request.invoke_id, DataAccessResult.READ_WRITE_DENIED
            ).to_bytes()
        result, data = obj.act(m.method, request.parameters, self._ctx())
        return ActionResponseNormal(request.invoke_id, result, data).to_bytes()


# -- one transport connection ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Outgoing:
    """Bytes to write, ``delay`` seconds after the request that caused them."""

    data: bytes
    delay: float = 0.0


Resolver = Callable[[tuple], Meter | None]


class ServerConnection:
    """One client connection. ``resolve`` maps an address to a meter:
    ``("wport", destination_wport)`` or ``("hdlc", logical, physical)``."""

    def __init__(self, framing: str, resolve: Resolver, *, hdlc_max_info: int = 512) -> None:
        if framing not in ("wrapper", "hdlc"):
            raise ValueError("framing is 'wrapper' or 'hdlc'")
        self.framing = framing
        self._resolve = resolve
        self._hdlc_max_info = hdlc_max_info
        self._wrapper = wrapper.WrapperReader()
        self._frames = FrameReader()
        self._links: dict[tuple[bytes, bytes], HdlcLink] = {}
        self._associations: dict[tuple[int, int], Association] = {}
        self._meters: dict[int, Meter] = {}
        self._events: list[Event] = []
        self.closed = False

    def next_events(self) -> list[Event]:
        events = list(self._events)
        self._events.clear()  # in place: associations hold this list
        return events

    def receive_data(self, data: bytes) -> list[Outgoing]:
        if self.closed:
            return []
        try:
            return (
                self._receive_wrapper(data)
                if self.framing == "wrapper"
                else self._receive_hdlc(data)
            )
        except Exception as exc:  # a bug must not take the server down; report it
            self._events.append(InternalError(None, repr(exc)))
            return []

    def connection_lost(self) -> None:
        for association in self._associations.values():
            association.released()
        self._associations.clear()
        self._links.clear()
        self.closed = True

    def _association(self, meter: Meter, client_sap: int, server_sap: int) -> Association:
        key = (meter.spec.index, client_sap)
        a = self._associations.get(key)
        if a is None:
            a = self._associations[key] = Association(meter, client_sap, server_sap, self._events)
        return a

    def _admit(self, meter: Meter) -> bool:
        verdict = meter.faults.request(meter.clock.source())
        if verdict is Verdict.DELIVER and meter.in_outage():
            verdict = Verdict.SILENT
        if verdict is Verdict.DELIVER:
            return True
        self._events.append(RequestDropped(meter.spec.index, verdict.value))
        return False

    def _send(self, meter: Meter, data: bytes) -> Outgoing:
        noise = meter.faults.garble()
        return Outgoing(noise if noise is not None else data, meter.faults.delay())

    def _receive_wrapper(self, data: bytes) -> list[Outgoing]:
        out: list[Outgoing] = []
        for item in self._wrapper.feed(data):
            if isinstance(item, wrapper.WrapperError):
                self._events.append(FrameRejected(item.reason))
                self.connection_lost()
                break
            meter = self._resolve(("wport", item.destination))
            if meter is None:
                self._events.append(AddressUnknown(("wport", item.destination)))
                continue
            if not self._admit(meter):
                continue
            response = self._association(meter, item.source, item.destination).handle(item.apdu)
            if response is not None:
                out.append(
                    self._send(meter, wrapper.encode(item.destination, item.source, response))
                )
        return out

    def _receive_hdlc(self, data: bytes) -> list[Outgoing]:
        out: list[Outgoing] = []
        for item in self._frames.feed(data):
            if isinstance(item, FrameError):
                self._events.append(FrameRejected(item.reason))
                continue
            server = decode_server_address(item.destination)
            address = ("hdlc", server.logical, server.physical)
            meter = self._resolve(address)
            if meter is None:
                self._events.append(AddressUnknown(address))
                continue
            if not self._admit(meter):
                continue
            if len(item.source) != 1:
                self._events.append(FrameRejected("client HDLC address is not one octet"))
                continue
            client_sap = item.source[0] >> 1
            key = (item.destination, item.source)
            link = self._links.get(key)
            if link is None:
                link = self._links[key] = HdlcLink(
                    item.destination, item.source, self._hdlc_max_info
                )
            frames, events = link.receive(item)
            for event in events:
                if isinstance(event, LinkEstablished | LinkReleased):
                    a = self._associations.pop((meter.spec.index, client_sap), None)
                    if a is not None:
                        a.released()
                elif isinstance(event, LinkError):
                    self._events.append(FrameRejected(event.reason))
                elif isinstance(event, ApduReceived):
                    response = self._association(meter, client_sap, server.logical).handle(
                        event.apdu
                    )
                    if response is not None:
                        frames += link.send_apdu(response)
            if frames:
                out.append(self._send(meter, b"".join(frames)))
        return out
