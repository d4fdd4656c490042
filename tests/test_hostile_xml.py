"""Every hostile or broken input is refused with a documented code: as a CimError from
the parser, and as a ResponseMessage with Result FAILED from cim.messages.respond."""

from __future__ import annotations

import contextlib
import http.server
import io
import threading
from collections.abc import Iterator

import pytest
from lxml import etree

from cim import namespaces as ns
from cim.errors import CimError, ErrorCode
from cim.messages import respond
from cim.xmlsafe import XmlLimits, iterparse_safe, parse_bytes

HEADER = b"<Header><Verb>get</Verb><Noun>MeterReadings</Noun><MessageID>req-1</MessageID></Header>"


def _message(body: bytes = b"", header: bytes = HEADER) -> bytes:
    return (
        b'<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message">'
        + header
        + body
        + b"</RequestMessage>"
    )


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header><Verb>get</Verb>
<Noun>&lol9;</Noun></Header></RequestMessage>"""

QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "'
    + b"x" * 50_000
    + b'">]><RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header><Verb>get</Verb><Noun>'
    + b"&a;" * 50_000
    + b"</Noun></Header></RequestMessage>"
)

XXE_FILE = (
    b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    + _message(header=b"<Header><Verb>get</Verb><Noun>&x;</Noun></Header>")
)

EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE m SYSTEM "file:///etc/passwd">' + _message()

DEEP = _message(b"<Payload>" + b"<a>" * 300 + b"</a>" * 300 + b"</Payload>")

LATIN1_AS_UTF8 = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header><Verb>get</Verb>'
    "<Noun>MeterReadings</Noun><Comment>Zählerstand</Comment></Header></RequestMessage>"
).encode("latin-1")

CASES = {
    "not xml": (b"this is not XML", ErrorCode.NOT_WELL_FORMED),
    "empty": (b"", ErrorCode.NOT_WELL_FORMED),
    "truncated": (_message()[:-10], ErrorCode.NOT_WELL_FORMED),
    "wrong encoding": (LATIN1_AS_UTF8, ErrorCode.BAD_ENCODING),
    "xxe file": (XXE_FILE, ErrorCode.FORBIDDEN_XML),
    "billion laughs": (BILLION_LAUGHS, ErrorCode.FORBIDDEN_XML),
    "quadratic blowup": (QUADRATIC, ErrorCode.FORBIDDEN_XML),
    "external dtd": (EXTERNAL_DTD, ErrorCode.FORBIDDEN_XML),
    "undeclared entity": (_message(b"<Payload>&x;</Payload>"), ErrorCode.FORBIDDEN_XML),
    "too deep": (DEEP, ErrorCode.TOO_DEEP),
    "missing verb": (
        _message(header=b"<Header><Noun>MeterReadings</Noun></Header>"),
        ErrorCode.MISSING_VERB,
    ),
    "missing noun": (_message(header=b"<Header><Verb>get</Verb></Header>"), ErrorCode.MISSING_NOUN),
    "missing header": (_message(header=b""), ErrorCode.MISSING_VERB),
    "unknown noun": (
        _message(header=b"<Header><Verb>get</Verb><Noun>CustomerAgreements</Noun></Header>"),
        ErrorCode.UNKNOWN_NOUN,
    ),
    "unknown verb": (
        _message(header=b"<Header><Verb>fetch</Verb><Noun>MeterReadings</Noun></Header>"),
        ErrorCode.UNKNOWN_VERB,
    ),
    "wrong namespace": (
        b'<RequestMessage xmlns="http://example.com/message">' + HEADER + b"</RequestMessage>",
        ErrorCode.UNKNOWN_MESSAGE_ROOT,
    ),
    "no namespace": (
        b"<RequestMessage>" + HEADER + b"</RequestMessage>",
        ErrorCode.UNKNOWN_MESSAGE_ROOT,
    ),
    "bad header date": (
        _message(
            header=b"<Header><Verb>get</Verb><Noun>MeterReadings</Noun><Timestamp>yesterday</Timestamp></Header>"
        ),
        ErrorCode.BAD_HEADER_VALUE,
    ),
    "bad request date": (
        _message(b"<Request><StartTime>2024-02-30T00:00:00Z</StartTime></Request>"),
        ErrorCode.BAD_HEADER_VALUE,
    ),
    "user without UserID": (
        _message(
            header=b"<Header><Verb>get</Verb><Noun>MeterReadings</Noun><User><Organization>x</Organization></User></Header>"
        ),
        ErrorCode.BAD_HEADER_VALUE,
    ),
    "replay detection without Created": (
        _message(
            header=b"<Header><Verb>get</Verb><Noun>MeterReadings</Noun><ReplayDetection><Nonce>n</Nonce></ReplayDetection></Header>"
        ),
        ErrorCode.BAD_HEADER_VALUE,
    ),
    "option without name": (
        _message(b"<Request><Option><value>1</value></Option></Request>"),
        ErrorCode.BAD_HEADER_VALUE,
    ),
    "response without Result": (
        b'<ResponseMessage xmlns="http://iec.ch/TC57/2011/schema/message">'
        + HEADER
        + b"<Reply><Error><code>0.0</code></Error></Reply></ResponseMessage>",
        ErrorCode.MISSING_ELEMENT,
    ),
    "bad payload date": (
        _message(
            b'<Payload><MeterReadings xmlns="http://iec.ch/TC57/2011/MeterReadings#"><MeterReading>'
            b"<Readings><timeStamp>2024-02-30T00:00:00Z</timeStamp><value>1</value>"
            b'<ReadingType ref="0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"/></Readings>'
            b"</MeterReading></MeterReadings></Payload>",
            header=b"<Header><Verb>created</Verb><Noun>MeterReadings</Noun></Header>",
        ),
        ErrorCode.BAD_DATETIME,
    ),
    "bad ReadingType code": (
        _message(
            b'<Payload><MeterReadings xmlns="http://iec.ch/TC57/2011/MeterReadings#"><MeterReading>'
            b"<Readings><timeStamp>2024-02-01T00:00:00Z</timeStamp><value>1</value>"
            b'<ReadingType ref="0.0.0.1.1.1.999.0.0.0.0.0.0.0.0.3.72.0"/></Readings>'
            b"</MeterReading></MeterReadings></Payload>",
            header=b"<Header><Verb>created</Verb><Noun>MeterReadings</Noun></Header>",
        ),
        ErrorCode.BAD_READING_TYPE,
    ),
    "non-numeric reading value": (
        _message(
            b'<Payload><MeterReadings xmlns="http://iec.ch/TC57/2011/MeterReadings#"><MeterReading>'
            b"<Readings><timeStamp>2024-02-01T00:00:00Z</timeStamp><value>12,5</value>"
            b'<ReadingType ref="0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"/></Readings>'
            b"</MeterReading></MeterReadings></Payload>",
            header=b"<Header><Verb>created</Verb><Noun>MeterReadings</Noun></Header>",
        ),
        ErrorCode.BAD_VALUE,
    ),
    "bad boolean": (
        _message(
            header=b"<Header><Verb>get</Verb><Noun>MeterReadings</Noun><AsyncReplyFlag>yes</AsyncReplyFlag></Header>"
        ),
        ErrorCode.BAD_HEADER_VALUE,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_with_documented_code(name: str) -> None:
    data, code = CASES[name]
    answer = etree.fromstring(respond(data, lambda parsed: pytest.fail("handler must not run")))
    m = f"{{{ns.MESSAGE}}}"
    assert answer.tag == m + "ResponseMessage"
    assert answer.findtext(f"{m}Header/{m}Verb") == "reply"
    assert answer.findtext(f"{m}Reply/{m}Result") == "FAILED"
    assert answer.findtext(f"{m}Reply/{m}Error/{m}code") == code.code, answer.findtext(
        f"{m}Reply/{m}Error/{m}reason"
    )
    reason = answer.findtext(f"{m}Reply/{m}Error/{m}reason") or ""
    assert reason and "Traceback" not in reason
    assert b"root:" not in etree.tostring(answer)  # nothing of /etc/passwd leaked


def test_failure_reply_is_correlated_to_the_request() -> None:
    data = _message(
        header=b"<Header><Verb>get</Verb><Noun>MeterReadings</Noun><Timestamp>bad</Timestamp>"
        b"<MessageID>req-42</MessageID></Header>"
    )
    answer = etree.fromstring(respond(data, lambda parsed: pytest.fail("must not run")))
    m = f"{{{ns.MESSAGE}}}"
    assert answer.findtext(f"{m}Header/{m}CorrelationID") == "req-42"
    assert answer.findtext(f"{m}Header/{m}Noun") == "MeterReadings"


def test_oversized_is_refused_before_parsing() -> None:
    data = _message(b"<Payload>" + b"<x/>" * 1000 + b"</Payload>")
    with pytest.raises(CimError) as info:
        parse_bytes(data, XmlLimits(max_bytes=1000))
    assert info.value.error is ErrorCode.TOO_LARGE
    answer = respond(
        data, lambda parsed: pytest.fail("must not run"), limits=XmlLimits(max_bytes=1000)
    )
    assert ErrorCode.TOO_LARGE.code.encode() in answer


def test_depth_limit_is_configurable() -> None:
    data = b"<a>" * 10 + b"</a>" * 10
    parse_bytes(data, XmlLimits(max_depth=10))
    with pytest.raises(CimError) as info:
        parse_bytes(data, XmlLimits(max_depth=9))
    assert info.value.error is ErrorCode.TOO_DEEP


def test_str_input_is_refused() -> None:
    with pytest.raises(CimError) as info:
        parse_bytes("<a/>")  # type: ignore[arg-type]
    assert info.value.error is ErrorCode.BAD_ENCODING


@pytest.fixture
def recording_http_server() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'<!ENTITY leak "fetched">')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()


def test_network_xxe_and_external_dtd_never_fetch(
    recording_http_server: tuple[str, list[str]],
) -> None:
    base, hits = recording_http_server
    documents = [
        f'<!DOCTYPE m [<!ENTITY x SYSTEM "{base}/entity">]><m>&x;</m>'.encode(),
        f'<!DOCTYPE m SYSTEM "{base}/dtd"><m/>'.encode(),
        f'<!DOCTYPE m [<!ENTITY % p SYSTEM "{base}/param"> %p;]><m>&leak;</m>'.encode(),
        f'<m xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="{base}/xinclude"/></m>'.encode(),
    ]
    for document in documents:
        with contextlib.suppress(CimError):
            parse_bytes(document)
        with contextlib.suppress(CimError):
            list(iterparse_safe(io.BytesIO(document)))
    assert hits == []


@pytest.mark.parametrize(
    "name",
    ["xxe file", "billion laughs", "quadratic blowup", "external dtd", "too deep", "not xml"],
)
def test_streaming_parser_refuses_the_same(name: str) -> None:
    data, code = CASES[name]
    with pytest.raises(CimError) as info:
        list(iterparse_safe(io.BytesIO(data)))
    assert info.value.error is code


def test_streaming_size_cap() -> None:
    data = _message(b"<Payload>" + b"<x/>" * 10_000 + b"</Payload>")
    with pytest.raises(CimError) as info:
        list(iterparse_safe(io.BytesIO(data), limits=XmlLimits(max_bytes=4096)))
    assert info.value.error is ErrorCode.TOO_LARGE


def test_limits_from_the_environment() -> None:
    limits = XmlLimits.from_env({"OPENHES_XML_MAX_BYTES": "1000", "OPENHES_XML_MAX_DEPTH": "8"})
    assert limits == XmlLimits(max_bytes=1000, max_depth=8)
    assert XmlLimits.from_env({}) == XmlLimits()
    for bad in ("0", "-5", "lots", "1e6"):
        with pytest.raises(ValueError, match="OPENHES_XML_MAX_BYTES"):
            XmlLimits.from_env({"OPENHES_XML_MAX_BYTES": bad})
