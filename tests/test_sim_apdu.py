"""ACSE (AARQ/AARE/RLRQ/RLRE) and xDLMS APDUs (drivers/sim/acse.py, xdlms.py)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.sim import axdr, security
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
from drivers.sim.ber import encode_oid, tlv
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
    InitiateRequest,
    InitiateResponse,
    MethodDescriptor,
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
    decode_response,
)

# Built by gurux-dlms: LLS client 32 (password 12345678); HLS-GMAC + suite 0 client 1.
GURUX_AARQ_LLS = bytes.fromhex(
    "6036a1090607608574050801018a0207808b0760857405080201ac0a80083132333435363738"
    "be10040e01000000065f1f0400401e5dffff"
)
GURUX_AARQ_HLS_CIPHERED = bytes.fromhex(
    "605da109060760857405080103a60a040847525831323334358a0207808b0760857405080205"
    "ac128010ccb5891da170247d4133a0bd3980daf1be230421211f30000000016f691874e54018ab"
    "b1a7a099efb3ab130f271844f2ad16729b63"
)
CLOCK = AttributeDescriptor(8, bytes((0, 0, 1, 0, 0, 255)), 2)


def test_parses_gurux_aarqs():
    lls = Aarq.from_bytes(GURUX_AARQ_LLS)
    assert lls.application_context == ApplicationContext.LN
    assert lls.mechanism == Mechanism.LOW and lls.calling_authentication_value == b"12345678"
    assert lls.authentication_required
    initiate = InitiateRequest.from_bytes(lls.user_information)
    assert initiate.client_max_receive_pdu_size == 0xFFFF
    assert (
        initiate.conformance & Conformance.GET
        and initiate.conformance & Conformance.SELECTIVE_ACCESS
    )
    hls = Aarq.from_bytes(GURUX_AARQ_HLS_CIPHERED)
    assert hls.application_context == ApplicationContext.LN_CIPHERED
    assert hls.calling_ap_title == b"GRX12345" and hls.mechanism == Mechanism.HIGH_GMAC
    assert len(hls.calling_authentication_value) == 16
    protected = security.parse_protected(hls.user_information)
    assert protected.plain_tag == 0x01 and protected.invocation_counter == 1
    sc, ic, plain = security.unprotect(
        protected.payload, b"GRX12345", bytes(range(16)), bytes(range(16, 32))
    )
    assert (sc, ic) == (0x30, 1) and InitiateRequest.from_bytes(plain).dlms_version == 6


def test_acse_round_trips():
    aarq = Aarq(
        ApplicationContext.LN_CIPHERED,
        b"ABCDEFGH",
        Mechanism.HIGH_GMAC,
        b"c" * 16,
        True,
        b"\x21\x00",
    )
    assert Aarq.from_bytes(aarq.to_bytes()) == aarq
    aare = Aare(
        ApplicationContext.LN,
        AssociationResult.ACCEPTED,
        ServiceUserDiagnostic.AUTHENTICATION_REQUIRED,
        b"OHS\x00\x00\x00\x00\x01",
        Mechanism.HIGH_GMAC,
        b"s" * 16,
        InitiateResponse(Conformance.GET, 1024).to_bytes(),
    )
    assert Aare.from_bytes(aare.to_bytes()) == aare
    for pdu in (
        ReleaseRequest(0, b"\x01\x00"),
        ReleaseRequest(None),
        ReleaseResponse(0),
        ReleaseResponse(1, b"\x08"),
    ):
        assert type(pdu).from_bytes(pdu.to_bytes()) == pdu


def test_aare_is_what_strict_clients_expect():
    # RLRE with the outer length of its whole content (the gurux server gets this wrong).
    assert ReleaseResponse(0).to_bytes().hex() == "6303800100"
    rejected = Aare(ApplicationContext.LN, AssociationResult.REJECTED_PERMANENT, 13).to_bytes()
    assert rejected.hex() == "6117a109060760857405080101a203020101a305a10302010d"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x60",
        b"\x61\x00",  # an AARE where an AARQ is expected
        b"\x60\x00",  # no application context
        bytes.fromhex("6005a103020100"),  # context is not an OID
        bytes.fromhex("6009a1070605608574050801"),  # truncated OID value
        bytes.fromhex("6007a605a1030401ff"),  # AP title not an OCTET STRING... and no context
        bytes.fromhex("600cac0a82083132333435363738"),  # auth value of an unknown choice
        bytes.fromhex("6006be04a0020000"),  # user-information not an OCTET STRING
    ],
)
def test_malformed_aarq(raw):
    with pytest.raises(AcseError):
        Aarq.from_bytes(raw)


def test_foreign_context_and_mechanism_are_reported_not_raised():
    context = tlv(0xA1, tlv(0x06, encode_oid((2, 16, 756, 5, 8, 1, 9))))
    mechanism = tlv(0x8B, encode_oid((1, 2, 3)))
    aarq = Aarq.from_bytes(tlv(0x60, context + mechanism))
    assert aarq.application_context == -1 and aarq.mechanism == -1
    sn = Aarq.from_bytes(tlv(0x60, tlv(0xA1, tlv(0x06, encode_oid((2, 16, 756, 5, 8, 1, 2))))))
    assert sn.application_context == ApplicationContext.SN


@pytest.mark.parametrize(
    "raw", [b"", b"\x62\x03\x80\x02\x00", b"\x63\x05\x80\x01\x00\xbe\x00", b"\x61\x00"]
)
def test_malformed_release(raw):
    with pytest.raises(AcseError):
        ReleaseRequest.from_bytes(raw) if raw[:1] != b"\x63" else ReleaseResponse.from_bytes(raw)


def test_initiate_pdus():
    gurux = bytes.fromhex("01000000065f1f0400401e5dffff")
    req = InitiateRequest.from_bytes(gurux)
    assert req.to_bytes() == gurux
    full = InitiateRequest(Conformance.GET | Conformance.ACTION, 512, 6, b"k" * 16, False, 3)
    assert InitiateRequest.from_bytes(full.to_bytes()) == full
    resp = InitiateResponse(Conformance.GET | Conformance.SET, 0x400)
    assert resp.to_bytes().hex() == "0800065f1f040000001804000007"
    assert InitiateResponse.from_bytes(resp.to_bytes()) == resp
    for bad in (
        b"",
        b"\x08",
        gurux[:-1],
        gurux + b"\x00",
        b"\x01\x00\x00\x00\x06\x5f\x1f\x03\x00\x00\x00\x00\xff\xff",
    ):
        with pytest.raises(XdlmsError):
            InitiateRequest.from_bytes(bad)
    with pytest.raises(XdlmsError):
        InitiateResponse.from_bytes(b"\x08\x00\x06")
    err = ConfirmedServiceErrorPdu(ConfirmedService.INITIATE_ERROR, ServiceErrorKind.INITIATE, 1)
    assert err.to_bytes().hex() == "0e010601"
    assert ConfirmedServiceErrorPdu.from_bytes(err.to_bytes()) == err
    with pytest.raises(XdlmsError):
        ConfirmedServiceErrorPdu.from_bytes(b"\x0e\x09\x06\x01")


REQUESTS = [
    GetRequestNormal(0xC1, CLOCK),
    GetRequestNormal(
        0xC1,
        CLOCK,
        AccessSelection(2, axdr.structure(*(axdr.double_long_unsigned(i) for i in (1, 2, 3, 4)))),
    ),
    GetRequestNext(0xC1, 7),
    GetRequestWithList(
        0xC1, ((CLOCK, None), (AttributeDescriptor(3, b"\x01\x00\x01\x08\x00\xff", 3), None))
    ),
    SetRequestNormal(0xC1, CLOCK, axdr.octet_string(b"\x00" * 12)),
    SetRequestWithFirstDataBlock(0xC1, CLOCK, False, 1, b"\x09\x0c\x00"),
    SetRequestWithDataBlock(0xC1, True, 2, b"\x00" * 11),
    SetRequestWithList(0xC1, ((CLOCK, None),), (axdr.NULL,)),
    ActionRequestNormal(
        0xC1, MethodDescriptor(70, b"\x00\x00\x60\x03\x0a\xff", 1), axdr.integer(0)
    ),
    ActionRequestNormal(0xC1, MethodDescriptor(70, b"\x00\x00\x60\x03\x0a\xff", 2)),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: type(r).__name__)
def test_request_round_trip(request_):
    assert decode_request(request_.to_bytes()) == request_


def test_known_request_bytes():
    # gurux's GET of the clock time: C0 01 C1 0008 0000010000FF 02 00
    assert GetRequestNormal(0xC1, CLOCK).to_bytes().hex() == "c001c100080000010000ff0200"


RESPONSES = [
    GetResponseNormal(0xC1, axdr.unsigned(5)),
    GetResponseNormal(0xC1, DataAccessResult.OBJECT_UNDEFINED),
    GetResponseWithDataBlock(0xC1, False, 1, b"\x01\x02"),
    GetResponseWithDataBlock(0xC1, True, 9, DataAccessResult.LONG_GET_ABORTED),
    GetResponseWithList(0xC1, (axdr.NULL, DataAccessResult.READ_WRITE_DENIED)),
    SetResponseNormal(0xC1, DataAccessResult.SUCCESS),
    SetResponseDataBlock(0xC1, 3),
    SetResponseLastDataBlock(0xC1, DataAccessResult.TYPE_UNMATCHED, 4),
    SetResponseWithList(0xC1, (DataAccessResult.SUCCESS, DataAccessResult.OTHER_REASON)),
    ActionResponseNormal(0xC1, DataAccessResult.SUCCESS),
    ActionResponseNormal(0xC1, DataAccessResult.SUCCESS, axdr.octet_string(b"f" * 17)),
    ActionResponseNormal(0xC1, DataAccessResult.READ_WRITE_DENIED, DataAccessResult.OTHER_REASON),
    ExceptionResponse(StateError.SERVICE_NOT_ALLOWED, ServiceError.INVOCATION_COUNTER_ERROR, 42),
    ExceptionResponse(StateError.SERVICE_UNKNOWN, ServiceError.SERVICE_NOT_SUPPORTED),
]


@pytest.mark.parametrize("response", RESPONSES, ids=lambda r: type(r).__name__)
def test_response_round_trip(response):
    assert decode_response(response.to_bytes()) == response


def test_exception_response_bytes():
    assert (
        ExceptionResponse(
            StateError.SERVICE_NOT_ALLOWED, ServiceError.INVOCATION_COUNTER_ERROR, 0x10
        )
        .to_bytes()
        .hex()
        == "d8010600000010"
    )


@pytest.mark.parametrize(
    "hex_",
    [
        "c0",  # too short
        "c00100",  # truncated descriptor
        "c001c100080000010000ff02",  # no access-selection flag
        "c001c100080000010000ff020102",  # access-selection without parameters
        "c002c10000",  # truncated block number
        "c003c102",  # list count without descriptors
        "c101c100080000010000ff0200",  # set without value
        "c102c100080000010000ff020001000000",  # set first block without raw data
        "c301c10046000060030aff01",  # action without parameters flag
        "c001c100080000010000ff020000",  # trailing octet
        "c404c100",  # not a request
        "c104c10100080000010000ff02000101",  # set-with-list: 1 descriptor, value list missing
    ],
)
def test_malformed_requests(hex_):
    with pytest.raises(XdlmsError):
        decode_request(bytes.fromhex(hex_))


def test_unimplemented_services_are_recognised():
    assert decode_request(bytes.fromhex("c005c100")) == UnsupportedRequest(0xC0, 5, 0xC1)
    assert decode_request(bytes.fromhex("c304c100")) == UnsupportedRequest(0xC3, 4, 0xC1)


@settings(max_examples=80)
@given(st.binary(max_size=60))
def test_decoders_raise_only_their_errors(data):
    for fn in (decode_request, decode_response, InitiateRequest.from_bytes):
        with contextlib.suppress(XdlmsError):
            fn(data)
    for fn in (Aarq.from_bytes, ReleaseRequest.from_bytes):
        with contextlib.suppress(AcseError):
            fn(b"\x60" + data if fn is Aarq.from_bytes else b"\x62" + data)
