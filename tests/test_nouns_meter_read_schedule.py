"""MeterReadSchedule payload: round trips, public samples, XSD validity of what we build,
refusals with the right code, tolerance of vendor elements."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial

import cim_noun_helpers as helpers
import pytest
from cim_noun_helpers import FIXTURES, assert_valid, document, ours, samples_declaring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cim.errors import CimError, ErrorCode
from cim.meter_read_schedule import (
    NOUN,
    MeterReadSchedule,
    TimePoint,
    TimeSchedule,
    build_meter_read_schedule,
    read_meter_read_schedule,
)
from cim.model import DateTimeInterval, Name, ObjectRef
from cim.xmlsafe import parse_bytes, parse_file
from cim.xmltools import ReadReport

EPRI_XSD = FIXTURES / "openwms-epri/61968-9/wsdl/xsd/MeterReadSchedule.xsd"
OURS_XSD = ours(NOUN)
NS = "http://iec.ch/TC57/2011/MeterReadSchedule#"
KWH_15MIN = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"

round_trip = partial(
    helpers.round_trip, build=build_meter_read_schedule, read=read_meter_read_schedule
)
read_text = partial(helpers.read_text, read=read_meter_read_schedule)
refused = partial(helpers.refused, read=read_meter_read_schedule)


def _doc(body: str, ns: str = NS) -> str:
    return document(NOUN, body, ns)


# --- examples ----------------------------------------------------------------------------

UTC2 = timezone(timedelta(hours=2))
MAY = DateTimeInterval(datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 6, 1, tzinfo=UTC))

SCHEDULE = MeterReadSchedule(
    customer_accounts=[ObjectRef("acct-1")],
    customer_agreements=[ObjectRef(None, (Name("agr-1", "AgreementName"),))],
    end_devices=[ObjectRef("meter-1", (Name("SN1", "SerialNumber", "s", "HES", "h"),))],
    end_device_groups=[ObjectRef("grp-1")],
    reading_types=[ObjectRef(KWH_15MIN, (Name("A+ 15 min"),)), ObjectRef("3.0.129.160")],
    time_schedules=[
        TimeSchedule(
            schedule_interval=MAY,
            disabled=False,
            offset=Decimal("300"),
            recurrence_pattern="daily",
            recurrence_period=Decimal("86400"),
            time_points=[
                TimePoint(datetime(2024, 5, 1, 0, 5, tzinfo=UTC2), Decimal("0"), 1),
                TimePoint(
                    relative_time_interval=Decimal("43200.5"),
                    sequence_number=2,
                    window=DateTimeInterval(end=datetime(2024, 5, 1, 13)),
                ),
            ],
        ),
        TimeSchedule(schedule_interval=DateTimeInterval()),
    ],
    usage_points=[ObjectRef("up-1")],
    usage_point_groups=[ObjectRef("upg-1")],
)


def test_round_trip_and_validate() -> None:
    element = build_meter_read_schedule(SCHEDULE)
    assert element.tag == f"{{{NS}}}MeterReadSchedule"
    assert_valid(element, EPRI_XSD, OURS_XSD)
    back, report = round_trip(SCHEDULE)
    assert back == SCHEDULE
    # The 4-part vendor ReadingType code is kept, with a warning.
    assert len(report.warnings) == 1 and "3.0.129.160" in report.warnings[0]


def test_end_device_needs_mrid_to_be_built() -> None:
    with pytest.raises(ValueError):
        build_meter_read_schedule(MeterReadSchedule(end_devices=[ObjectRef(None, (Name("x"),))]))


# --- hypothesis --------------------------------------------------------------------------

text = helpers.texts()
opt_text = st.none() | text
moments = helpers.moments(UTC2)
intervals = helpers.intervals(moments)
seconds = st.none() | st.decimals(
    min_value=-(10**7), max_value=10**7, places=2, allow_nan=False, allow_infinity=False
)
name_tuples = helpers.name_tuples(text)
refs = helpers.refs(text)
schedules = st.builds(
    MeterReadSchedule,
    customer_accounts=st.lists(refs, max_size=2),
    customer_agreements=st.lists(refs, max_size=2),
    end_devices=st.lists(st.builds(ObjectRef, text, name_tuples), max_size=2),
    end_device_groups=st.lists(refs, max_size=2),
    reading_types=st.lists(
        st.builds(
            ObjectRef,
            st.none() | st.sampled_from([KWH_15MIN, "0.0.0.1.19.1.12.0.0.0.0.0.0.0.0.3.72.0"]),
            name_tuples,
        ),
        max_size=2,
    ),
    time_schedules=st.lists(
        st.builds(
            TimeSchedule,
            intervals,
            st.none() | st.booleans(),
            seconds,
            opt_text,
            seconds,
            st.lists(
                st.builds(
                    TimePoint,
                    st.none() | moments,
                    seconds,
                    st.none() | st.integers(-(10**6), 10**6),
                    st.none() | intervals,
                ),
                max_size=2,
            ),
        ),
        max_size=2,
    ),
    usage_points=st.lists(refs, max_size=2),
    usage_point_groups=st.lists(refs, max_size=2),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules)
def test_hypothesis_round_trip(schedule: MeterReadSchedule) -> None:
    element = build_meter_read_schedule(schedule)
    assert_valid(element, EPRI_XSD, OURS_XSD)
    back, report = round_trip(schedule)
    assert back == schedule
    assert report.warnings == []


# --- public samples ----------------------------------------------------------------------

EPRI = "openwms-epri/soapui-extracted/"
# Every fixture whose payload is MeterReadSchedule, and what reading it gives:
# None = read fine; an ErrorCode = refused, with the reason. The EPRI soapUI messages use
# '1234' or soapUI's '?' placeholder as ReadingType mRID, which is not a ReadingType code.
SAMPLES: dict[str, tuple[ErrorCode | None, str]] = {
    EPRI + "MeterSchedule-AMI-1/CreatedMeterReadSchedule.xml": (
        ErrorCode.BAD_READING_TYPE,
        "ReadingType mRID '1234'",
    ),
    EPRI + "MeterSchedule-MDMS-1/Success.xml": (ErrorCode.BAD_READING_TYPE, "mRID '1234'"),
    EPRI + "MeterSchedule-MDMS-1/Fail.xml": (ErrorCode.BAD_READING_TYPE, "mRID '1234'"),
    EPRI + "MeterSchedule-AMI-2/Success.xml": (ErrorCode.BAD_READING_TYPE, "mRID '?'"),
    EPRI + "MeterSchedule-AMI-2/Fail.xml": (ErrorCode.BAD_READING_TYPE, "mRID '?'"),
    EPRI + "MeterSchedule-MDMS-2/CreatedMeterReadSchedule.xml": (
        ErrorCode.BAD_READING_TYPE,
        "mRID '?'",
    ),
    EPRI + "MeterSchedule-MDMS-2/resp_Response_1.xml": (ErrorCode.BAD_READING_TYPE, "mRID '?'"),
}
# Declare the MeterReadSchedule# namespace but carry no MeterReadSchedule document.
NO_PAYLOAD = {EPRI + "MeterSchedule-AMI-1/resp_Response_1.xml"}
payloads = partial(helpers.payloads, noun=NOUN)


def test_every_sample_is_listed() -> None:
    assert samples_declaring(NOUN) == set(SAMPLES) | NO_PAYLOAD


@pytest.mark.parametrize("name", sorted(NO_PAYLOAD))
def test_sample_without_payload(name: str) -> None:
    assert payloads(parse_file(FIXTURES / name)) == []


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_public_sample(name: str) -> None:
    expected, why = SAMPLES[name]
    try:
        (element,) = payloads(parse_file(FIXTURES / name))
        model = read_meter_read_schedule(element, ReadReport())
    except CimError as exc:
        assert exc.error is expected, f"{name}: {exc} (expected {why})"
        assert exc.xpath.endswith("/MeterReadSchedule/ReadingType/mRID")
        assert exc.line is not None
        return
    assert expected is None, f"{name} was read but should be refused: {why}"
    assert_valid(build_meter_read_schedule(model), EPRI_XSD, OURS_XSD)


def test_epri_sample_with_a_reading_type_code_reads() -> None:
    data = (FIXTURES / EPRI / "MeterSchedule-MDMS-1/Success.xml").read_bytes()
    data = re.sub(
        rb"(<met1:ReadingType>\s*(?:<!--[^>]*-->\s*)?<met1:mRID>)1234",
        rb"\g<1>" + KWH_15MIN.encode(),
        data,
    )
    (element,) = payloads(parse_bytes(data))
    report = ReadReport()
    schedule = read_meter_read_schedule(element, report)
    assert report.warnings == []
    assert schedule == MeterReadSchedule(
        customer_accounts=[ObjectRef("1234")],
        end_devices=[ObjectRef("1234")],
        reading_types=[ObjectRef(KWH_15MIN)],
    )
    assert_valid(build_meter_read_schedule(schedule), EPRI_XSD, OURS_XSD)


# --- tolerance and refusals --------------------------------------------------------------


@pytest.mark.parametrize(
    "ns",
    [
        NS,
        "http://iec.ch/TC57/2009/MeterReadSchedule#",
        "http://www.iec.ch/TC57/2011/MeterReadSchedule#",
    ],
)
def test_accepted_namespaces(ns: str) -> None:
    schedule, report = read_text(_doc("<EndDevice><mRID>m</mRID></EndDevice>", ns))
    assert schedule.end_devices == [ObjectRef("m")]
    assert report.warnings == []


def test_no_namespace_is_read_with_a_warning() -> None:
    schedule, report = read_text(_doc("<UsagePoint><mRID>u</mRID></UsagePoint>", ""))
    assert schedule.usage_points == [ObjectRef("u")]
    assert len(report.warnings) == 1


def test_vendor_elements_are_warnings() -> None:
    xml = _doc(
        "<TimeSchedule><scheduleInterval><start>2024-01-01T00:00:00Z</start></scheduleInterval>"
        "<vendorCron>0 0 * * *</vendorCron><TimePoints><sequenceNumber>1</sequenceNumber>"
        "<vendorTag/></TimePoints></TimeSchedule><VendorBlock/>"
    )
    schedule, report = read_text(xml)
    assert schedule.time_schedules == [
        TimeSchedule(
            DateTimeInterval(start=datetime(2024, 1, 1, tzinfo=UTC)),
            time_points=[TimePoint(sequence_number=1)],
        )
    ]
    assert [w.split("'")[1] for w in report.warnings] == ["vendorCron", "vendorTag", "VendorBlock"]


INTERVAL = "<scheduleInterval/>"


@pytest.mark.parametrize(
    ("body", "code", "where"),
    [
        (
            "<EndDevice><Names><name>x</name></Names></EndDevice>",
            ErrorCode.MISSING_ELEMENT,
            "/EndDevice",
        ),
        (
            "<TimeSchedule><disabled>false</disabled></TimeSchedule>",
            ErrorCode.MISSING_ELEMENT,
            "/TimeSchedule",
        ),
        (
            "<TimeSchedule><scheduleInterval><start>2024-05-01T25:00:00Z</start>"
            "</scheduleInterval></TimeSchedule>",
            ErrorCode.BAD_DATETIME,
            "/scheduleInterval/start",
        ),
        (
            f"<TimeSchedule><disabled>no</disabled>{INTERVAL}</TimeSchedule>",
            ErrorCode.BAD_VALUE,
            "/TimeSchedule/disabled",
        ),
        (
            f"<TimeSchedule><recurrencePeriod>1 day</recurrencePeriod>{INTERVAL}</TimeSchedule>",
            ErrorCode.BAD_VALUE,
            "/TimeSchedule/recurrencePeriod",
        ),
        (
            f"<TimeSchedule><offset>INF</offset>{INTERVAL}</TimeSchedule>",
            ErrorCode.BAD_VALUE,
            "/TimeSchedule/offset",
        ),
        (
            f"<TimeSchedule>{INTERVAL}<TimePoints><sequenceNumber>first</sequenceNumber>"
            "</TimePoints></TimeSchedule>",
            ErrorCode.BAD_VALUE,
            "/TimePoints/sequenceNumber",
        ),
        (
            f"<TimeSchedule>{INTERVAL}<TimePoints><dateTime>now</dateTime></TimePoints>"
            "</TimeSchedule>",
            ErrorCode.BAD_DATETIME,
            "/TimePoints/dateTime",
        ),
        (
            f"<TimeSchedule>{INTERVAL}<TimePoints><window><end>?</end></window></TimePoints>"
            "</TimeSchedule>",
            ErrorCode.BAD_DATETIME,
            "/TimePoints/window/end",
        ),
        (
            "<ReadingType><mRID>0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0.0</mRID></ReadingType>",
            ErrorCode.BAD_READING_TYPE,
            "/ReadingType/mRID",
        ),
        ('<ReadingType ref="kWh"/>', ErrorCode.BAD_READING_TYPE, "/ReadingType"),
        ("<UsagePointGroup><Names/></UsagePointGroup>", ErrorCode.MISSING_ELEMENT, "/Names"),
    ],
)
def test_bad_schedule(body: str, code: ErrorCode, where: str) -> None:
    error = refused(_doc(body))
    assert error.error is code, error
    assert error.xpath and error.xpath.endswith(where), error.xpath
    assert error.line == 1


def test_wrong_root_is_refused() -> None:
    assert refused(f'<MeterReadings xmlns="{NS}"/>').error is ErrorCode.SCHEMA_INVALID
