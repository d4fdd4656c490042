"""Tests of cim.validation: schema choice, issue reporting, envelope mode, the offline
package-local resolver and the CLI entry point."""

from __future__ import annotations

import ast
import os
import threading
import time
from pathlib import Path

import pytest
from lxml import etree

import schemas
from cim import validation
from cim.errors import CimError, ErrorCode
from cim.validation import (
    SchemaSet,
    ValidationIssue,
    assert_valid,
    document_element,
    element_path,
    validate,
    validate_bytes,
    validate_file,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "cim-fixtures"
if not FIXTURES.is_dir():
    FIXTURES = Path("/work/shared/cim-fixtures")
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(), reason=f"public CIM fixtures not found at {FIXTURES}"
)

MSG = "http://iec.ch/TC57/2011/schema/message"
MR = "http://iec.ch/TC57/2011/MeterReadings#"
GMR = "http://iec.ch/TC57/2011/GetMeterReadings#"
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"

RT = '<ReadingType ref="0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"/>'


def interval_reading(stamp: str) -> str:
    return f"<IntervalReadings><timeStamp>{stamp}</timeStamp><value>1.0</value></IntervalReadings>"


def meter_readings(bad_stamp: str = "2024-01-01T00:45:00Z") -> str:
    """Two MeterReadings; the second has two IntervalBlocks, the first of which holds
    three IntervalReadings; the third timeStamp is ``bad_stamp``. One element a line."""
    readings = "\n".join(
        interval_reading(s) for s in ("2024-01-01T00:15:00Z", "2024-01-01T00:30:00Z", bad_stamp)
    )
    return f"""<MeterReadings xmlns="{MR}">
<MeterReading>
<Meter><mRID>m-1</mRID></Meter>
</MeterReading>
<MeterReading>
<IntervalBlocks>
{readings}
{RT}
</IntervalBlocks>
<IntervalBlocks>
{interval_reading("2024-01-01T00:15:00Z")}
{RT}
</IntervalBlocks>
</MeterReading>
</MeterReadings>"""


def parse(text: str) -> etree._Element:
    return etree.fromstring(text.encode())


def line_of(text: str, needle: str) -> int:
    return next(number for number, line in enumerate(text.splitlines(), 1) if needle in line)


BAD_PATH = "/MeterReadings/MeterReading[2]/IntervalBlocks[1]/IntervalReadings[3]/timeStamp"


# --------------------------------------------------------------------------- issues


def test_valid_payload_has_no_issues():
    assert validate(parse(meter_readings())) == []


def test_invalid_payload_reports_line_and_path():
    text = meter_readings("not-a-time")
    issues = validate(parse(text))
    assert len(issues) == 1
    (issue,) = issues
    assert isinstance(issue, ValidationIssue)
    assert issue.path == BAD_PATH
    expected_line = line_of(text, "not-a-time")
    assert issue.line == expected_line
    assert "xs:dateTime" in issue.message and "not-a-time" in issue.message
    assert issue.schema == "MeterReadings.xsd"
    assert str(issue).startswith(f"line {expected_line}: {BAD_PATH}: ")


def test_missing_required_element_points_at_parent():
    doc = parse(
        f'<MeterReadings xmlns="{MR}"><MeterReading><Readings><value>1</value>'
        "</Readings></MeterReading></MeterReadings>"
    )
    (issue,) = validate(doc)
    assert issue.path == "/MeterReadings/MeterReading/Readings"
    assert "Missing child element" in issue.message
    assert issue.line == 1


def test_several_issues_are_all_reported():
    doc = parse(
        f'<MeterReadings xmlns="{MR}"><MeterReading>'
        f"<Readings><timeStamp>x</timeStamp>{RT}</Readings>"
        f"<Readings><timeStamp>y</timeStamp>{RT}</Readings>"
        "</MeterReading></MeterReadings>"
    )
    paths = [issue.path for issue in validate(doc)]
    assert paths == [
        "/MeterReadings/MeterReading/Readings[1]/timeStamp",
        "/MeterReadings/MeterReading/Readings[2]/timeStamp",
    ]


def test_assert_valid_raises_schema_invalid_with_xpath_and_line():
    text = meter_readings("not-a-time")
    with pytest.raises(CimError) as caught:
        assert_valid(parse(text))
    error = caught.value
    assert error.error is ErrorCode.SCHEMA_INVALID
    assert error.code == "2.1"
    assert error.xpath == BAD_PATH
    assert error.line == 9
    assert "not-a-time" in error.reason
    assert error.details is None
    assert_valid(parse(meter_readings()))  # no exception
    SchemaSet.for_namespace(MR).assert_valid(parse(meter_readings()))


def test_assert_valid_lists_further_issues_in_details():
    doc = parse(
        f'<MeterReadings xmlns="{MR}"><MeterReading>'
        f"<Readings><timeStamp>x</timeStamp>{RT}</Readings>"
        f"<Readings><timeStamp>y</timeStamp>{RT}</Readings>"
        "</MeterReading></MeterReadings>"
    )
    with pytest.raises(CimError) as caught:
        assert_valid(doc)
    assert caught.value.xpath.endswith("Readings[1]/timeStamp")
    assert "Readings[2]/timeStamp" in caught.value.details


def test_element_path_helper():
    doc = parse("<a xmlns='urn:x'><b/><c><d/><d><e/></d></c><b/></a>")
    e = doc.find(".//{urn:x}e")
    assert element_path(e) == "/a/c/d[2]/e"
    assert element_path(doc) == "/a"
    assert element_path(doc[0]) == "/a/b[1]"


# --------------------------------------------------------------------------- schema choice


@pytest.mark.parametrize(
    "namespace,xsd",
    [
        (MSG, "Message.xsd"),
        (MR, "MeterReadings.xsd"),
        (GMR, "GetMeterReadings.xsd"),
        ("http://iec.ch/TC57/2011/EndDeviceControls#", "EndDeviceControls.xsd"),
        ("http://iec.ch/TC57/2011/EndDeviceEvents#", "EndDeviceEvents.xsd"),
        ("http://iec.ch/TC57/2011/GetEndDeviceEvents#", "GetEndDeviceEvents.xsd"),
        ("http://iec.ch/TC57/2011/MeterReadSchedule#", "MeterReadSchedule.xsd"),
        ("http://iec.ch/TC57/2011/MeterReadingsMessage", "MeterReadingsMessage.xsd"),
        ("http://iec.ch/TC57/2011/GetMeterReadingsMessage", "GetMeterReadingsMessage.xsd"),
        ("http://iec.ch/TC57/2011/EndDeviceControlsMessage", "EndDeviceControlsMessage.xsd"),
        ("http://iec.ch/TC57/2011/EndDeviceEventsMessage", "EndDeviceEventsMessage.xsd"),
        ("http://iec.ch/TC57/2011/GetEndDeviceEventsMessage", "GetEndDeviceEventsMessage.xsd"),
        ("http://iec.ch/TC57/2011/MeterReadScheduleMessage", "MeterReadScheduleMessage.xsd"),
    ],
)
def test_for_namespace_picks_the_package_schema(namespace, xsd):
    chosen = SchemaSet.for_namespace(namespace)
    assert chosen.name == xsd
    assert chosen.xsd == schemas.schema_path(xsd).resolve()
    assert chosen.target_namespace == namespace
    assert SchemaSet.for_namespace(namespace) is chosen  # compiled once, cached


def test_unknown_and_prestandard_namespaces_are_refused():
    with pytest.raises(CimError) as caught:
        SchemaSet.for_namespace("urn:nothing")
    assert caught.value.error is ErrorCode.UNKNOWN_MESSAGE_ROOT
    with pytest.raises(CimError) as caught:
        validate(parse('<RequestMessage xmlns="http://www.iec.ch/TC57/2011/schema/message"/>'))
    assert caught.value.error is ErrorCode.UNKNOWN_MESSAGE_ROOT
    assert "pre-standard" in caught.value.reason
    with pytest.raises(CimError) as caught:
        validate(parse("<MeterReadings/>"))
    assert caught.value.error is ErrorCode.UNKNOWN_MESSAGE_ROOT


def wrap_soap(inner: str, soap_ns: str = SOAP) -> str:
    return (
        f'<soapenv:Envelope xmlns:soapenv="{soap_ns}">\n<soapenv:Header/>\n'
        f"<soapenv:Body>\n{inner}\n</soapenv:Body>\n</soapenv:Envelope>"
    )


def created_meter_readings(payload: str) -> str:
    return (
        f'<m:CreatedMeterReadings xmlns:m="http://iec.ch/TC57/2011/MeterReadingsMessage"'
        f' xmlns:h="{MSG}">\n<m:Header><h:Verb>created</h:Verb><h:Noun>MeterReadings'
        f"</h:Noun></m:Header>\n<m:Payload>\n{payload}\n</m:Payload>\n"
        "</m:CreatedMeterReadings>"
    )


def test_soap_envelope_validates_the_body_child_with_the_wrapper_schema():
    good = parse(wrap_soap(created_meter_readings(meter_readings())))
    assert SchemaSet.for_root(good).name == "MeterReadingsMessage.xsd"
    assert document_element(good).tag.endswith("CreatedMeterReadings")
    assert validate(good) == []

    text = wrap_soap(created_meter_readings(meter_readings("soon")))
    (issue,) = validate(parse(text))
    assert issue.path == ("/Envelope/Body/CreatedMeterReadings/Payload" + BAD_PATH)
    assert issue.schema == "MeterReadingsMessage.xsd"
    assert issue.line == line_of(text, "soon") == 15


def test_soap12_envelope_and_bad_envelopes():
    doc = parse(wrap_soap(meter_readings(), "http://www.w3.org/2003/05/soap-envelope"))
    assert validate(doc) == []
    with pytest.raises(CimError) as caught:
        validate(parse(f'<e:Envelope xmlns:e="{SOAP}"><e:Body/></e:Envelope>'))
    assert caught.value.error is ErrorCode.UNKNOWN_MESSAGE_ROOT
    with pytest.raises(CimError):
        validate(parse(f'<e:Envelope xmlns:e="{SOAP}"><e:Header/></e:Envelope>'))


def test_wrapper_checks_header_fields():
    doc = parse(
        wrap_soap(
            created_meter_readings(meter_readings()).replace(
                "<h:Verb>created</h:Verb>", "<h:Verb>publish</h:Verb>"
            )
        )
    )
    (issue,) = validate(doc)
    assert issue.path == "/Envelope/Body/CreatedMeterReadings/Header/Verb"
    assert "publish" in issue.message


# --------------------------------------------------------------------------- envelope mode


def generic(kind: str, body: str) -> str:
    return (
        f'<{kind} xmlns="{MSG}">\n<Header><Verb>created</Verb><Noun>MeterReadings</Noun>'
        f"</Header>\n{body}\n</{kind}>"
    )


def test_generic_envelope_also_validates_its_payload():
    good = parse(generic("EventMessage", f"<Payload>\n{meter_readings()}\n</Payload>"))
    assert SchemaSet.for_root(good).name == "Message.xsd"
    assert validate(good) == []

    text = generic("EventMessage", f"<Payload>\n{meter_readings('2024-13-01')}\n</Payload>")
    bad = parse(text)
    (issue,) = validate(bad)
    assert issue.path == "/EventMessage/Payload" + BAD_PATH
    assert issue.schema == "MeterReadings.xsd"
    assert issue.line == line_of(text, "2024-13-01") == 12

    # Message.xsd on its own skips payload content.
    assert SchemaSet.for_namespace(MSG).validate(bad, nested=False) == []


def test_generic_envelope_reports_envelope_and_payload_issues():
    doc = parse(
        generic(
            "ResponseMessage",
            f"<Reply><Result>MAYBE</Result></Reply>\n<Payload>{meter_readings('x')}</Payload>",
        )
    )
    issues = validate(doc)
    assert [issue.schema for issue in issues] == ["Message.xsd", "MeterReadings.xsd"]
    assert issues[0].path == "/ResponseMessage/Reply/Result"


def test_generic_get_request_validates_the_get_profile():
    profile = (
        f'<GetMeterReadings xmlns="{GMR}"><EndDevice><mRID>d-1</mRID></EndDevice>'
        "<Reading><reason>{reason}</reason></Reading></GetMeterReadings>"
    )
    ok = parse(generic("RequestMessage", f"<Request>{profile.format(reason='billing')}</Request>"))
    assert validate(ok) == []
    bad = parse(generic("RequestMessage", f"<Request>{profile.format(reason='whim')}</Request>"))
    (issue,) = validate(bad)
    assert issue.path == "/RequestMessage/Request/GetMeterReadings/Reading/reason"
    assert issue.schema == "GetMeterReadings.xsd"


def test_generic_envelope_ignores_payloads_it_has_no_schema_for():
    doc = parse(generic("EventMessage", '<Payload><x:Custom xmlns:x="urn:vendor"/></Payload>'))
    assert validate(doc) == []


# --------------------------------------------------------------------------- resolver


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def importing(location: str) -> str:
    return (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:a"'
        ' xmlns:b="urn:b" elementFormDefault="qualified">'
        f'<xs:import namespace="urn:b" schemaLocation="{location}"/>'
        '<xs:element name="A"><xs:complexType><xs:sequence><xs:element ref="b:B"/>'
        "</xs:sequence></xs:complexType></xs:element></xs:schema>"
    )


B_XSD = (
    '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:b">'
    '<xs:element name="B" type="xs:int"/></xs:schema>'
)


def test_imports_next_to_the_schema_are_allowed(tmp_path):
    write(tmp_path / "set", "b.xsd", B_XSD)
    write(tmp_path / "set", "sub/b2.xsd", B_XSD)
    root = write(tmp_path / "set", "a.xsd", importing("b.xsd"))
    schema = SchemaSet.for_xsd(root)
    assert schema.validate(parse('<A xmlns="urn:a"><B xmlns="urn:b">7</B></A>')) == []
    assert schema.validate(parse('<A xmlns="urn:a"><B xmlns="urn:b">seven</B></A>'))
    assert SchemaSet.for_xsd(write(tmp_path / "set", "a2.xsd", importing("sub/b2.xsd")))


@pytest.mark.parametrize(
    "location",
    [
        "../outside.xsd",
        "http://127.0.0.1:9/b.xsd",
        "https://example.invalid/b.xsd",
        "ftp://example.invalid/b.xsd",
        "file:///etc/passwd",
        "/etc/passwd",
        "missing.xsd",
    ],
)
def test_resolver_refuses_everything_outside_the_folder(tmp_path, location):
    write(tmp_path, "outside.xsd", B_XSD)
    root = write(tmp_path / "set", "a.xsd", importing(location))
    with pytest.raises(CimError) as caught:
        SchemaSet.for_xsd(root)
    assert caught.value.error is ErrorCode.FORBIDDEN_XML
    assert "refused" in caught.value.reason


def test_resolver_refuses_a_symlink_out_of_the_folder(tmp_path):
    outside = write(tmp_path, "outside.xsd", B_XSD)
    (tmp_path / "set").mkdir()
    os.symlink(outside, tmp_path / "set" / "b.xsd")
    root = write(tmp_path / "set", "a.xsd", importing("b.xsd"))
    with pytest.raises(CimError) as caught:
        SchemaSet.for_xsd(root)
    assert caught.value.error is ErrorCode.FORBIDDEN_XML


def test_resolver_unit():
    resolver = validation._FolderResolver(schemas.schema_dir())
    message = schemas.schema_path("Message.xsd")
    assert resolver.allowed(str(message)) == message.resolve()
    assert resolver.allowed(message.resolve().as_uri()) == message.resolve()
    assert resolver.allowed("http://iec.ch/TC57/2011/schema/message") is None
    assert resolver.allowed(str(schemas.schema_dir() / ".." / "pyproject.toml")) is None


def test_schema_with_doctype_is_refused(tmp_path):
    root = write(tmp_path, "a.xsd", '<!DOCTYPE x [<!ENTITY e "1">]>' + B_XSD)
    with pytest.raises(CimError) as caught:
        SchemaSet.for_xsd(root)
    assert caught.value.error is ErrorCode.FORBIDDEN_XML
    write(tmp_path / "set", "b.xsd", '<!DOCTYPE x [<!ENTITY e "1">]>' + B_XSD)
    root = write(tmp_path / "set", "a.xsd", importing("b.xsd"))
    with pytest.raises(CimError) as caught:
        SchemaSet.for_xsd(root)
    assert caught.value.error is ErrorCode.FORBIDDEN_XML


def test_broken_schema_is_an_internal_error(tmp_path):
    root = write(tmp_path, "a.xsd", B_XSD.replace('type="xs:int"', 'type="xs:nothing"'))
    with pytest.raises(CimError) as caught:
        SchemaSet.for_xsd(root)
    assert caught.value.error is ErrorCode.INTERNAL


# --------------------------------------------------------------------------- files


def test_validate_file_and_bytes(tmp_path):
    good = write(tmp_path, "good.xml", meter_readings())
    bad = write(tmp_path, "bad.xml", meter_readings("late"))
    assert validate_file(good) == []
    (issue,) = validate_file(bad)
    assert issue.path == BAD_PATH and issue.line == 9
    assert validate_bytes(meter_readings("late").encode())[0].path == BAD_PATH
    assert validate_file(bad, xsd=schemas.schema_path("MeterReadings.xsd"))
    # An XSD that does not declare the root element reports exactly that.
    (issue,) = validate_file(good, xsd=schemas.schema_path("EndDeviceEvents.xsd"))
    assert "No matching global declaration" in issue.message


def test_validate_file_refuses_hostile_and_broken_xml(tmp_path):
    xxe = write(
        tmp_path,
        "xxe.xml",
        '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM '
        '"file:///etc/passwd">]><MeterReadings xmlns="' + MR + '">&x;</MeterReadings>',
    )
    with pytest.raises(CimError) as caught:
        validate_file(xxe)
    assert caught.value.error is ErrorCode.FORBIDDEN_XML
    broken = write(tmp_path, "broken.xml", "<MeterReadings><MeterReading></MeterReadings>")
    with pytest.raises(CimError) as caught:
        validate_file(broken)
    assert caught.value.error is ErrorCode.NOT_WELL_FORMED


@needs_fixtures
def test_validate_file_with_a_public_fixture_xsd(tmp_path):
    sample = FIXTURES / "connexo/samples/coko/meterreadings/GetUsagePointReadingsRequest.xml"
    public = FIXTURES / "connexo/outbound/meterreadings/xsd/GetMeterReadingsMessage.xsd"
    assert validate_file(sample, xsd=public) == []
    assert validate_file(sample) == []  # and on ours
    broken = write(
        tmp_path,
        "broken.xml",
        sample.read_text(encoding="utf-8").replace(
            "<mes:Verb>get</mes:Verb>", "<mes:Verb>fetch</mes:Verb>"
        ),
    )
    (issue,) = validate_file(broken, xsd=public)
    assert issue.path == "/Envelope/Body/GetMeterReadings/Header/Verb"
    assert issue.line == 6
    # A public payload profile on its own, with our payload document.
    mr_public = FIXTURES / "connexo/outbound/meterreadings/xsd/MeterReadings.xsd"
    bad = write(tmp_path, "bad.xml", meter_readings("late"))
    (issue,) = validate_file(bad, xsd=mr_public)
    assert issue.path == BAD_PATH


@needs_fixtures
def test_public_generic_envelope_schema_checks_payloads_from_its_folder():
    public = SchemaSet.for_xsd(FIXTURES / "connexo/outbound/meterreadings/xsd/Message.xsd")
    bad = parse(generic("EventMessage", f"<Payload>{meter_readings('x')}</Payload>"))
    (issue,) = public.validate(bad)
    assert issue.schema == "MeterReadings.xsd"
    assert issue.path == "/EventMessage/Payload" + BAD_PATH


# --------------------------------------------------------------------------- large documents


def long_block(count: int, bad: set[int]) -> bytes:
    readings = "\n".join(
        interval_reading("bad" if index in bad else "2024-01-01T00:00:00Z")
        for index in range(count)
    )
    return (
        f'<MeterReadings xmlns="{MR}"><MeterReading><IntervalBlocks>\n{readings}\n'
        f"{RT}</IntervalBlocks></MeterReading></MeterReadings>"
    ).encode()


def test_issue_count_is_capped():
    issues = validate_bytes(long_block(150, set(range(150))))
    assert len(issues) == validation.MAX_ISSUES + 1
    assert issues[0].path.endswith("IntervalReadings[1]/timeStamp")
    assert issues[-1].message == "50 more schema errors not listed"
    doc = etree.fromstring(long_block(5, {1, 3}))
    assert len(SchemaSet.for_namespace(MR).validate(doc, max_issues=1)) == 2


def test_large_document_with_few_errors_is_located_exactly():
    issues = validate_bytes(long_block(8000, {6999, 7999}))
    assert [issue.path for issue in issues] == [
        "/MeterReadings/MeterReading/IntervalBlocks/IntervalReadings[7000]/timeStamp",
        "/MeterReadings/MeterReading/IntervalBlocks/IntervalReadings[8000]/timeStamp",
    ]
    assert [issue.line for issue in issues] == [7001, 8001]
    assert validate_bytes(long_block(8000, set())) == []


def test_large_document_with_many_errors_is_validated_in_linear_time():
    started = time.monotonic()
    issues = validate_bytes(long_block(8000, set(range(8000))))
    assert time.monotonic() - started < 5  # the tree validator alone takes far longer
    assert len(issues) >= 100
    assert all(issue.path == "/MeterReadings" for issue in issues)
    assert "xs:dateTime" in issues[0].message
    assert issues[-1].message.startswith("at least ")


# --------------------------------------------------------------------------- threads, layering


def test_concurrent_validation_is_consistent():
    good = meter_readings()
    bad = meter_readings("nope")
    failures: list[str] = []

    def work(index: int) -> None:
        for round_ in range(30):
            want_bad = (index + round_) % 2 == 0
            issues = validate(parse(bad if want_bad else good))
            if want_bad and [i.path for i in issues] != [BAD_PATH]:
                failures.append(f"thread {index}: {issues}")
            if not want_bad and issues:
                failures.append(f"thread {index}: unexpected {issues}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_cim_validation_imports_only_allowed_openhes_modules():
    tree = ast.parse(Path(validation.__file__).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    openhes = {
        name
        for name in imported
        if name.split(".")[0] in {"cim", "adapters", "drivers", "headend", "mdm", "schemas"}
    }
    assert openhes <= {"cim.errors", "cim.xmlsafe"}
