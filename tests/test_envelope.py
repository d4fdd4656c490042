"""IEC 61968-100 envelope: round trips, tolerant reading, strict writing."""

from __future__ import annotations

import base64
import gzip
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from cim import namespaces as ns
from cim.envelope import (
    Header,
    Identifier,
    Message,
    MessageKind,
    Option,
    Property,
    ReplayDetection,
    Reply,
    ReplyError,
    Request,
    Result,
    User,
    Verb,
    classify_root,
)
from cim.errors import CimError, ErrorCode
from cim.messages import emit_message, parse_message

# XML 1.0 text: no control characters, no surrogates; CR is normalised by parsers.
xml_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\r"),
    min_size=1,
    max_size=20,
).filter(lambda s: s == s.strip() and s.strip())
moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.replace(microsecond=0, tzinfo=UTC)
)
optional = st.one_of(st.none(), xml_text)

headers = st.builds(
    Header,
    verb=st.sampled_from([v.value for v in Verb]),
    noun=st.sampled_from(["MeterReadings", "EndDeviceControls", "EndDeviceEvents"]),
    revision=optional,
    replay_detection=st.one_of(st.none(), st.builds(ReplayDetection, xml_text, moments)),
    context=optional,
    timestamp=st.one_of(st.none(), moments),
    source=optional,
    async_reply_flag=st.one_of(st.none(), st.booleans()),
    reply_address=optional,
    ack_required=st.one_of(st.none(), st.booleans()),
    user=st.one_of(st.none(), st.builds(User, xml_text, optional)),
    message_id=optional,
    correlation_id=optional,
    comment=optional,
    properties=st.lists(st.builds(Property, xml_text, optional), max_size=3),
)
identifiers = st.builds(
    Identifier,
    xml_text,
    id_type=optional,
    id_authority=optional,
    kind=st.one_of(st.none(), st.sampled_from(["name", "uuid", "transaction", "other"])),
)
requests = st.builds(
    Request,
    start_time=st.one_of(st.none(), moments),
    end_time=st.one_of(st.none(), moments),
    options=st.lists(st.builds(Option, xml_text, optional), max_size=3),
    ids=st.lists(identifiers, max_size=3),
)
replies = st.builds(
    Reply,
    result=st.sampled_from(list(Result)),
    errors=st.lists(
        st.builds(
            ReplyError,
            code=st.sampled_from([e.code for e in ErrorCode]),
            level=st.sampled_from(["INFORM", "WARNING", "FATAL", "CATASTROPHIC"]),
            reason=optional,
            id=st.one_of(st.none(), identifiers),
        ),
        max_size=3,
    ),
    ids=st.lists(identifiers, max_size=2),
)


def _round_trip(message: Message) -> Message:
    return parse_message(emit_message(message), require_served_noun=False).message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers, request=requests)
def test_request_message_round_trip(header: Header, request: Request) -> None:
    message = Message(MessageKind.REQUEST, header, request=request)
    assert _round_trip(message) == message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=headers, reply=replies)
def test_response_message_round_trip(header: Header, reply: Reply) -> None:
    message = Message(MessageKind.RESPONSE, header, reply=reply)
    assert _round_trip(message) == message


def test_writes_2013_namespace_and_xsd_order() -> None:
    header = Header(
        "create", "EndDeviceControls", message_id="m1", timestamp=datetime(2024, 1, 1, tzinfo=UTC)
    )
    data = emit_message(Message(MessageKind.REQUEST, header, request=Request()))
    root = etree.fromstring(data)
    assert root.tag == f"{{{ns.MESSAGE}}}RequestMessage"
    assert [etree.QName(c).localname for c in root[0]] == ["Verb", "Noun", "Timestamp", "MessageID"]
    assert b"2024-01-01T00:00:00Z" in data


def test_reads_prestandard_www_namespace() -> None:
    data = (
        b'<RequestMessage xmlns="http://www.iec.ch/TC57/2011/schema/message">'
        b"<Header><Verb>get</Verb><Noun>MeterReadings</Noun></Header></RequestMessage>"
    )
    message = parse_message(data).message
    assert (message.kind, message.verb, message.noun) == (
        MessageKind.REQUEST,
        "get",
        "MeterReadings",
    )


def test_reads_per_noun_wrapper_in_soap() -> None:
    data = b"""<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:edc="http://iec.ch/TC57/2011/EndDeviceControlsMessage"
        xmlns:msg="http://iec.ch/TC57/2011/schema/message">
      <soapenv:Body><edc:CreateEndDeviceControls>
        <edc:Header><msg:Verb>create</msg:Verb><msg:Noun>EndDeviceControls</msg:Noun>
          <msg:MessageID>abc</msg:MessageID></edc:Header>
      </edc:CreateEndDeviceControls></soapenv:Body></soapenv:Envelope>"""
    message = parse_message(data).message
    assert message.wrapper == "CreateEndDeviceControls"
    assert message.kind is MessageKind.REQUEST
    assert message.header is not None and message.header.message_id == "abc"


def test_wrapper_form_is_written_in_wrapper_namespace() -> None:
    header = Header("created", "MeterReadings")
    message = Message(MessageKind.EVENT, header, wrapper="CreatedMeterReadings")
    root = etree.fromstring(emit_message(message))
    assert root.tag == "{http://iec.ch/TC57/2011/MeterReadingsMessage}CreatedMeterReadings"
    assert root[0].tag == "{http://iec.ch/TC57/2011/MeterReadingsMessage}Header"
    assert root[0][0].tag == f"{{{ns.MESSAGE}}}Verb"
    assert _round_trip(message) == message


def test_verb_case_variant_is_read_with_warning() -> None:
    data = (
        b'<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message">'
        b"<Header><Verb>Get</Verb><Noun>MeterReadings</Noun></Header></RequestMessage>"
    )
    parsed = parse_message(data)
    assert parsed.message.verb == "get"
    assert any("Get" in w for w in parsed.warnings)


def test_vendor_header_extension_is_a_warning_not_an_error() -> None:
    data = (
        b'<EventMessage xmlns="http://iec.ch/TC57/2011/schema/message" xmlns:v="urn:vendor">'
        b"<Header><Verb>created</Verb><Noun>MeterReadings</Noun>"
        b"<v:QOSLevel>High</v:QOSLevel></Header></EventMessage>"
    )
    parsed = parse_message(data)
    assert parsed.message.kind is MessageKind.EVENT
    assert any("QOSLevel" in w for w in parsed.warnings)


def test_offsets_are_kept() -> None:
    tz = timezone(timedelta(hours=8))
    header = Header("created", "MeterReadings", timestamp=datetime(2024, 5, 1, 8, 0, tzinfo=tz))
    back = _round_trip(Message(MessageKind.EVENT, header))
    assert back.header is not None and back.header.timestamp == header.timestamp
    assert back.header.timestamp.utcoffset() == timedelta(hours=8)


def test_error_path_travels_in_details_because_xpath_is_a_qname() -> None:
    reply = Reply(Result.FAILED, [ReplyError("2.2", "FATAL", "bad date", xpath="/A/B[2]")])
    data = emit_message(
        Message(MessageKind.RESPONSE, Header("reply", "MeterReadings"), reply=reply)
    )
    root = etree.fromstring(data)
    error = root.find(f"{{{ns.MESSAGE}}}Reply/{{{ns.MESSAGE}}}Error")
    assert error is not None
    assert error.findtext(f"{{{ns.MESSAGE}}}details") == "at /A/B[2]"
    assert error.find(f"{{{ns.MESSAGE}}}xpath") is None


def test_compressed_payload_is_decoded() -> None:
    inner = b'<EndDeviceEvents xmlns="http://iec.ch/TC57/2011/EndDeviceEvents#"/>'
    blob = base64.b64encode(gzip.compress(inner)).decode()
    data = (
        '<EventMessage xmlns="http://iec.ch/TC57/2011/schema/message">'
        "<Header><Verb>created</Verb><Noun>EndDeviceEvents</Noun></Header>"
        f"<Payload><Compressed>{blob}</Compressed><Format>XML</Format></Payload></EventMessage>"
    ).encode()
    payload = parse_message(data).message.payload
    assert payload is not None and payload.compressed
    assert payload.document is not None


@pytest.mark.parametrize(
    ("compressed", "code"),
    [
        ("not base64!!", ErrorCode.BAD_COMPRESSED_PAYLOAD),
        (base64.b64encode(b"plain text, not gzip").decode(), ErrorCode.BAD_COMPRESSED_PAYLOAD),
        (base64.b64encode(gzip.compress(b"<not-closed>")).decode(), ErrorCode.NOT_WELL_FORMED),
        (
            base64.b64encode(
                gzip.compress(b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>')
            ).decode(),
            ErrorCode.FORBIDDEN_XML,
        ),
    ],
)
def test_bad_compressed_payload(compressed: str, code: ErrorCode) -> None:
    data = (
        '<EventMessage xmlns="http://iec.ch/TC57/2011/schema/message">'
        "<Header><Verb>created</Verb><Noun>EndDeviceEvents</Noun></Header>"
        f"<Payload><Compressed>{compressed}</Compressed></Payload></EventMessage>"
    ).encode()
    with pytest.raises(CimError) as info:
        parse_message(data)
    assert info.value.error is code


def test_compressed_bomb_is_capped() -> None:
    from cim.envelope import decompress_payload

    bomb = gzip.compress(b"<r>" + b" " * (4 * 1024 * 1024) + b"</r>")
    element = etree.Element("Compressed")
    element.text = base64.b64encode(bomb).decode()
    with pytest.raises(CimError) as info:
        decompress_payload(element, max_bytes=1024 * 1024)
    assert info.value.error is ErrorCode.TOO_LARGE


def test_classify_root_refuses_foreign_roots() -> None:
    for xml in (
        b"<foo/>",
        b'<RequestMessage xmlns="urn:other"/>',
        b'<Bogus xmlns="http://iec.ch/TC57/2011/schema/message"/>',
    ):
        with pytest.raises(CimError) as info:
            classify_root(etree.fromstring(xml))
        assert info.value.error is ErrorCode.UNKNOWN_MESSAGE_ROOT
