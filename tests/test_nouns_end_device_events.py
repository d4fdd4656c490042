"""EndDeviceEvents and GetEndDeviceEvents payloads: round trips, public samples, XSD
validity of what we build, refusals with the right code, tolerance of vendor elements."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from functools import partial

import cim_noun_helpers as helpers
import pytest
from cim_noun_helpers import (
    FIXTURES,
    assert_valid,
    document,
    ours,
    payloads,
    read_text,
    refused,
    samples_declaring,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cim.end_device_events import (
    GET_NOUN,
    NOUN,
    EndDeviceEvents,
    EndDeviceTypeInfo,
    GetEndDeviceEvents,
    ServiceCategory,
    build_end_device_events,
    build_get_end_device_events,
    read_end_device_events,
    read_get_end_device_events,
)
from cim.errors import CimError, ErrorCode
from cim.model import (
    DateTimeInterval,
    EndDeviceEvent,
    EndDeviceEventDetail,
    Name,
    ObjectRef,
    Status,
)
from cim.xmlsafe import parse_file
from cim.xmltools import ReadReport

CONNEXO_EVENTS_XSD = FIXTURES / "connexo/outbound/enddeviceevents/xsd/EndDeviceEvents.xsd"
CONNEXO_GET_XSD = FIXTURES / "connexo/outbound/getenddeviceevents/xsd/GetEndDeviceEvents.xsd"
OPENWMS_EVENTS_XSD = FIXTURES / "openwms-epri/61968-9/wsdl/xsd/EndDeviceEvents.xsd"
EVENTS_NS = "http://iec.ch/TC57/2011/EndDeviceEvents#"
GET_NS = "http://iec.ch/TC57/2011/GetEndDeviceEvents#"

# These round trips serialise with an XML declaration (the other nouns' tests do not).
round_trip = partial(helpers.round_trip, xml_declaration=True)


# --- examples ----------------------------------------------------------------------------

UTC2 = timezone(timedelta(hours=2))

FULL_EVENT = EndDeviceEvent(
    event_type="3.26.0.85",
    created=datetime(2024, 3, 1, 12, 30, tzinfo=UTC),
    mrid="evt-1",
    issuer_id="HES",
    issuer_tracking_id="T-42",
    reason="power failed",
    severity="Alarm",
    user_id="operator",
    asset=ObjectRef("meter-1", (Name("SN123", "SerialNumber", "serial", "OpenHES", "hes"),)),
    details=[EndDeviceEventDetail("phase", "L1"), EndDeviceEventDetail("empty")],
    names=(Name("outage"),),
    status=Status("open", datetime(2024, 3, 1, 12, 31, tzinfo=UTC2), "r", "note"),
    usage_point=ObjectRef("up-1", (Name("UP 1", "UsagePointName"),)),
)

EVENTS = EndDeviceEvents(
    events=[
        FULL_EVENT,
        EndDeviceEvent("3.2.22.150", datetime(2017, 12, 23)),
        # Numbers missing from the Annex E tables (vendor additions) are accepted.
        EndDeviceEvent("99.999.12345.0", datetime(2020, 1, 1, tzinfo=UTC)),
    ],
    event_types=[
        EndDeviceTypeInfo(
            names=(Name("PowerFailed"),),
            mrid="3.26.0.85",
            domain="26",
            event_or_action="85",
            sub_domain="0",
            type="3",
        )
    ],
)

QUERY = GetEndDeviceEvents(
    customers=[ObjectRef("cust-1")],
    events=[EndDeviceEvent("3.12.29.39", datetime(2024, 1, 1, tzinfo=UTC), severity="Warning")],
    event_types=[ObjectRef("3.26.0.85", (Name("PowerFailed"),)), ObjectRef(None, (Name("x"),))],
    end_device_groups=[ObjectRef("grp-1")],
    meters=[ObjectRef(None, (Name("SPE01000003"),)), ObjectRef("a13d9a4c")],
    service_categories=[ServiceCategory("sc-1", "electricity", (Name("power"),))],
    time_schedules=[
        DateTimeInterval(datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC)),
        DateTimeInterval(start=datetime(2024, 3, 1, tzinfo=UTC)),
    ],
    usage_points=[ObjectRef("up-9")],
)


def test_events_round_trip_and_validate() -> None:
    element = build_end_device_events(EVENTS)
    assert element.tag == f"{{{EVENTS_NS}}}EndDeviceEvents"
    assert_valid(element, CONNEXO_EVENTS_XSD, ours(NOUN))
    back, report = round_trip(EVENTS, build_end_device_events, read_end_device_events)
    assert back == EVENTS
    assert report.warnings == []


def test_events_validate_against_epri_profile() -> None:
    # The EPRI copy needs UsagePoint mRID and Names and allows one Name per event type.
    assert_valid(build_end_device_events(EVENTS), OPENWMS_EVENTS_XSD)


def test_events_asset_serial_number_connexo_profile() -> None:
    event = dataclasses.replace(FULL_EVENT, asset=ObjectRef("m", serial_number="SN9"))
    document = EndDeviceEvents(events=[event])
    element = build_end_device_events(document)
    assert_valid(element, CONNEXO_EVENTS_XSD)
    back, _ = round_trip(document, build_end_device_events, read_end_device_events)
    assert back == document


def test_get_round_trip_and_validate() -> None:
    element = build_get_end_device_events(QUERY)
    assert element.tag == f"{{{GET_NS}}}GetEndDeviceEvents"
    assert_valid(element, CONNEXO_GET_XSD, ours(GET_NOUN))
    back, report = round_trip(QUERY, build_get_end_device_events, read_get_end_device_events)
    assert back == QUERY
    assert report.warnings == []
    assert back.time_periods == QUERY.time_schedules


def test_get_profile_names_are_written_without_name_type() -> None:
    query = GetEndDeviceEvents(meters=[ObjectRef("m", (Name("n", "MeterName", None, "a"),))])
    element = build_get_end_device_events(query)
    assert_valid(element, CONNEXO_GET_XSD, ours(GET_NOUN))
    back, _ = round_trip(query, build_get_end_device_events, read_get_end_device_events)
    assert back.meters == [ObjectRef("m", (Name("n"),))]


# --- hypothesis --------------------------------------------------------------------------

text = helpers.texts(max_size=12)
opt_text = st.none() | text
moments = helpers.moments(UTC2)
intervals = helpers.intervals(moments)
codes = st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join(map(str, t)))


def names(typed: bool = True) -> st.SearchStrategy[Name]:
    return helpers.names(text, typed)


def refs(typed: bool = True, serial: bool = False):
    return st.builds(
        ObjectRef,
        opt_text,
        st.lists(names(typed), max_size=2).map(tuple),
        opt_text if serial else st.none(),
    )


def events(typed: bool = True, serial: bool = False):
    return st.builds(
        EndDeviceEvent,
        event_type=codes,
        created=moments,
        mrid=opt_text,
        issuer_id=opt_text,
        issuer_tracking_id=opt_text,
        reason=opt_text,
        severity=opt_text,
        user_id=opt_text,
        asset=st.none() | refs(typed, serial),
        details=st.lists(st.builds(EndDeviceEventDetail, text, opt_text), max_size=2),
        names=st.lists(names(typed), max_size=2).map(tuple),
        status=st.none() | st.builds(Status, opt_text, st.none() | moments, opt_text, opt_text),
        usage_point=st.none() | refs(typed),
    )


type_infos = st.builds(
    EndDeviceTypeInfo,
    names=st.lists(names(), min_size=1, max_size=2).map(tuple),
    mrid=st.none() | codes,
    domain=opt_text,
    event_or_action=opt_text,
    sub_domain=opt_text,
    type=opt_text,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(
    st.builds(
        EndDeviceEvents,
        st.lists(events(serial=True), max_size=3),
        st.lists(type_infos, max_size=2),
    )
)
def test_events_hypothesis_round_trip(document: EndDeviceEvents) -> None:
    element = build_end_device_events(document)
    assert_valid(element, CONNEXO_EVENTS_XSD)
    if not any(e.asset and e.asset.serial_number for e in document.events):
        assert_valid(element, ours(NOUN))
    back, report = round_trip(document, build_end_device_events, read_end_device_events)
    assert back == document
    assert report.warnings == []


@SETTINGS
@given(
    st.builds(
        GetEndDeviceEvents,
        customers=st.lists(refs(False), max_size=2),
        events=st.lists(events(typed=False), max_size=2),
        event_types=st.lists(st.builds(ObjectRef, st.none() | codes), max_size=2),
        end_device_groups=st.lists(refs(False), max_size=2),
        meters=st.lists(refs(False), max_size=2),
        service_categories=st.lists(
            st.builds(
                ServiceCategory,
                opt_text,
                st.none() | st.sampled_from(["electricity", "gas", "water", "tvLicence"]),
                st.lists(names(False), max_size=2).map(tuple),
            ),
            max_size=2,
        ),
        time_schedules=st.lists(intervals, max_size=2),
        usage_points=st.lists(refs(False), max_size=2),
    )
)
def test_get_hypothesis_round_trip(query: GetEndDeviceEvents) -> None:
    element = build_get_end_device_events(query)
    assert_valid(element, CONNEXO_GET_XSD, ours(GET_NOUN))
    back, report = round_trip(query, build_get_end_device_events, read_get_end_device_events)
    assert back == query
    assert report.warnings == []


# --- public samples ----------------------------------------------------------------------

# Every fixture whose payload is EndDeviceEvents or GetEndDeviceEvents, and what reading it
# gives: None = read fine; an ErrorCode = refused, with the reason.
SAMPLES: dict[str, tuple[str, ErrorCode | None, str]] = {
    "connexo/samples/comu/enddeviceevents/ClosedEndDeviceEvents.xml": (NOUN, None, "valid"),
    "connexo/samples/comu/getenddeviceevents/GetEndDeviceEventsRequest.xml": (
        GET_NOUN,
        None,
        "valid",
    ),
    # The EPRI soapUI messages keep soapUI's '?' placeholders: EndDeviceEventType ref="?".
    "openwms-epri/soapui-extracted/MeterOutage-OMS-1/CreatedEndDeviceEvents.xml": (
        NOUN,
        ErrorCode.BAD_END_DEVICE_TYPE,
        "EndDeviceEventType ref='?'",
    ),
    "openwms-epri/soapui-extracted/MeterOutage-OMS-1/resp_Response_1.xml": (
        NOUN,
        ErrorCode.BAD_END_DEVICE_TYPE,
        "EndDeviceEventType ref='?'",
    ),
    "openwms-epri/soapui-extracted/MeterOutage-MDMS-1/Success.xml": (
        NOUN,
        ErrorCode.BAD_END_DEVICE_TYPE,
        "EndDeviceEventType ref='?'",
    ),
    "openwms-epri/soapui-extracted/MeterTamper-AMI-1/Success.xml": (
        NOUN,
        ErrorCode.BAD_END_DEVICE_TYPE,
        "EndDeviceEventType ref='?'",
    ),
    "openwms-epri/soapui-extracted/MeterTamper-AMI-1/Fail.xml": (
        NOUN,
        ErrorCode.BAD_END_DEVICE_TYPE,
        "EndDeviceEventType ref='?'",
    ),
    "openwms-epri/soapui-extracted/MeterTamper-MDMS-2/Fail.xml": (
        NOUN,
        ErrorCode.BAD_END_DEVICE_TYPE,
        "EndDeviceEventType ref='?'",
    ),
    # A deliberately broken test message ("Revision_oops"): refused by the parser.
    "openwms-epri/soapui-extracted/MeterOutage-MDMS-1/Fail.xml": (
        NOUN,
        ErrorCode.NOT_WELL_FORMED,
        "mismatched tag Revision_oops",
    ),
}


def test_every_sample_is_listed() -> None:
    assert samples_declaring(NOUN, GET_NOUN) == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_public_sample(name: str) -> None:
    noun, expected, why = SAMPLES[name]
    read = read_end_device_events if noun == NOUN else read_get_end_device_events
    try:
        root = parse_file(FIXTURES / name)
        (element,) = payloads(root, noun)
        model = read(element, ReadReport())
    except CimError as exc:
        assert exc.error is expected, f"{name}: {exc} (expected {why})"
        assert exc.line is not None
        if expected is not ErrorCode.NOT_WELL_FORMED:
            assert exc.xpath and exc.xpath.endswith("EndDeviceEventType")
        return
    assert expected is None, f"{name} was read but should be refused: {why}"
    # What we read, we write back valid.
    build = build_end_device_events if noun == NOUN else build_get_end_device_events
    assert_valid(build(model), CONNEXO_EVENTS_XSD if noun == NOUN else CONNEXO_GET_XSD)


def test_connexo_samples_content() -> None:
    root = parse_file(FIXTURES / "connexo/samples/comu/enddeviceevents/ClosedEndDeviceEvents.xml")
    (element,) = payloads(root, NOUN)
    document = read_end_device_events(element, ReadReport())
    (event,) = document.events
    assert event.event_type == "3.2.22.150"
    assert event.severity == "Alarm"
    assert event.created == datetime(2017, 12, 23, tzinfo=UTC)
    assert event.asset == ObjectRef("26186114-dfd4-4409-a300-f01dde8f316a")

    root = parse_file(
        FIXTURES / "connexo/samples/comu/getenddeviceevents/GetEndDeviceEventsRequest.xml"
    )
    (element,) = payloads(root, GET_NOUN)
    query = read_get_end_device_events(element, ReadReport())
    assert query.meters == [
        ObjectRef(None, (Name("SPE01000003"),)),
        ObjectRef("a13d9a4c-3de7-47f5-8e8d-9b50cf29f8a5"),
    ]
    assert query.time_periods == [DateTimeInterval(start=datetime(2017, 10, 1, tzinfo=UTC))]


# --- tolerance and refusals --------------------------------------------------------------


def _events_doc(event_body: str, ns: str = EVENTS_NS, extra: str = "") -> str:
    return document(NOUN, f"<EndDeviceEvent>{event_body}</EndDeviceEvent>{extra}", ns)


GOOD_EVENT = (
    '<createdDateTime>2024-01-01T00:00:00Z</createdDateTime><EndDeviceEventType ref="3.26.0.85"/>'
)


@pytest.mark.parametrize(
    "ns",
    [
        EVENTS_NS,
        "http://iec.ch/TC57/2009/EndDeviceEvents#",
        "http://www.iec.ch/TC57/2011/EndDeviceEvents#",
    ],
)
def test_accepted_namespaces(ns: str) -> None:
    document, report = read_text(_events_doc(GOOD_EVENT, ns), read_end_device_events)
    assert document.events[0].event_type == "3.26.0.85"
    assert report.warnings == []


def test_unknown_namespace_or_none_is_read_with_a_warning() -> None:
    for ns in ("", "urn:vendor"):
        document, report = read_text(_events_doc(GOOD_EVENT, ns), read_end_device_events)
        assert document.events[0].event_type == "3.26.0.85"
        assert len(report.warnings) == 1 and "namespace" in report.warnings[0]


def test_wrong_root_is_refused() -> None:
    error = refused(f'<MeterReadings xmlns="{EVENTS_NS}"/>', read_end_device_events)
    assert error.error is ErrorCode.SCHEMA_INVALID


def test_vendor_elements_are_warnings() -> None:
    xml = _events_doc(
        GOOD_EVENT + "<vendorFlag>1</vendorFlag>",
        extra="<VendorBlock><x/></VendorBlock>",
    )
    document, report = read_text(xml, read_end_device_events)
    assert len(document.events) == 1
    assert len(report.warnings) == 2
    assert "vendorFlag" in report.warnings[0] and "line" in report.warnings[0]
    query, report = read_text(
        f'<GetEndDeviceEvents xmlns="{GET_NS}"><Meter><mRID>m</mRID></Meter>'
        "<connectionMethod>x</connectionMethod></GetEndDeviceEvents>",
        read_get_end_device_events,
    )
    assert query.meters == [ObjectRef("m")]
    assert len(report.warnings) == 1


def test_nested_mrid_event_type_is_accepted() -> None:
    xml = _events_doc(
        "<createdDateTime>2024-01-01T00:00:00Z</createdDateTime>"
        "<EndDeviceEventType><mRID>3.26.0.216</mRID></EndDeviceEventType>"
    )
    document, _ = read_text(xml, read_end_device_events)
    assert document.events[0].event_type == "3.26.0.216"


@pytest.mark.parametrize(
    ("body", "code", "where"),
    [
        (
            "<createdDateTime>yesterday</createdDateTime><EndDeviceEventType ref='3.26.0.85'/>",
            ErrorCode.BAD_DATETIME,
            "createdDateTime",
        ),
        (
            "<createdDateTime>2024-01-01</createdDateTime><EndDeviceEventType ref='3.26.0.85'/>",
            ErrorCode.BAD_DATETIME,
            "createdDateTime",
        ),
        (
            "<createdDateTime>2024-01-01T00:00:00Z</createdDateTime>"
            "<EndDeviceEventType ref='3.26.85'/>",
            ErrorCode.BAD_END_DEVICE_TYPE,
            "EndDeviceEventType",
        ),
        (
            "<createdDateTime>2024-01-01T00:00:00Z</createdDateTime>"
            "<EndDeviceEventType ref='3.26.0.-1'/>",
            ErrorCode.BAD_END_DEVICE_TYPE,
            "EndDeviceEventType",
        ),
        (
            "<createdDateTime>2024-01-01T00:00:00Z</createdDateTime>"
            "<EndDeviceEventType ref='PowerFailed'/>",
            ErrorCode.BAD_END_DEVICE_TYPE,
            "EndDeviceEventType",
        ),
        (
            "<createdDateTime>2024-01-01T00:00:00Z</createdDateTime>",
            ErrorCode.MISSING_ELEMENT,
            "EndDeviceEvent",
        ),
        (
            "<createdDateTime>2024-01-01T00:00:00Z</createdDateTime>"
            "<EndDeviceEventType><mRID>3.26.0.85.1</mRID></EndDeviceEventType>",
            ErrorCode.BAD_END_DEVICE_TYPE,
            "EndDeviceEventType/mRID",
        ),
        ("<EndDeviceEventType ref='3.26.0.85'/>", ErrorCode.MISSING_ELEMENT, "EndDeviceEvent"),
        (
            GOOD_EVENT + "<status><dateTime>?</dateTime></status>",
            ErrorCode.BAD_DATETIME,
            "status/dateTime",
        ),
        (
            GOOD_EVENT + "<EndDeviceEventDetails><value>1</value></EndDeviceEventDetails>",
            ErrorCode.MISSING_ELEMENT,
            "EndDeviceEventDetails",
        ),
    ],
)
def test_bad_event(body: str, code: ErrorCode, where: str) -> None:
    error = refused(_events_doc(body), read_end_device_events)
    assert error.error is code, error
    assert error.xpath and error.xpath.endswith(where), error.xpath
    assert error.line == 1


def test_bad_event_type_description() -> None:
    base = f'<EndDeviceEvents xmlns="{EVENTS_NS}"><EndDeviceEventType>%s</EndDeviceEventType></EndDeviceEvents>'
    error = refused(base % "<mRID>3.26.0.85</mRID>", read_end_device_events)
    assert error.error is ErrorCode.MISSING_ELEMENT  # Names is required
    error = refused(
        base % "<mRID>3..0.85</mRID><Names><name>x</name></Names>", read_end_device_events
    )
    assert error.error is ErrorCode.BAD_END_DEVICE_TYPE
    assert error.xpath.endswith("EndDeviceEventType/mRID")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (
            "<TimeSchedule><scheduleInterval><start>2024-13-01T00:00:00Z</start>"
            "</scheduleInterval></TimeSchedule>",
            ErrorCode.BAD_DATETIME,
        ),
        ("<TimeSchedule/>", ErrorCode.MISSING_ELEMENT),
        (
            "<EndDeviceEventType><mRID>3.26.0</mRID></EndDeviceEventType>",
            ErrorCode.BAD_END_DEVICE_TYPE,
        ),
        ("<ServiceCategory><kind>steam</kind></ServiceCategory>", ErrorCode.BAD_VALUE),
        (
            "<Meter><Names><NameType><name>t</name></NameType></Names></Meter>",
            ErrorCode.MISSING_ELEMENT,
        ),
        (
            "<EndDeviceEvent><createdDateTime>2024-01-01T00:00:00Z</createdDateTime>"
            "<EndDeviceEventType ref='?'/></EndDeviceEvent>",
            ErrorCode.BAD_END_DEVICE_TYPE,
        ),
    ],
)
def test_bad_get_query(body: str, code: ErrorCode) -> None:
    error = refused(
        f'<GetEndDeviceEvents xmlns="{GET_NS}">{body}</GetEndDeviceEvents>',
        read_get_end_device_events,
    )
    assert error.error is code, error
    assert error.xpath and error.xpath.startswith("/GetEndDeviceEvents/")
