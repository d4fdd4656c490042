"""The association state machine and connection handling (drivers/sim/server.py),
sans-IO: every refusal, every error response, and no exception for any input."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sim import axdr, hdlc, security, wrapper
from drivers.sim.acse import (
    Aare,
    Aarq,
    ApplicationContext,
    AssociationResult,
    Mechanism,
    ReleaseRequest,
    ReleaseResponse,
    ServiceUserDiagnostic,
)
from drivers.sim.cosem import Level, obis
from drivers.sim.faults import FaultSpec
from drivers.sim.meter import ClientPolicy, Meter, MeterSpec
from drivers.sim.server import (
    AddressUnknown,
    ApduRejected,
    AssociationAccepted,
    AssociationRefused,
    AssociationReleased,
    FrameRejected,
    InternalError,
    ServerConnection,
)
from drivers.sim.xdlms import (
    AccessSelection,
    ActionRequestNormal,
    ActionResponseNormal,
    AttributeDescriptor,
    ConfirmedServiceErrorPdu,
    Conformance,
    DataAccessResult,
    ExceptionResponse,
    GetRequestNext,
    GetRequestNormal,
    GetRequestWithList,
    GetResponseWithDataBlock,
    GetResponseWithList,
    InitiateErrorValue,
    InitiateRequest,
    InitiateResponse,
    MethodDescriptor,
    ServiceError,
    SetRequestNormal,
    SetRequestWithDataBlock,
    SetRequestWithFirstDataBlock,
    SetRequestWithList,
    SetResponseDataBlock,
    SetResponseLastDataBlock,
    SetResponseNormal,
    SetResponseWithList,
    StateError,
    decode_response,
)

EK, AK = bytes(range(16)), bytes(range(16, 32))
CLIENT_TITLE = b"CLIENT01"
NOW = datetime(2026, 3, 10, 12, 7, 30, tzinfo=UTC).timestamp()
CONFORMANCE = (
    Conformance.GET
    | Conformance.SET
    | Conformance.ACTION
    | Conformance.SELECTIVE_ACCESS
    | Conformance.MULTIPLE_REFERENCES
    | Conformance.BLOCK_TRANSFER_WITH_GET_OR_READ
    | Conformance.BLOCK_TRANSFER_WITH_SET_OR_WRITE
)
CLOCK = AttributeDescriptor(8, obis("0.0.1.0.0.255"), 2)
PROFILE = obis("1.0.99.1.0.255")
POLICIES = (
    ClientPolicy(16, Mechanism.NONE, Level.PUBLIC),
    ClientPolicy(32, Mechanism.LOW, Level.READER),
    ClientPolicy(1, Mechanism.NONE, Level.MANAGEMENT),
    ClientPolicy(2, Mechanism.HIGH_GMAC, Level.MANAGEMENT, ciphered=True),
    ClientPolicy(3, Mechanism.NONE, Level.MANAGEMENT, ciphered=True),
)


class FakeTime:
    """A controllable time source (seconds since the epoch)."""

    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Probe:
    """One WRAPPER connection to one meter (wPort 1), with APDU helpers."""

    def __init__(self, faults: FaultSpec | None = None, **spec) -> None:
        self.time = FakeTime()
        fields = {
            "index": 0,
            "serial": "000100000000",
            "seed": 7,
            "ek": EK,
            "ak": AK,
            "password": b"secret12",
            "clients": POLICIES,
            "profile_days": 2,
            "faults": faults or FaultSpec(),
        } | spec
        self.meter = Meter(MeterSpec(**fields), self.time)
        self.conn = self.connect()
        self.ic = 100

    def connect(self) -> ServerConnection:
        return ServerConnection("wrapper", lambda a: self.meter if a == ("wport", 1) else None)

    def send(
        self, apdu: bytes, client: int = 1, conn: ServerConnection | None = None
    ) -> bytes | None:
        out = (conn or self.conn).receive_data(wrapper.encode(client, 1, apdu))
        if not out:
            return None
        (pdu,) = wrapper.WrapperReader().feed(out[0].data)
        assert (pdu.source, pdu.destination) == (1, client)
        return pdu.apdu

    def events(self):
        return self.conn.next_events()

    def aarq(
        self,
        client: int = 1,
        mechanism=None,
        auth=None,
        ciphered=False,
        title=CLIENT_TITLE,
        initiate=None,
        **kw,
    ) -> Aare:
        initiate = initiate or InitiateRequest(
            CONFORMANCE, kw.pop("pdu", 0xFFFF), dedicated_key=kw.pop("dk", None)
        )
        user = initiate.to_bytes()
        if ciphered:
            key_title = title if title and len(title) == 8 else CLIENT_TITLE
            user = security.wrap(
                0x21, security.protect(0x30, key_title, self.next_ic(), EK, AK, user)
            )
        context = ApplicationContext.LN_CIPHERED if ciphered else ApplicationContext.LN
        apdu = Aarq(
            kw.pop("context", context),
            title if title else None,
            mechanism,
            auth,
            mechanism is not None,
            user,
        )
        return Aare.from_bytes(self.send(apdu.to_bytes(), client))

    def next_ic(self) -> int:
        self.ic += 1
        return self.ic - 1

    def get(
        self, desc: AttributeDescriptor, access: AccessSelection | None = None, client: int = 1
    ):
        return decode_response(self.send(GetRequestNormal(0xC1, desc, access).to_bytes(), client))

    def cipher(
        self,
        plain: bytes,
        tag: int,
        ic: int | None = None,
        title: bytes = CLIENT_TITLE,
        general: bool = False,
    ) -> bytes:
        content = security.protect(0x30, title, self.next_ic() if ic is None else ic, EK, AK, plain)
        return (
            security.wrap_general(False, title, content) if general else security.wrap(tag, content)
        )

    def decipher(self, apdu: bytes):
        p = security.parse_protected(apdu)
        _, _, plain = security.unprotect(p.payload, self.meter.spec.system_title, EK, AK)
        return decode_response(plain)


def accepted(aare: Aare) -> bool:
    return aare.result == AssociationResult.ACCEPTED


def test_unknown_address_gets_no_answer():
    p = Probe()
    assert p.conn.receive_data(wrapper.encode(1, 9, b"\x60\x00")) == []
    assert p.events() == [AddressUnknown(("wport", 9))]


def test_bad_wrapper_header_closes_the_connection():
    p = Probe()
    assert p.conn.receive_data(b"\x00\x07" + b"\x00" * 6) == []
    assert isinstance(p.events()[0], FrameRejected) and p.conn.closed
    assert p.conn.receive_data(wrapper.encode(1, 1, b"\x60\x00")) == []


def test_request_before_association():
    p = Probe()
    response = p.get(CLOCK)
    assert response == ExceptionResponse(
        StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE
    )
    assert isinstance(p.events()[0], ApduRejected)
    assert p.send(b"") is None


@pytest.mark.parametrize(
    ("kwargs", "diagnostic"),
    [
        ({"client": 99}, ServiceUserDiagnostic.NO_REASON_GIVEN),
        (
            {"context": ApplicationContext.SN},
            ServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED,
        ),
        ({"client": 32}, ServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_REQUIRED),
        (
            {"client": 32, "mechanism": Mechanism.HIGH_GMAC, "auth": b"c" * 16},
            ServiceUserDiagnostic.AUTHENTICATION_MECHANISM_NAME_NOT_RECOGNISED,
        ),
        (
            {"client": 32, "mechanism": Mechanism.LOW, "auth": b"wrong"},
            ServiceUserDiagnostic.AUTHENTICATION_FAILURE,
        ),
        ({"client": 3}, ServiceUserDiagnostic.APPLICATION_CONTEXT_NAME_NOT_SUPPORTED),
        (
            {
                "client": 2,
                "mechanism": Mechanism.HIGH_GMAC,
                "auth": b"c" * 16,
                "ciphered": True,
                "title": b"SHORT",
            },
            ServiceUserDiagnostic.CALLING_AP_TITLE_NOT_RECOGNIZED,
        ),
        (
            {"client": 2, "mechanism": Mechanism.HIGH_GMAC, "auth": b"c" * 4, "ciphered": True},
            ServiceUserDiagnostic.AUTHENTICATION_FAILURE,
        ),
    ],
)
def test_association_refusals(kwargs, diagnostic):
    p = Probe()
    aare = p.aarq(**kwargs)
    assert aare.result == AssociationResult.REJECTED_PERMANENT and aare.diagnostic == diagnostic
    (event,) = p.events()
    assert isinstance(event, AssociationRefused) and event.diagnostic == diagnostic
    assert (
        p.get(CLOCK, client=kwargs.get("client", 1)).service_error
        == ServiceError.OPERATION_NOT_POSSIBLE
    )


def test_wrong_password_is_logged_as_fraud():
    p = Probe()
    p.aarq(client=32, mechanism=Mechanism.LOW, auth=b"nope")
    assert p.meter.last_event(1) == 46


@pytest.mark.parametrize(
    ("initiate", "value"),
    [
        (
            InitiateRequest(CONFORMANCE, 0xFFFF, dlms_version=5),
            InitiateErrorValue.DLMS_VERSION_TOO_LOW,
        ),
        (InitiateRequest(CONFORMANCE, 20), InitiateErrorValue.PDU_SIZE_TOO_SHORT),
        (
            InitiateRequest(Conformance.DATA_NOTIFICATION, 0xFFFF),
            InitiateErrorValue.INCOMPATIBLE_CONFORMANCE,
        ),
        (InitiateRequest(CONFORMANCE, 0xFFFF, dedicated_key=b"short"), InitiateErrorValue.OTHER),
    ],
)
def test_initiate_errors(initiate, value):
    aare = Probe().aarq(initiate=initiate)
    assert aare.result == AssociationResult.REJECTED_PERMANENT
    error = ConfirmedServiceErrorPdu.from_bytes(aare.user_information)
    assert error.value == value


def test_malformed_aarqs_are_refused_not_raised():
    p = Probe()
    for raw in (
        b"\x60\x03\xa1\x01\x00",
        b"\x60\x00",
        Aarq(ApplicationContext.LN).to_bytes(),
        Aarq(ApplicationContext.LN, user_information=b"\x02\x00").to_bytes(),
    ):
        aare = Aare.from_bytes(p.send(raw))
        assert aare.result == AssociationResult.REJECTED_PERMANENT
    assert all(isinstance(e, AssociationRefused) for e in p.events())


def test_plain_association_negotiates_and_releases():
    p = Probe()
    aare = p.aarq(pdu=512)
    assert accepted(aare) and aare.responding_ap_title is None
    initiate = InitiateResponse.from_bytes(aare.user_information)
    assert initiate.conformance == CONFORMANCE and initiate.server_max_receive_pdu_size == 0xFFFF
    assert p.get(CLOCK).result.tag == axdr.Tag.OCTET_STRING
    rlre = ReleaseResponse.from_bytes(p.send(ReleaseRequest().to_bytes()))
    assert rlre.reason == 0
    events = p.events()
    assert isinstance(events[0], AssociationAccepted) and events[-1] == AssociationReleased(0, 1)
    assert p.get(CLOCK).service_error == ServiceError.OPERATION_NOT_POSSIBLE
    assert ReleaseResponse.from_bytes(p.send(b"\x62\x02\x80\x00")).reason == 0  # malformed RLRQ
    assert isinstance(p.events()[-1], ApduRejected)


def test_ciphered_association_and_counter_rules():
    p = Probe()
    aare = p.aarq(client=3, ciphered=True)
    assert accepted(aare) and aare.responding_ap_title == p.meter.spec.system_title
    plain = security.parse_protected(aare.user_information)
    assert plain.plain_tag == 0x08
    get = GetRequestNormal(0xC1, CLOCK).to_bytes()
    response = p.send(p.cipher(get, 0xC8), 3)
    assert response[0] == 0xCC and p.decipher(response).result.tag == axdr.Tag.OCTET_STRING
    # A repeated invocation counter is refused with the counter the meter expects.
    replay = p.send(p.cipher(get, 0xC8, ic=p.ic - 1), 3)
    assert decode_response(replay) == ExceptionResponse(
        StateError.SERVICE_NOT_ALLOWED, ServiceError.INVOCATION_COUNTER_ERROR, p.ic
    )
    # Unprotected, tampered, or from another system title.
    assert decode_response(p.send(get, 3)).service_error == ServiceError.OPERATION_NOT_POSSIBLE
    tampered = bytearray(p.cipher(get, 0xC8))
    tampered[-1] ^= 1
    assert (
        decode_response(p.send(bytes(tampered), 3)).service_error == ServiceError.DECIPHERING_ERROR
    )
    other = p.send(p.cipher(get, 0xC8, title=b"INTRUDER", general=True), 3)
    assert decode_response(other).service_error == ServiceError.DECIPHERING_ERROR
    wrong_inner = p.send(p.cipher(b"\xc1" + get[1:], 0xC8), 3)  # glo-get holding a SET
    assert decode_response(wrong_inner).service_error == ServiceError.DECIPHERING_ERROR
    # general-glo-ciphering (dlms-cosem's) is answered the same way.
    general = p.send(p.cipher(get, 0, general=True), 3)
    assert general[0] == security.GENERAL_GLO
    # Ciphered release with a ciphered InitiateRequest in it.
    user = p.cipher(InitiateRequest(CONFORMANCE, 0xFFFF).to_bytes(), 0x21)
    rlre = ReleaseResponse.from_bytes(p.send(ReleaseRequest(0, user).to_bytes(), 3))
    assert security.parse_protected(rlre.user_information).plain_tag == 0x08


def test_ciphered_apdu_in_plain_association_and_dedicated_key():
    p = Probe()
    p.aarq(client=1)
    get = GetRequestNormal(0xC1, CLOCK).to_bytes()
    assert (
        decode_response(p.send(p.cipher(get, 0xC8), 1)).service_error
        == ServiceError.OPERATION_NOT_POSSIBLE
    )
    dk = bytes(range(100, 116))
    p.aarq(client=3, ciphered=True, dk=dk)
    content = security.protect(0x30, CLIENT_TITLE, p.next_ic(), dk, AK, get)
    response = p.send(security.wrap(0xD0, content), 3)
    assert response[0] == 0xD4
    inner = security.parse_protected(response)
    assert security.unprotect(inner.payload, p.meter.spec.system_title, dk, AK)[2][0] == 0xC4
    p.aarq(client=3, ciphered=True)  # no dedicated key this time
    assert (
        decode_response(
            p.send(
                security.wrap(0xD0, security.protect(0x30, CLIENT_TITLE, p.next_ic(), dk, AK, get)),
                3,
            )
        ).service_error
        == ServiceError.DECIPHERING_ERROR
    )


def test_stale_counter_in_the_aarq():
    p = Probe()
    p.meter.rx_invocation_counter = 500
    raw = p.send(
        Aarq(
            ApplicationContext.LN_CIPHERED, CLIENT_TITLE, None, None, False,
            security.wrap(0x21, security.protect(0x30, CLIENT_TITLE, 10, EK, AK, InitiateRequest(CONFORMANCE, 0xFFFF).to_bytes())),
        ).to_bytes(),
        3,
    )  # fmt: skip
    assert decode_response(raw) == ExceptionResponse(
        StateError.SERVICE_NOT_ALLOWED, ServiceError.INVOCATION_COUNTER_ERROR, 500
    )
    # The public client can read what the meter expects, and then associate.
    p.aarq(client=16)
    counter = p.get(AttributeDescriptor(1, obis("0.0.43.1.0.255"), 2), client=16).result
    assert counter == axdr.double_long_unsigned(500)
    p.ic = counter.value
    assert accepted(p.aarq(client=3, ciphered=True))


def _hls(p: Probe, client: int = 2) -> Aare:
    aare = p.aarq(client=client, mechanism=Mechanism.HIGH_GMAC, auth=b"C" * 16, ciphered=True)
    assert accepted(aare) and aare.diagnostic == ServiceUserDiagnostic.AUTHENTICATION_REQUIRED
    return aare


def test_hls_gmac_pass_3_and_4():
    p = Probe()
    aare = _hls(p)
    get = GetRequestNormal(0xC1, CLOCK).to_bytes()
    early = p.send(p.cipher(get, 0xC8), 2)
    assert decode_response(early).service_error == ServiceError.OPERATION_NOT_POSSIBLE
    f_stoc = security.gmac_response(CLIENT_TITLE, 7, EK, AK, aare.responding_authentication_value)
    method = MethodDescriptor(15, obis("0.0.40.0.0.255"), 1)
    reply = p.decipher(
        p.send(
            p.cipher(ActionRequestNormal(0xC1, method, axdr.octet_string(f_stoc)).to_bytes(), 0xCB),
            2,
        )
    )
    assert reply.result == DataAccessResult.SUCCESS
    f_ctos = reply.return_parameters.value
    assert (
        security.verify_gmac_response(f_ctos, p.meter.spec.system_title, EK, AK, b"C" * 16)
        is not None
    )
    assert p.decipher(p.send(p.cipher(get, 0xC8), 2)).result.tag == axdr.Tag.OCTET_STRING
    # Replying again once associated is refused.
    again = p.decipher(
        p.send(
            p.cipher(ActionRequestNormal(0xC1, method, axdr.octet_string(f_stoc)).to_bytes(), 0xCB),
            2,
        )
    )
    assert again.result == DataAccessResult.READ_WRITE_DENIED


def test_hls_wrong_reply():
    p = Probe()
    _hls(p)
    method = MethodDescriptor(15, obis("0.0.40.0.0.255"), 1)
    wrong = security.gmac_response(CLIENT_TITLE, 7, EK, AK, b"not the challenge")
    reply = p.decipher(
        p.send(
            p.cipher(ActionRequestNormal(0xC1, method, axdr.octet_string(wrong)).to_bytes(), 0xCB),
            2,
        )
    )
    assert reply.result == DataAccessResult.READ_WRITE_DENIED
    assert any(isinstance(e, AssociationRefused) for e in p.events())
    assert p.meter.last_event(1) == 46
    # The association is gone: anything further is refused until a new AARQ.
    after = decode_response(
        p.send(p.cipher(ActionRequestNormal(0xC1, method, axdr.integer(0)).to_bytes(), 0xCB), 2)
    )
    assert after == ExceptionResponse(
        StateError.SERVICE_NOT_ALLOWED, ServiceError.OPERATION_NOT_POSSIBLE
    )
    _hls(p)
    not_octets = p.decipher(
        p.send(p.cipher(ActionRequestNormal(0xC1, method, axdr.integer(0)).to_bytes(), 0xCB), 2)
    )
    assert not_octets.result == DataAccessResult.TYPE_UNMATCHED


@pytest.mark.parametrize(
    ("desc", "access", "client", "result"),
    [
        (
            AttributeDescriptor(3, obis("1.0.99.99.0.255"), 2),
            None,
            1,
            DataAccessResult.OBJECT_UNDEFINED,
        ),
        (
            AttributeDescriptor(1, obis("1.0.1.8.0.255"), 2),
            None,
            1,
            DataAccessResult.OBJECT_CLASS_INCONSISTENT,
        ),
        (
            AttributeDescriptor(3, obis("1.0.1.8.0.255"), 9),
            None,
            1,
            DataAccessResult.OBJECT_UNAVAILABLE,
        ),
        (
            AttributeDescriptor(15, obis("0.0.40.0.0.255"), 7),
            None,
            1,
            DataAccessResult.READ_WRITE_DENIED,
        ),
        (AttributeDescriptor(7, PROFILE, 2), None, 16, DataAccessResult.OBJECT_UNDEFINED),
        (
            AttributeDescriptor(3, obis("1.0.1.8.0.255"), 2),
            AccessSelection(1, axdr.NULL),
            1,
            DataAccessResult.OTHER_REASON,
        ),
        (
            AttributeDescriptor(7, PROFILE, 2),
            AccessSelection(3, axdr.NULL),
            1,
            DataAccessResult.OTHER_REASON,
        ),
        (
            AttributeDescriptor(7, PROFILE, 2),
            AccessSelection(1, axdr.NULL),
            1,
            DataAccessResult.TYPE_UNMATCHED,
        ),
        (
            AttributeDescriptor(7, PROFILE, 2),
            AccessSelection(2, axdr.structure(axdr.NULL)),
            1,
            DataAccessResult.TYPE_UNMATCHED,
        ),
        (
            AttributeDescriptor(7, PROFILE, 3),
            AccessSelection(2, axdr.NULL),
            1,
            DataAccessResult.OTHER_REASON,
        ),
        (
            AttributeDescriptor(8, obis("0.0.1.0.0.255"), 1),
            AccessSelection(2, axdr.NULL),
            1,
            DataAccessResult.OTHER_REASON,
        ),
    ],
)
def test_get_errors(desc, access, client, result):
    p = Probe()
    p.aarq(
        client=client, **({"mechanism": Mechanism.LOW, "auth": b"secret12"} if client == 32 else {})
    )
    assert p.get(desc, access, client).result == result


def entries(first, last, col_first=1, col_last=0):
    return AccessSelection(
        2,
        axdr.structure(
            axdr.double_long_unsigned(first),
            axdr.double_long_unsigned(last),
            axdr.long_unsigned(col_first),
            axdr.long_unsigned(col_last),
        ),
    )


def by_range(start, end, restricting=None, selected=()):
    clock = restricting or axdr.structure(
        axdr.long_unsigned(8),
        axdr.octet_string(obis("0.0.1.0.0.255")),
        axdr.integer(2),
        axdr.long_unsigned(0),
    )
    return AccessSelection(1, axdr.structure(clock, start, end, axdr.array(list(selected))))


def cosem_time(p: Probe, t: float) -> axdr.Data:
    return axdr.octet_string(p.meter.clock.cosem_bytes(t))


def test_profile_selective_access():
    p = Probe()
    p.aarq()
    count = p.get(AttributeDescriptor(7, PROFILE, 7)).result.value
    assert count == 2 * 96  # the buffer is full: two days of rows
    rows = p.get(AttributeDescriptor(7, PROFILE, 2), entries(1, 5)).result.value
    assert len(rows) == 5 and all(len(r.value) == 6 for r in rows)
    clipped = p.get(
        AttributeDescriptor(7, PROFILE, 2), entries(count - 1, 10_000, 3, 4)
    ).result.value
    assert len(clipped) == 2 and [len(r.value) for r in clipped] == [2, 2]
    assert (
        p.get(AttributeDescriptor(7, PROFILE, 2), entries(0, 1)).result
        == DataAccessResult.OTHER_REASON
    )
    assert (
        p.get(AttributeDescriptor(7, PROFILE, 2), entries(1, 1, 3, 9)).result
        == DataAccessResult.OTHER_REASON
    )
    assert p.get(AttributeDescriptor(7, PROFILE, 2), entries(5, 4)).result.value == []
    end = (NOW // 900) * 900
    day = p.get(
        AttributeDescriptor(7, PROFILE, 2),
        by_range(cosem_time(p, end - 86400 + 1), cosem_time(p, end)),
    ).result.value
    assert len(day) == 96
    energy = axdr.structure(
        axdr.long_unsigned(3),
        axdr.octet_string(obis("1.0.1.8.0.255")),
        axdr.integer(2),
        axdr.long_unsigned(0),
    )
    clock = axdr.structure(
        axdr.long_unsigned(8),
        axdr.octet_string(obis("0.0.1.0.0.255")),
        axdr.integer(2),
        axdr.long_unsigned(0),
    )
    two = p.get(
        AttributeDescriptor(7, PROFILE, 2),
        by_range(cosem_time(p, end - 3600), cosem_time(p, end), selected=[clock, energy]),
    ).result.value
    assert len(two) == 5 and all(len(r.value) == 2 for r in two)
    unknown = axdr.structure(
        axdr.long_unsigned(3),
        axdr.octet_string(obis("1.0.9.8.0.255")),
        axdr.integer(2),
        axdr.long_unsigned(0),
    )
    assert (
        p.get(
            AttributeDescriptor(7, PROFILE, 2),
            by_range(cosem_time(p, end - 3600), cosem_time(p, end), selected=[unknown]),
        ).result
        == DataAccessResult.OTHER_REASON
    )
    assert (
        p.get(
            AttributeDescriptor(7, PROFILE, 2),
            by_range(cosem_time(p, end - 3600), cosem_time(p, end), restricting=energy),
        ).result
        == DataAccessResult.OTHER_REASON
    )
    assert (
        p.get(
            AttributeDescriptor(7, PROFILE, 2), by_range(axdr.unsigned(1), cosem_time(p, end))
        ).result
        == DataAccessResult.TYPE_UNMATCHED
    )
    wildcard = axdr.octet_string(b"\xff" * 12)
    assert (
        p.get(AttributeDescriptor(7, PROFILE, 2), by_range(wildcard, cosem_time(p, end))).result
        == DataAccessResult.TYPE_UNMATCHED
    )
    # Without a deviation a bound is meter local time.
    local = p.meter.clock.cosem(end - 3600)
    naive = axdr.octet_string(local.to_bytes()[:9] + b"\x80\x00\xff")
    assert (
        len(
            p.get(
                AttributeDescriptor(7, PROFILE, 2), by_range(naive, cosem_time(p, end))
            ).result.value
        )
        == 5
    )


def test_block_transfer():
    p = Probe()
    p.aarq(pdu=128)
    whole = Probe()
    whole.aarq()
    expected = axdr.encode(whole.get(AttributeDescriptor(15, obis("0.0.40.0.0.255"), 2)).result)
    first = p.get(AttributeDescriptor(15, obis("0.0.40.0.0.255"), 2))
    assert (
        isinstance(first, GetResponseWithDataBlock)
        and first.block_number == 1
        and not first.last_block
    )
    raw = bytearray(first.raw)
    block = first
    assert decode_response(p.send(GetRequestNext(0xC1, 0).to_bytes())).raw == first.raw  # repeated
    while not block.last_block:
        block = decode_response(p.send(GetRequestNext(0xC1, block.block_number).to_bytes()))
        assert len(p.send(GetRequestNext(0xC1, block.block_number - 1).to_bytes())) <= 128
        raw += block.raw
    assert bytes(raw) == expected
    beyond = decode_response(p.send(GetRequestNext(0xC1, block.block_number + 5).to_bytes()))
    assert beyond.raw == DataAccessResult.LONG_GET_ABORTED
    idle = decode_response(p.send(GetRequestNext(0xC1, 1).to_bytes()))
    assert idle.raw == DataAccessResult.NO_LONG_GET_IN_PROGRESS
    # GET-with-list answers go in blocks too.
    items = tuple((AttributeDescriptor(15, obis("0.0.40.0.0.255"), 2), None) for _ in range(2))
    listed = decode_response(p.send(GetRequestWithList(0xC1, items).to_bytes()))
    assert isinstance(listed, GetResponseWithDataBlock)


def test_without_block_transfer_a_large_answer_fails_cleanly():
    p = Probe()
    p.aarq(initiate=InitiateRequest(Conformance.GET, 128))
    assert (
        p.get(AttributeDescriptor(15, obis("0.0.40.0.0.255"), 2)).result
        == DataAccessResult.OTHER_REASON
    )
    assert (
        p.get(AttributeDescriptor(7, PROFILE, 2), entries(1, 1)).result
        == DataAccessResult.OTHER_REASON
    )


def test_get_with_list():
    p = Probe()
    p.aarq()
    items = (
        (CLOCK, None),
        (AttributeDescriptor(3, obis("1.0.1.8.0.255"), 3), None),
        (AttributeDescriptor(3, obis("9.9.9.9.9.9"), 2), None),
    )
    response = decode_response(p.send(GetRequestWithList(0xC1, items).to_bytes()))
    assert (
        isinstance(response, GetResponseWithList)
        and response.results[2] == DataAccessResult.OBJECT_UNDEFINED
    )
    assert response.results[1] == axdr.structure(axdr.integer(0), axdr.enum(30))


def test_set_normal_list_and_blocks():
    p = Probe()
    p.aarq()
    target = NOW + 3600
    value = cosem_time(p, target)
    assert decode_response(
        p.send(SetRequestNormal(0xC1, CLOCK, value).to_bytes())
    ) == SetResponseNormal(0xC1, DataAccessResult.SUCCESS)
    assert abs(p.meter.clock.now() - target) < 1
    assert p.meter.last_event(0) == 5
    raw = axdr.encode(cosem_time(p, NOW))
    first = SetRequestWithFirstDataBlock(0xC1, CLOCK, False, 1, raw[:5])
    assert decode_response(p.send(first.to_bytes())) == SetResponseDataBlock(0xC1, 1)
    last = SetRequestWithDataBlock(0xC1, True, 2, raw[5:])
    assert decode_response(p.send(last.to_bytes())) == SetResponseLastDataBlock(
        0xC1, DataAccessResult.SUCCESS, 2
    )
    assert abs(p.meter.clock.now() - NOW) < 1
    assert (
        decode_response(p.send(SetRequestWithDataBlock(0xC1, True, 3, b"").to_bytes())).result
        == DataAccessResult.NO_LONG_SET_IN_PROGRESS
    )
    p.send(first.to_bytes())
    assert (
        decode_response(p.send(SetRequestWithDataBlock(0xC1, True, 7, b"").to_bytes())).result
        == DataAccessResult.LONG_SET_ABORTED
    )
    assert (
        decode_response(
            p.send(SetRequestWithFirstDataBlock(0xC1, CLOCK, True, 2, raw).to_bytes())
        ).result
        == DataAccessResult.DATA_BLOCK_NUMBER_INVALID
    )
    assert (
        decode_response(
            p.send(SetRequestWithFirstDataBlock(0xC1, CLOCK, True, 1, b"\x09\x0c").to_bytes())
        ).result
        == DataAccessResult.TYPE_UNMATCHED
    )
    items = (
        (CLOCK, None),
        (AttributeDescriptor(3, obis("1.0.1.8.0.255"), 2), None),
        (CLOCK, AccessSelection(1, axdr.NULL)),
    )
    response = decode_response(
        p.send(SetRequestWithList(0xC1, items, (axdr.unsigned(1), axdr.NULL, axdr.NULL)).to_bytes())
    )
    assert response == SetResponseWithList(
        0xC1,
        (
            DataAccessResult.TYPE_UNMATCHED,
            DataAccessResult.READ_WRITE_DENIED,
            DataAccessResult.OTHER_REASON,
        ),
    )


def test_reader_cannot_write_or_act():
    p = Probe()
    p.aarq(client=32, mechanism=Mechanism.LOW, auth=b"secret12")
    assert (
        decode_response(
            p.send(SetRequestNormal(0xC1, CLOCK, cosem_time(p, NOW)).to_bytes(), 32)
        ).result
        == DataAccessResult.READ_WRITE_DENIED
    )
    disconnect = MethodDescriptor(70, obis("0.0.96.3.10.255"), 1)
    response = decode_response(
        p.send(ActionRequestNormal(0xC1, disconnect, axdr.integer(0)).to_bytes(), 32)
    )
    assert response.result == DataAccessResult.READ_WRITE_DENIED
    assert p.meter.disconnector.output_state


@pytest.mark.parametrize(
    ("method", "params", "result"),
    [
        (
            MethodDescriptor(70, obis("0.0.96.3.10.255"), 9),
            None,
            DataAccessResult.OBJECT_UNAVAILABLE,
        ),
        (MethodDescriptor(70, obis("0.0.96.3.10.254"), 1), None, DataAccessResult.OBJECT_UNDEFINED),
        (
            MethodDescriptor(70, obis("0.0.96.3.10.255"), 1),
            axdr.octet_string(b""),
            DataAccessResult.TYPE_UNMATCHED,
        ),
        (
            MethodDescriptor(3, obis("1.0.1.8.0.255"), 1),
            axdr.integer(0),
            DataAccessResult.READ_WRITE_DENIED,
        ),
        (
            MethodDescriptor(18, obis("0.0.44.0.0.255"), 1),
            axdr.NULL,
            DataAccessResult.TYPE_UNMATCHED,
        ),
        (
            MethodDescriptor(18, obis("0.0.44.0.0.255"), 3),
            axdr.integer(0),
            DataAccessResult.OTHER_REASON,
        ),
        (
            MethodDescriptor(8, obis("0.0.1.0.0.255"), 6),
            axdr.long(5000),
            DataAccessResult.TYPE_UNMATCHED,
        ),
        (
            MethodDescriptor(8, obis("0.0.1.0.0.255"), 4),
            axdr.integer(0),
            DataAccessResult.TEMPORARY_FAILURE,
        ),
    ],
)
def test_action_errors(method, params, result):
    p = Probe()
    p.aarq()
    response = decode_response(p.send(ActionRequestNormal(0xC1, method, params).to_bytes()))
    assert isinstance(response, ActionResponseNormal) and response.result == result


def test_unsupported_and_malformed_services():
    p = Probe()
    p.aarq()
    assert decode_response(p.send(bytes.fromhex("c005c100"))) == ExceptionResponse(
        StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED
    )
    assert decode_response(p.send(bytes.fromhex("c001c10008"))) == ExceptionResponse(
        StateError.SERVICE_NOT_ALLOWED, ServiceError.OTHER_REASON
    )
    assert decode_response(p.send(bytes.fromhex("0b0000"))) == ExceptionResponse(
        StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED
    )


def test_an_internal_error_becomes_an_event_and_an_answer(monkeypatch):
    p = Probe()
    p.aarq()

    def broken(meter: Meter) -> int:
        raise RuntimeError("bug")

    register = p.meter.find(3, obis("1.0.1.8.0.255"))
    monkeypatch.setattr(register, "_value", broken)
    assert (
        decode_response(
            p.send(GetRequestNormal(0xC1, AttributeDescriptor(3, register.ln, 2)).to_bytes())
        ).service_error
        == ServiceError.OTHER_REASON
    )
    assert any(isinstance(e, InternalError) and "bug" in e.detail for e in p.events())


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([1, 16, 3]))
def test_no_apdu_makes_the_server_raise(apdu, client):
    p = Probe()
    p.aarq()
    for raw in (apdu, b"\x60" + apdu, b"\xc0\x01" + apdu, b"\xc8" + apdu, b"\xdb\x08" + apdu):
        p.send(raw, client)
    assert not any(isinstance(e, InternalError) for e in p.events())


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_no_byte_stream_makes_the_connection_raise(data):
    p = Probe()
    p.conn.receive_data(data)
    h = ServerConnection("hdlc", lambda a: p.meter)
    h.receive_data(data)
    h.receive_data(b"\x7e" + data + b"\x7e")
    assert not any(isinstance(e, InternalError) for e in p.events() + h.next_events())


def test_hdlc_connection():
    p = Probe()
    conn = ServerConnection("hdlc", lambda a: p.meter if a == ("hdlc", 1, 17) else None)
    server, client = hdlc.ServerAddress(1, 17).encode(), hdlc.encode_client_address(1)

    def send(control, info=b""):
        out = conn.receive_data(hdlc.Frame(server, client, control, info).to_bytes())
        return [f for item in out for f in hdlc.FrameReader().feed(item.data)]

    assert (
        conn.receive_data(
            hdlc.Frame(hdlc.ServerAddress(1, 18).encode(), client, hdlc.SNRM | hdlc.PF).to_bytes()
        )
        == []
    )
    assert isinstance(conn.next_events()[0], AddressUnknown)
    assert send(hdlc.SNRM | hdlc.PF)[0].kind == hdlc.UA
    aarq = Aarq(
        ApplicationContext.LN, user_information=InitiateRequest(CONFORMANCE, 0xFFFF).to_bytes()
    ).to_bytes()
    (answer,) = send(hdlc.i_control(0, 0), hdlc.LLC_REQUEST + aarq)
    assert accepted(Aare.from_bytes(answer.info[3:]))
    assert send(hdlc.DISC | hdlc.PF)[0].kind == hdlc.UA
    events = conn.next_events()
    assert isinstance(events[0], AssociationAccepted) and isinstance(
        events[-1], AssociationReleased
    )
    bad_client = hdlc.Frame(server, b"\x02\x03", hdlc.SNRM | hdlc.PF).to_bytes()
    assert conn.receive_data(bad_client) == [] and isinstance(conn.next_events()[0], FrameRejected)
    conn.receive_data(b"\x7e\xa0\x07garbage\x7e")
    assert isinstance(conn.next_events()[0], FrameRejected)


def test_connection_loss_releases_associations():
    p = Probe()
    p.aarq()
    p.conn.connection_lost()
    assert AssociationReleased(0, 1) in p.events()
    assert p.conn.receive_data(wrapper.encode(1, 1, b"\x60\x00")) == []


def test_clock_methods():
    p = Probe()
    p.aarq()
    clock = obis("0.0.1.0.0.255")

    def act(method, params=None):
        return decode_response(
            p.send(ActionRequestNormal(0xC1, MethodDescriptor(8, clock, method), params).to_bytes())
        ).result

    p.meter.clock.set_time(NOW + 200)  # 12:10:50
    assert act(1, axdr.integer(0)) == DataAccessResult.SUCCESS
    assert p.meter.clock.now() % 900 < 1
    assert act(6, axdr.long(30)) == DataAccessResult.SUCCESS
    assert 29 <= p.meter.clock.now() % 900 <= 31
    preset = axdr.structure(
        cosem_time(p, NOW), cosem_time(p, NOW - 3600), cosem_time(p, NOW + 3600)
    )
    assert (
        act(5, preset) == DataAccessResult.SUCCESS
        and act(4, axdr.integer(0)) == DataAccessResult.SUCCESS
    )
    assert abs(p.meter.clock.now() - NOW) < 1
    assert act(5, axdr.integer(0)) == DataAccessResult.TYPE_UNMATCHED
    assert act(3, axdr.integer(0)) == DataAccessResult.SUCCESS and p.meter.clock.now() % 60 < 1
    assert act(9) == DataAccessResult.OBJECT_UNAVAILABLE


def test_clock_attributes_and_time_zone_rules():
    p = Probe()
    p.aarq()
    clock = obis("0.0.1.0.0.255")

    def get(a):
        return p.get(AttributeDescriptor(8, clock, a)).result

    def set_(a, v):
        return decode_response(
            p.send(SetRequestNormal(0xC1, AttributeDescriptor(8, clock, a), v).to_bytes())
        ).result

    assert get(3) == axdr.long(-60) and get(7) == axdr.integer(60) and get(8) == axdr.boolean(True)
    assert get(5).value.hex() == "ffff03fe0702000000800 0ff".replace(" ", "")
    assert set_(3, axdr.long(-120)) == DataAccessResult.SUCCESS
    assert p.meter.clock.cosem(NOW).deviation == -120
    assert set_(8, axdr.boolean(False)) == DataAccessResult.SUCCESS
    assert set_(3, axdr.long(5000)) == DataAccessResult.TYPE_UNMATCHED
    assert set_(5, axdr.octet_string(b"\xff" * 12)) == DataAccessResult.TYPE_UNMATCHED
    assert set_(7, axdr.integer(30)) == DataAccessResult.SUCCESS
    assert set_(4, axdr.unsigned(0)) == DataAccessResult.READ_WRITE_DENIED
    assert set_(2, axdr.octet_string(b"\x00" * 3)) == DataAccessResult.TYPE_UNMATCHED
    rule = axdr.octet_string(bytes.fromhex("ffff0408070200000080 00ff".replace(" ", "")))
    assert set_(5, rule) == DataAccessResult.SUCCESS
    assert p.meter.clock.dst_begin.day == 8


def test_wrapper_ports_answer_from_the_right_wport():
    p = Probe()
    raw = p.conn.receive_data(
        wrapper.encode(
            16,
            1,
            Aarq(
                ApplicationContext.LN,
                user_information=InitiateRequest(CONFORMANCE, 0xFFFF).to_bytes(),
            ).to_bytes(),
        )
    )
    (pdu,) = wrapper.WrapperReader().feed(raw[0].data)
    assert (pdu.source, pdu.destination) == (1, 16)
    assert struct.unpack(">H", raw[0].data[:2])[0] == 1
