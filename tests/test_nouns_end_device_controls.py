"""EndDeviceControls payload: round trips, public samples, XSD validity of what we build,
refusals with the right code, tolerance of vendor elements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial

import cim_noun_helpers as helpers
import pytest
from cim_noun_helpers import FIXTURES, assert_valid, document, ours, samples_declaring
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cim.end_device_controls import (
    NOUN,
    ControlledAppliance,
    ElectronicAddress,
    EndDeviceControl,
    EndDeviceControls,
    EndDeviceRef,
    EndDeviceTiming,
    PanDemandResponse,
    PanDisplay,
    PanPricing,
    PanPricingDetail,
    build_end_device_controls,
    read_end_device_controls,
)
from cim.end_device_events import EndDeviceTypeInfo
from cim.errors import CimError, ErrorCode
from cim.model import DateTimeInterval, Name, ObjectRef
from cim.xmlsafe import parse_bytes, parse_file
from cim.xmltools import ReadReport

CONNEXO_XSD = FIXTURES / "connexo/outbound/enddevicecontrols/xsd/EndDeviceControls.xsd"
CIM4_XSD = FIXTURES / "r0ckflite-cim4/wsdl/xsd/EndDeviceControls.xsd"
OPENWMS_XSD = FIXTURES / "openwms-epri/61968-9/wsdl/xsd/EndDeviceControls.xsd"
OURS_XSD = ours(NOUN)
NS = "http://iec.ch/TC57/2011/EndDeviceControls#"

round_trip = partial(
    helpers.round_trip, build=build_end_device_controls, read=read_end_device_controls
)
read_text = partial(helpers.read_text, read=read_end_device_controls)
refused = partial(helpers.refused, read=read_end_device_controls)


# --- examples ----------------------------------------------------------------------------

UTC2 = timezone(timedelta(hours=2))

DISCONNECT = EndDeviceControl(
    control_type="3.31.0.23",
    mrid="ctl-1",
    dr_program_level=2,
    dr_program_mandatory=True,
    issuer_id="MDM",
    issuer_tracking_id="T-1",
    price_signal=Decimal("0.125"),
    reason="non-payment",
    end_device_groups=[ObjectRef("grp-1", (Name("Feeder 7", "GroupName"),))],
    end_devices=[
        ObjectRef("meter-1"),
        ObjectRef(None, (Name("SN123", "SerialNumber", "serial", "OpenHES", "hes"),)),
    ],
    primary_device_timing=EndDeviceTiming(
        interval=DateTimeInterval(
            datetime(2024, 5, 1, 8, tzinfo=UTC), datetime(2024, 5, 1, 9, tzinfo=UTC)
        )
    ),
    usage_points=[ObjectRef("up-1")],
)

PAN_DEVICE = EndDeviceRef(
    mrid="ihd-1",
    names=(Name("IHD"),),
    install_code="A1B2",
    is_pan=True,
    electronic_address=ElectronicAddress(mac="00:11:22:33:44:55", radio="zigbee"),
)

CONTROLS = EndDeviceControls(
    controls=[
        DISCONNECT,
        EndDeviceControl(
            control_type="0.15.0.54",
            pan_action=PanDemandResponse(
                avg_load_adjustment=Decimal("-10.5"),
                cancel_now=False,
                duration=Decimal("30"),
                start_date_time=datetime(2024, 7, 1, 14, tzinfo=UTC2),
                appliance=ControlledAppliance(is_water_heater=True, is_pool_pump_spa_jacuzzi=False),
            ),
            end_devices=[PAN_DEVICE],
            primary_device_timing=EndDeviceTiming(
                duration=Decimal("60"), duration_indefinite=False, randomisation="start"
            ),
            secondary_device_timing=EndDeviceTiming(randomisation="none"),
            usage_point_groups=[ObjectRef("upg-1")],
        ),
        EndDeviceControl(
            control_type="3.0.0.0",
            pan_action=PanDisplay(
                text_message="Pay your bill", confirmation_required=True, transmission_mode="normal"
            ),
        ),
        EndDeviceControl(
            control_type="3.0.0.1",
            pan_action=PanPricing(
                provider_id=7,
                details=(
                    PanPricingDetail(price=Decimal("0.2534"), price_tier=1, rate_label="peak"),
                    PanPricingDetail(current_time_date=datetime(2024, 1, 1)),
                ),
            ),
        ),
    ],
    control_types=[
        EndDeviceTypeInfo(
            names=(Name("RemoteDisconnect"),),
            mrid="3.31.0.23",
            domain="31",
            event_or_action="23",
            sub_domain="0",
            type="3",
        )
    ],
)


def test_round_trip_and_validate() -> None:
    element = build_end_device_controls(CONTROLS)
    assert element.tag == f"{{{NS}}}EndDeviceControls"
    assert_valid(element, CONNEXO_XSD, CIM4_XSD, OURS_XSD)
    back, report = round_trip(CONTROLS)
    assert back == CONTROLS
    assert report.warnings == []


def test_remote_disconnect_validates_against_epri_profile() -> None:
    # The EPRI copy has an EndDevices type without HAN attributes and a stricter Names.
    document = EndDeviceControls(
        controls=[EndDeviceControl("3.31.0.23", mrid="c", end_devices=[ObjectRef("m")])]
    )
    assert_valid(build_end_device_controls(document), OPENWMS_XSD)


def test_plain_end_devices_read_back_as_object_refs() -> None:
    back, _ = round_trip(CONTROLS)
    assert type(back.controls[0].end_devices[0]) is ObjectRef
    assert type(back.controls[1].end_devices[0]) is EndDeviceRef
    assert back.controls[1].end_devices[0].key == "ihd-1"


# --- hypothesis --------------------------------------------------------------------------

text = helpers.texts()
opt_text = st.none() | text
moments = helpers.moments(UTC2)
opt_moment = st.none() | moments
intervals = helpers.intervals(moments)
numbers = st.none() | st.decimals(
    min_value=-(10**6), max_value=10**6, places=3, allow_nan=False, allow_infinity=False
)
ints = st.none() | st.integers(-(10**9), 10**9)
bools = st.none() | st.booleans()
codes = st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join(map(str, t)))
name_tuples = helpers.name_tuples(text)
refs = helpers.refs(text)
pan_devices = st.builds(
    EndDeviceRef,
    mrid=opt_text,
    names=name_tuples,
    install_code=text,  # at least one HAN attribute, so it reads back as an EndDeviceRef
    is_pan=bools,
    electronic_address=st.none() | st.builds(ElectronicAddress, *[opt_text] * 8),
)
timings = st.builds(
    EndDeviceTiming,
    numbers,
    bools,
    st.none() | st.sampled_from(["default", "end", "none", "start", "startAndEnd"]),
    st.none() | intervals,
)
pan_actions = st.one_of(
    st.none(),
    st.builds(
        PanDemandResponse,
        numbers,
        opt_text,
        opt_moment,
        bools,
        opt_text,
        numbers,
        numbers,
        opt_text,
        numbers,
        bools,
        numbers,
        opt_text,
        numbers,
        numbers,
        opt_moment,
        st.none() | st.builds(ControlledAppliance, *[bools] * 12),
    ),
    st.builds(
        PanDisplay,
        opt_text,
        bools,
        numbers,
        bools,
        opt_text,
        opt_moment,
        opt_text,
        st.none() | st.sampled_from(["anonymous", "both", "normal"]),
    ),
    st.builds(
        PanPricing,
        opt_text,
        numbers,
        bools,
        ints,
        opt_moment,
        st.lists(
            st.builds(
                PanPricingDetail,
                numbers,
                opt_text,
                opt_moment,
                numbers,
                numbers,
                numbers,
                numbers,
                ints,
                ints,
                opt_text,
                opt_text,
                opt_text,
                opt_text,
            ),
            max_size=2,
        ).map(tuple),
    ),
)
controls = st.builds(
    EndDeviceControl,
    control_type=codes,
    mrid=opt_text,
    dr_program_level=ints,
    dr_program_mandatory=bools,
    issuer_id=opt_text,
    issuer_tracking_id=opt_text,
    price_signal=numbers,
    reason=opt_text,
    pan_action=pan_actions,
    end_device_groups=st.lists(refs, max_size=2),
    end_devices=st.lists(refs | pan_devices, max_size=2),
    primary_device_timing=st.none() | timings,
    secondary_device_timing=st.none() | timings,
    usage_point_groups=st.lists(refs, max_size=2),
    usage_points=st.lists(refs, max_size=2),
)
type_infos = st.builds(
    EndDeviceTypeInfo,
    names=st.lists(helpers.names(text), min_size=1, max_size=2).map(tuple),
    mrid=st.none() | codes,
    domain=opt_text,
    event_or_action=opt_text,
    sub_domain=opt_text,
    type=opt_text,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.builds(EndDeviceControls, st.lists(controls, max_size=3), st.lists(type_infos, max_size=2))
)
def test_hypothesis_round_trip(document: EndDeviceControls) -> None:
    element = build_end_device_controls(document)
    assert_valid(element, CONNEXO_XSD, CIM4_XSD, OURS_XSD)
    back, report = round_trip(document)
    assert back == document
    assert report.warnings == []


# --- public samples ----------------------------------------------------------------------

PLACEHOLDER_REF = (
    ErrorCode.BAD_END_DEVICE_TYPE,
    "EndDeviceControlType ref='?' (soapUI placeholder)",
)
# Every fixture whose payload is EndDeviceControls, and what reading it gives:
# None = read fine; an ErrorCode = refused, with the reason.
SAMPLES: dict[str, tuple[ErrorCode | None, str]] = {
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/CreateEndDeviceControls.xml": (
        PLACEHOLDER_REF
    ),
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/Request_1_2.xml": PLACEHOLDER_REF,
    "openwms-epri/soapui-extracted/MeterConnect-AMI-1/CreatedEndDeviceControls.xml": (
        PLACEHOLDER_REF
    ),
    "openwms-epri/soapui-extracted/MeterConnect-AMI-2/Fail.xml": PLACEHOLDER_REF,
    "openwms-epri/soapui-extracted/MeterConnect-AMI-2/Success.xml": PLACEHOLDER_REF,
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-3/Fail.xml": PLACEHOLDER_REF,
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-4/Request_1.xml": PLACEHOLDER_REF,
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-4/Test_Request.xml": PLACEHOLDER_REF,
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-3/Success.xml": (
        ErrorCode.BAD_END_DEVICE_TYPE,
        "EndDeviceControlType ref='1.2' has 2 parts, not 4",
    ),
    # soapUI templates with '?' in every field; the first one met is an xs:integer.
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/bogus.xml": (
        ErrorCode.BAD_VALUE,
        "drProgramLevel '?' is not an integer",
    ),
    "r0ckflite-cim4/soapui-extracted/Request_1.xml": (
        ErrorCode.BAD_VALUE,
        "drProgramLevel '?' is not an integer",
    ),
    # Not well-formed: the 'met' prefix is not declared.
    "openwms-epri/soapui-extracted/Disconnect-soapui-project/Request_Disconnect.xml": (
        ErrorCode.NOT_WELL_FORMED,
        "undeclared namespace prefix",
    ),
}
# Declare the EndDeviceControls# namespace but carry no EndDeviceControls document.
NO_PAYLOAD = {
    "openwms-epri/soapui-extracted/MeterConnect-AMI-1/resp_Response_1.xml",
    "openwms-epri/soapui-extracted/MeterConnect_MDMS-4/resp_Response_1.xml",
}
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
        model = read_end_device_controls(element, ReadReport())
    except CimError as exc:
        assert exc.error is expected, f"{name}: {exc} (expected {why})"
        assert exc.line is not None
        if expected is ErrorCode.BAD_END_DEVICE_TYPE:
            assert exc.xpath.endswith("/EndDeviceControl/EndDeviceControlType")
        elif expected is ErrorCode.BAD_VALUE:
            assert exc.xpath.endswith("/EndDeviceControl/drProgramLevel")
        return
    assert expected is None, f"{name} was read but should be refused: {why}"
    assert_valid(build_end_device_controls(model), CONNEXO_XSD, OURS_XSD)


def test_epri_sample_with_a_code_reads() -> None:
    """The EPRI MeterConnect request with its placeholder replaced by a real code."""
    data = (FIXTURES / "openwms-epri/soapui-extracted/MeterConnect-AMI-2/Success.xml").read_bytes()
    data = data.replace(b'ref="?"', b'ref="3.31.0.18"')
    (element,) = payloads(parse_bytes(data))
    document = read_end_device_controls(element, ReadReport())
    assert document == EndDeviceControls(controls=[EndDeviceControl("3.31.0.18", mrid="9801")])


# --- tolerance and refusals --------------------------------------------------------------


def _doc(control_body: str, ns: str = NS, extra: str = "") -> str:
    return document(NOUN, f"<EndDeviceControl>{control_body}</EndDeviceControl>{extra}", ns)


TYPE = '<EndDeviceControlType ref="3.31.0.23"/>'


@pytest.mark.parametrize(
    "ns",
    [
        NS,
        "http://iec.ch/TC57/2009/EndDeviceControls#",
        "http://www.iec.ch/TC57/2011/EndDeviceControls#",
    ],
)
def test_accepted_namespaces(ns: str) -> None:
    document, report = read_text(_doc(TYPE, ns))
    assert document.controls[0].control_type == "3.31.0.23"
    assert report.warnings == []


def test_no_namespace_is_read_with_a_warning() -> None:
    document, report = read_text(_doc(TYPE, ""))
    assert document.controls[0].control_type == "3.31.0.23"
    assert len(report.warnings) == 1


def test_connexo_extensions_are_warnings() -> None:
    xml = _doc(
        "<mRID>c1</mRID><scheduleStrategy>Run now</scheduleStrategy>"
        + TYPE
        + "<EndDeviceControlAttribute><name>a</name><value>b</value></EndDeviceControlAttribute>"
        "<EndDevices><mRID>m1</mRID><serialNumber>SN1</serialNumber></EndDevices>"
    )
    document, report = read_text(xml)
    (control,) = document.controls
    assert control.mrid == "c1"
    assert control.end_devices == [ObjectRef("m1", serial_number="SN1")]
    assert [w.split("'")[1] for w in report.warnings] == [
        "scheduleStrategy",
        "EndDeviceControlAttribute",
    ]
    # Read, and written back without the extensions: valid against the standard profile.
    assert_valid(build_end_device_controls(document), OURS_XSD, CIM4_XSD)


def test_second_pan_choice_is_ignored_with_a_warning() -> None:
    document, report = read_text(
        _doc("<PanDisplay><textMessage>hi</textMessage></PanDisplay><PanPricing/>" + TYPE)
    )
    assert document.controls[0].pan_action == PanDisplay(text_message="hi")
    assert len(report.warnings) == 1 and "PanPricing" in report.warnings[0]


@pytest.mark.parametrize(
    ("body", "code", "where"),
    [
        ("<mRID>c</mRID>", ErrorCode.MISSING_ELEMENT, "/EndDeviceControl"),
        ("<EndDeviceControlType/>", ErrorCode.MISSING_ELEMENT, "/EndDeviceControlType"),
        ('<EndDeviceControlType ref=""/>', ErrorCode.MISSING_ELEMENT, "/EndDeviceControlType"),
        (
            '<EndDeviceControlType ref="3.31.0"/>',
            ErrorCode.BAD_END_DEVICE_TYPE,
            "/EndDeviceControlType",
        ),
        (
            '<EndDeviceControlType ref="3.31.0.x"/>',
            ErrorCode.BAD_END_DEVICE_TYPE,
            "/EndDeviceControlType",
        ),
        (
            '<EndDeviceControlType ref="03.31.0.23"/>',
            ErrorCode.BAD_END_DEVICE_TYPE,
            "/EndDeviceControlType",
        ),
        (
            '<EndDeviceControlType ref="RemoteDisconnect"/>',
            ErrorCode.BAD_END_DEVICE_TYPE,
            "/EndDeviceControlType",
        ),
        ("<drProgramLevel>high</drProgramLevel>" + TYPE, ErrorCode.BAD_VALUE, "/drProgramLevel"),
        (
            "<drProgramMandatory>yes</drProgramMandatory>" + TYPE,
            ErrorCode.BAD_VALUE,
            "/drProgramMandatory",
        ),
        ("<priceSignal>cheap</priceSignal>" + TYPE, ErrorCode.BAD_VALUE, "/priceSignal"),
        ("<priceSignal>NaN</priceSignal>" + TYPE, ErrorCode.BAD_VALUE, "/priceSignal"),
        (
            TYPE
            + "<primaryDeviceTiming><interval><start>2024-05-01 08:00</start></interval></primaryDeviceTiming>",
            ErrorCode.BAD_DATETIME,
            "/primaryDeviceTiming/interval/start",
        ),
        (
            TYPE + "<primaryDeviceTiming><duration>?</duration></primaryDeviceTiming>",
            ErrorCode.BAD_VALUE,
            "/primaryDeviceTiming/duration",
        ),
        (
            TYPE
            + "<primaryDeviceTiming><randomisation>sometimes</randomisation></primaryDeviceTiming>",
            ErrorCode.BAD_VALUE,
            "/primaryDeviceTiming/randomisation",
        ),
        (
            "<PanDemandResponse><startDateTime>?</startDateTime></PanDemandResponse>" + TYPE,
            ErrorCode.BAD_DATETIME,
            "/PanDemandResponse/startDateTime",
        ),
        (
            "<PanDemandResponse><appliance><isWaterHeater>?</isWaterHeater></appliance></PanDemandResponse>"
            + TYPE,
            ErrorCode.BAD_VALUE,
            "/appliance/isWaterHeater",
        ),
        (
            "<PanPricing><PanPricingDetails><priceTier>1.5</priceTier></PanPricingDetails></PanPricing>"
            + TYPE,
            ErrorCode.BAD_VALUE,
            "/PanPricingDetails/priceTier",
        ),
        (
            "<PanDisplay><transmissionMode>loud</transmissionMode></PanDisplay>" + TYPE,
            ErrorCode.BAD_VALUE,
            "/PanDisplay/transmissionMode",
        ),
        (
            TYPE + "<EndDevices><isPan>maybe</isPan></EndDevices>",
            ErrorCode.BAD_VALUE,
            "/EndDevices/isPan",
        ),
        (
            TYPE + "<UsagePoints><Names/></UsagePoints>",
            ErrorCode.MISSING_ELEMENT,
            "/UsagePoints/Names",
        ),
    ],
)
def test_bad_control(body: str, code: ErrorCode, where: str) -> None:
    error = refused(_doc(body))
    assert error.error is code, error
    assert error.xpath and error.xpath.endswith(where), error.xpath
    assert error.line == 1


def test_bad_control_type_description() -> None:
    base = f'<EndDeviceControls xmlns="{NS}"><EndDeviceControlType>%s</EndDeviceControlType></EndDeviceControls>'
    assert refused(base % "<mRID>3.31.0.23</mRID>").error is ErrorCode.MISSING_ELEMENT
    error = refused(base % "<mRID>3.31.0.23.1</mRID><Names><name>x</name></Names>")
    assert error.error is ErrorCode.BAD_END_DEVICE_TYPE
    assert error.xpath.endswith("/EndDeviceControlType/mRID")


def test_wrong_root_is_refused() -> None:
    assert refused(f'<EndDeviceEvents xmlns="{NS}"/>').error is ErrorCode.SCHEMA_INVALID
