"""GetMeterReadings payload: round trips, public samples, XSD validity of what we build,
refusals with the right code, tolerance of vendor elements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from functools import partial

import cim_noun_helpers as helpers
import pytest
from cim_noun_helpers import FIXTURES, assert_valid, document, ours, samples_declaring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cim.errors import CimError, ErrorCode
from cim.get_meter_readings import (
    NOUN,
    CoincidentReadingSelector,
    CoincidentSelector,
    GetMeterReadings,
    ReadingSelector,
    build_get_meter_readings,
    read_get_meter_readings,
)
from cim.model import DateTimeInterval, Name, ObjectRef
from cim.xmlsafe import parse_file
from cim.xmltools import ReadReport

CONNEXO_XSD = FIXTURES / "connexo/outbound/meterreadings/xsd/GetMeterReadings.xsd"
OURS_XSD = ours(NOUN)
NS = "http://iec.ch/TC57/2011/GetMeterReadings#"
KWH_15MIN = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
KWH_DAILY = "11.0.0.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"

round_trip = partial(
    helpers.round_trip, build=build_get_meter_readings, read=read_get_meter_readings
)
read_text = partial(helpers.read_text, read=read_get_meter_readings)
refused = partial(helpers.refused, read=read_get_meter_readings)


def _doc(body: str, ns: str = NS) -> str:
    return document(NOUN, body, ns)


# --- examples ----------------------------------------------------------------------------

UTC3 = timezone(timedelta(hours=3))
JULY = DateTimeInterval(datetime(2017, 7, 1, tzinfo=UTC3), datetime(2017, 7, 13, tzinfo=UTC3))

QUERY = GetMeterReadings(
    end_devices=[ObjectRef("meter-1"), ObjectRef(None, (Name("SN1", "SerialNumber"),))],
    end_device_groups=[ObjectRef("grp-1")],
    meter_readings=CoincidentSelector(
        is_coincident_trigger=True,
        event_type=ObjectRef("3.26.0.85"),
        meter=ObjectRef("meter-1"),
        reading=CoincidentReadingSelector(ObjectRef(KWH_15MIN), "inquiry", "System", JULY),
        usage_point=ObjectRef("up-1"),
    ),
    readings=[
        ReadingSelector(reason="billing", source="System", time_period=JULY),
        ReadingSelector(time_period=DateTimeInterval(start=datetime(2024, 1, 1, tzinfo=UTC))),
    ],
    reading_qualities=[ObjectRef("2.8.0")],
    reading_types=[
        ObjectRef(KWH_DAILY, (Name("[Daily] Secondary Delta A+ (kWh)"),)),
        ObjectRef(None, (Name("A+ 15min"),)),
    ],
    time_schedules=[DateTimeInterval(datetime(2024, 2, 1), datetime(2024, 3, 1))],
    transformer_tanks=[ObjectRef("tank-1")],
    usage_points=[
        ObjectRef(
            "00000000-0000-0000-0000-0000000000ff",
            (Name("K@#Ø%!", "UsagePointName"), Name("Billing", "Purpose", "purpose", "MDM", "m")),
        )
    ],
    usage_point_groups=[ObjectRef("upg-1")],
)


def test_round_trip_and_validate() -> None:
    element = build_get_meter_readings(QUERY)
    assert element.tag == f"{{{NS}}}GetMeterReadings"
    assert_valid(element, CONNEXO_XSD, OURS_XSD)
    back, report = round_trip(QUERY)
    assert back == QUERY
    assert report.warnings == []
    assert back.time_periods == [
        JULY,
        DateTimeInterval(start=datetime(2024, 1, 1, tzinfo=UTC)),
        DateTimeInterval(datetime(2024, 2, 1), datetime(2024, 3, 1)),
    ]


def test_vendor_reading_type_code_is_kept_with_a_warning() -> None:
    query = GetMeterReadings(reading_types=[ObjectRef("3.0.129.160")])
    back, report = round_trip(query)
    assert back == query
    assert len(report.warnings) == 1 and "4-part vendor code" in report.warnings[0]
    assert "/GetMeterReadings/ReadingType" in report.warnings[0]


# --- hypothesis --------------------------------------------------------------------------

text = helpers.texts()
opt_text = st.none() | text
moments = helpers.moments(UTC3)
intervals = helpers.intervals(moments)
reading_type_codes = st.sampled_from(
    [
        KWH_15MIN,
        KWH_DAILY,
        "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0",
        "0.0.0.6.0.1.54.0.0.0.0.0.0.0.128.0.29.0",
        "13.8.0.6.1.1.8.0.0.0.0.1.0.0.0.0.38.0",
    ]
)
reasons = st.none() | st.sampled_from(["billing", "demandReset", "inquiry", "moveOut"])
name_tuples = helpers.name_tuples(text)
refs = helpers.refs(text)
reading_type_refs = st.builds(ObjectRef, st.none() | reading_type_codes, name_tuples)
event_codes = st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join(map(str, t)))
queries = st.builds(
    GetMeterReadings,
    end_devices=st.lists(refs, max_size=2),
    end_device_groups=st.lists(refs, max_size=2),
    meter_readings=st.none()
    | st.builds(
        CoincidentSelector,
        st.none() | st.booleans(),
        st.none() | st.builds(ObjectRef, st.none() | event_codes, name_tuples),
        st.none() | refs,
        st.none()
        | st.builds(
            CoincidentReadingSelector, reading_type_refs, reasons, opt_text, st.none() | intervals
        ),
        st.none() | refs,
    ),
    readings=st.lists(
        st.builds(ReadingSelector, reasons, opt_text, st.none() | intervals), max_size=2
    ),
    reading_qualities=st.lists(refs, max_size=2),
    reading_types=st.lists(reading_type_refs, max_size=3),
    time_schedules=st.lists(intervals, max_size=2),
    transformer_tanks=st.lists(refs, max_size=2),
    usage_points=st.lists(refs, max_size=2),
    usage_point_groups=st.lists(refs, max_size=2),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries)
def test_hypothesis_round_trip(query: GetMeterReadings) -> None:
    element = build_get_meter_readings(query)
    assert_valid(element, CONNEXO_XSD, OURS_XSD)
    back, report = round_trip(query)
    assert back == query
    assert report.warnings == []


# --- public samples ----------------------------------------------------------------------

# Every fixture whose payload is GetMeterReadings: None = read fine.
SAMPLES: dict[str, tuple[ErrorCode | None, str]] = {
    "connexo/samples/coko/meterreadings/GetUsagePointReadingsRequest.xml": (None, "valid"),
}
payloads = partial(helpers.payloads, noun=NOUN)


def test_every_sample_is_listed() -> None:
    assert samples_declaring(NOUN) == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_public_sample(name: str) -> None:
    expected, why = SAMPLES[name]
    try:
        (element,) = payloads(parse_file(FIXTURES / name))
        model = read_get_meter_readings(element, ReadReport())
    except CimError as exc:
        assert exc.error is expected, f"{name}: {exc} (expected {why})"
        return
    assert expected is None, f"{name} was read but should be refused: {why}"
    assert_valid(build_get_meter_readings(model), CONNEXO_XSD, OURS_XSD)


def test_connexo_sample_content() -> None:
    name = "connexo/samples/coko/meterreadings/GetUsagePointReadingsRequest.xml"
    (element,) = payloads(parse_file(FIXTURES / name))
    report = ReadReport()
    query = read_get_meter_readings(element, report)
    assert report.warnings == []
    assert query == GetMeterReadings(
        readings=[ReadingSelector(source="System", time_period=JULY)],
        reading_types=[ObjectRef(KWH_DAILY, (Name("[Daily] Secondary Delta A+ (kWh)"),))],
        usage_points=[
            ObjectRef(
                "00000000-0000-0000-0000-0000000000ff",
                (Name("K@#Ø%!", "UsagePointName"), Name("Billing", "Purpose")),
            )
        ],
    )


# --- tolerance and refusals --------------------------------------------------------------


@pytest.mark.parametrize(
    "ns",
    [
        NS,
        "http://iec.ch/TC57/2009/GetMeterReadings#",
        "http://www.iec.ch/TC57/2011/GetMeterReadings#",
    ],
)
def test_accepted_namespaces(ns: str) -> None:
    query, report = read_text(_doc("<EndDevice><mRID>m</mRID></EndDevice>", ns))
    assert query.end_devices == [ObjectRef("m")]
    assert report.warnings == []


def test_no_namespace_is_read_with_a_warning() -> None:
    query, report = read_text(_doc("<UsagePoint><mRID>u</mRID></UsagePoint>", ""))
    assert query.usage_points == [ObjectRef("u")]
    assert len(report.warnings) == 1


def test_connexo_reading_extensions_are_warnings() -> None:
    xml = _doc(
        "<EndDevice><mRID>m</mRID><serialNumber>SN1</serialNumber></EndDevice>"
        "<Reading><reason>inquiry</reason><scheduleStrategy>Run now</scheduleStrategy>"
        "<connectionMethod>Force</connectionMethod>"
        "<dataSource><name>x</name><NameType><name>y</name></NameType></dataSource>"
        "<source>Meter</source><timePeriod><start>2024-01-01T00:00:00Z</start></timePeriod>"
        "</Reading>"
    )
    query, report = read_text(xml)
    assert query.readings == [
        ReadingSelector(
            "inquiry", "Meter", DateTimeInterval(start=datetime(2024, 1, 1, tzinfo=UTC))
        )
    ]
    assert query.end_devices == [ObjectRef("m", serial_number="SN1")]
    assert [w.split("'")[1] for w in report.warnings] == [
        "scheduleStrategy",
        "connectionMethod",
        "dataSource",
    ]
    # Written back without the extensions, valid against the standard profile.
    assert_valid(build_get_meter_readings(query), OURS_XSD, CONNEXO_XSD)


def test_reading_type_as_ref_attribute() -> None:
    query, _ = read_text(_doc(f'<ReadingType ref="{KWH_15MIN}"/>'))
    assert query.reading_types == [ObjectRef(KWH_15MIN)]


@pytest.mark.parametrize(
    ("body", "code", "where"),
    [
        (
            "<Reading><timePeriod><start>2024-01-01</start></timePeriod></Reading>",
            ErrorCode.BAD_DATETIME,
            "/Reading/timePeriod/start",
        ),
        (
            "<Reading><timePeriod><end>?</end></timePeriod></Reading>",
            ErrorCode.BAD_DATETIME,
            "/Reading/timePeriod/end",
        ),
        ("<Reading><reason>curiosity</reason></Reading>", ErrorCode.BAD_VALUE, "/Reading/reason"),
        (
            "<ReadingType><mRID>0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72</mRID></ReadingType>",
            ErrorCode.BAD_READING_TYPE,
            "/ReadingType/mRID",
        ),
        (
            "<ReadingType><mRID>0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.999.0</mRID></ReadingType>",
            ErrorCode.BAD_READING_TYPE,
            "/ReadingType/mRID",
        ),
        (
            "<ReadingType><mRID>kWh</mRID></ReadingType>",
            ErrorCode.BAD_READING_TYPE,
            "/ReadingType/mRID",
        ),
        ("<TimeSchedule/>", ErrorCode.MISSING_ELEMENT, "/TimeSchedule"),
        (
            "<TimeSchedule><scheduleInterval><start>1 May</start></scheduleInterval></TimeSchedule>",
            ErrorCode.BAD_DATETIME,
            "/scheduleInterval/start",
        ),
        ("<ReadingQuality/>", ErrorCode.MISSING_ELEMENT, "/ReadingQuality"),
        (
            "<MeterReadings><isCoincidentTrigger>sure</isCoincidentTrigger></MeterReadings>",
            ErrorCode.BAD_VALUE,
            "/MeterReadings/isCoincidentTrigger",
        ),
        (
            "<MeterReadings><Readings><source>s</source></Readings></MeterReadings>",
            ErrorCode.MISSING_ELEMENT,
            "/MeterReadings/Readings",
        ),
        (
            "<MeterReadings><Readings><ReadingType><mRID>1.2</mRID></ReadingType>"
            "</Readings></MeterReadings>",
            ErrorCode.BAD_READING_TYPE,
            "/Readings/ReadingType/mRID",
        ),
        (
            "<MeterReadings><EndDeviceEvents><EndDeviceEventType><mRID>3.26</mRID>"
            "</EndDeviceEventType></EndDeviceEvents></MeterReadings>",
            ErrorCode.BAD_END_DEVICE_TYPE,
            "/EndDeviceEventType/mRID",
        ),
        (
            "<UsagePoint><Names><NameType><name>UsagePointName</name></NameType></Names>"
            "</UsagePoint>",
            ErrorCode.MISSING_ELEMENT,
            "/UsagePoint/Names",
        ),
    ],
)
def test_bad_query(body: str, code: ErrorCode, where: str) -> None:
    error = refused(_doc(body))
    assert error.error is code, error
    assert error.xpath and error.xpath.endswith(where), error.xpath
    assert error.line == 1


def test_wrong_root_is_refused() -> None:
    assert refused(f'<MeterReadings xmlns="{NS}"/>').error is ErrorCode.SCHEMA_INVALID
