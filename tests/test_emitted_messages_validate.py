"""Every message form OpenHES emits validates against its own XSDs and against the
matching public XSD among the fixtures: generic 61968-100 envelopes and per-noun wrappers,
for every noun, requests, events, replies (OK and FAILED) and compressed payloads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from cim.end_device_controls import EndDeviceControl, EndDeviceControls, EndDeviceTiming
from cim.end_device_events import EndDeviceEvents, GetEndDeviceEvents
from cim.envelope import (
    Header,
    Message,
    MessageKind,
    Payload,
    Property,
    Reply,
    ReplyError,
    Request,
    Result,
    User,
)
from cim.errors import CimError, ErrorCode
from cim.get_meter_readings import GetMeterReadings, ReadingSelector
from cim.messages import emit_message, failure_response, parse_message
from cim.meter_read_schedule import MeterReadSchedule, TimeSchedule
from cim.meter_readings import (
    IntervalBlock,
    IntervalReading,
    MeterReading,
    MeterReadings,
    Reading,
    ReadingQuality,
)
from cim.model import DateTimeInterval, EndDeviceEvent, EndDeviceEventDetail, Name, ObjectRef
from cim.validation import SchemaSet, validate

T0 = datetime(2026, 11, 21, tzinfo=UTC)
KWH_15 = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
KWH_REG = "0.0.0.1.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
METER = ObjectRef("b2b7c6f8-0001", (Name("SN-0001", "SerialNumber"),))

METER_READINGS = MeterReadings(
    meter_readings=[
        MeterReading(
            meter=METER,
            usage_point=ObjectRef("up-0001"),
            values_interval=DateTimeInterval(T0, T0 + timedelta(days=1)),
            readings=[
                Reading(KWH_REG, Decimal("12345.678"), T0 + timedelta(days=1), reason="inquiry")
            ],
            interval_blocks=[
                IntervalBlock(
                    KWH_15,
                    [
                        IntervalReading(
                            T0 + timedelta(minutes=15 * i),
                            Decimal(i) / 8,
                            [ReadingQuality("2.8.0")] if i == 3 else [],
                        )
                        for i in range(1, 97)
                    ],
                )
            ],
            events=[
                EndDeviceEvent(
                    "3.26.0.85",
                    T0 + timedelta(hours=3),
                    mrid="ev-1",
                    asset=ObjectRef("b2b7c6f8-0001"),
                )
            ],
        )
    ]
)
GET_METER_READINGS = GetMeterReadings(
    end_devices=[METER],
    readings=[ReadingSelector(time_period=DateTimeInterval(T0, T0 + timedelta(days=1)))],
    reading_types=[ObjectRef(KWH_15)],
)
END_DEVICE_CONTROLS = EndDeviceControls(
    controls=[
        EndDeviceControl(
            control_type="3.31.0.23",
            mrid="ctl-1",
            reason="non-payment",
            end_devices=[METER],
            primary_device_timing=EndDeviceTiming(interval=DateTimeInterval(T0, None)),
        )
    ]
)
END_DEVICE_EVENTS = EndDeviceEvents(
    events=[
        EndDeviceEvent(
            "3.26.0.85",
            T0,
            mrid="ev-2",
            severity="major",
            asset=ObjectRef("b2b7c6f8-0001", serial_number="SN-0001"),
            details=[EndDeviceEventDetail("LastGasp", "true")],
        )
    ]
)
GET_END_DEVICE_EVENTS = GetEndDeviceEvents(
    meters=[ObjectRef("b2b7c6f8-0001")],
    time_schedules=[DateTimeInterval(T0, T0 + timedelta(days=1))],
)
METER_READ_SCHEDULE = MeterReadSchedule(
    end_devices=[ObjectRef("b2b7c6f8-0001")],
    reading_types=[ObjectRef(KWH_15)],
    time_schedules=[
        TimeSchedule(
            DateTimeInterval(T0, T0 + timedelta(days=30)),
            recurrence_pattern="daily",
            recurrence_period=Decimal(86400),
        )
    ],
)


def _header(verb: str, noun: str) -> Header:
    return Header(
        verb,
        noun,
        timestamp=T0,
        source="OpenHES",
        async_reply_flag=False,
        user=User("operator", "Utility"),
        message_id="8e3a1b9c-0000-4000-8000-000000000001",
        correlation_id="corr-1",
        properties=[Property("Region", "North")],
    )


# (name, message, public wrapper XSD relative to the fixtures or None, public payload XSD)
CONNEXO = "connexo/outbound"
CASES = [
    (
        "created MeterReadings (generic)",
        Message(
            MessageKind.EVENT, _header("created", "MeterReadings"), payload=Payload(METER_READINGS)
        ),
        None,
        f"{CONNEXO}/meterreadings/xsd/MeterReadings.xsd",
    ),
    (
        "CreatedMeterReadings (wrapper)",
        Message(
            MessageKind.EVENT,
            _header("created", "MeterReadings"),
            payload=Payload(METER_READINGS),
            wrapper="CreatedMeterReadings",
        ),
        f"{CONNEXO}/meterreadings/xsd/MeterReadingsMessage.xsd",
        None,
    ),
    (
        "MeterReadingsResponseMessage (wrapper)",
        Message(
            MessageKind.RESPONSE,
            _header("reply", "MeterReadings"),
            reply=Reply.ok(),
            payload=Payload(METER_READINGS),
            wrapper="MeterReadingsResponseMessage",
        ),
        f"{CONNEXO}/meterreadings/xsd/MeterReadingsMessage.xsd",
        None,
    ),
    (
        "compressed MeterReadings (generic)",
        Message(
            MessageKind.EVENT,
            _header("created", "MeterReadings"),
            payload=Payload(METER_READINGS, compressed=True, format="XML"),
        ),
        None,
        None,
    ),
    (
        "get MeterReadings (generic)",
        Message(
            MessageKind.REQUEST,
            _header("get", "MeterReadings"),
            request=Request(get_profile=GET_METER_READINGS),
        ),
        None,
        f"{CONNEXO}/meterreadings/xsd/GetMeterReadings.xsd",
    ),
    (
        "GetMeterReadings (wrapper)",
        Message(
            MessageKind.REQUEST,
            _header("get", "MeterReadings"),
            request=Request(get_profile=GET_METER_READINGS),
            wrapper="GetMeterReadings",
        ),
        f"{CONNEXO}/meterreadings/xsd/GetMeterReadingsMessage.xsd",
        None,
    ),
    (
        "create EndDeviceControls (generic)",
        Message(
            MessageKind.REQUEST,
            _header("create", "EndDeviceControls"),
            payload=Payload(END_DEVICE_CONTROLS),
        ),
        None,
        f"{CONNEXO}/enddevicecontrols/xsd/EndDeviceControls.xsd",
    ),
    (
        "CreateEndDeviceControls (wrapper)",
        Message(
            MessageKind.REQUEST,
            _header("create", "EndDeviceControls"),
            payload=Payload(END_DEVICE_CONTROLS),
            wrapper="CreateEndDeviceControls",
        ),
        f"{CONNEXO}/enddevicecontrols/xsd/EndDeviceControlsMessage.xsd",
        None,
    ),
    (
        "EndDeviceControlsResponseMessage PARTIAL (wrapper)",
        Message(
            MessageKind.RESPONSE,
            _header("reply", "EndDeviceControls"),
            reply=Reply(
                Result.PARTIAL,
                [
                    ReplyError(
                        "6.1",
                        "FATAL",
                        "no answer",
                        details="at /EndDeviceControls/EndDeviceControl[2]",
                    )
                ],
            ),
            payload=Payload(END_DEVICE_CONTROLS),
            wrapper="EndDeviceControlsResponseMessage",
        ),
        f"{CONNEXO}/enddevicecontrols/xsd/EndDeviceControlsMessage.xsd",
        None,
    ),
    (
        "created EndDeviceEvents (generic)",
        Message(
            MessageKind.EVENT,
            _header("created", "EndDeviceEvents"),
            payload=Payload(END_DEVICE_EVENTS),
        ),
        None,
        f"{CONNEXO}/enddeviceevents/xsd/EndDeviceEvents.xsd",
    ),
    (
        "CreatedEndDeviceEvents (wrapper)",
        Message(
            MessageKind.EVENT,
            _header("created", "EndDeviceEvents"),
            payload=Payload(END_DEVICE_EVENTS),
            wrapper="CreatedEndDeviceEvents",
        ),
        f"{CONNEXO}/enddeviceevents/xsd/EndDeviceEventsMessage.xsd",
        None,
    ),
    (
        "GetEndDeviceEvents (wrapper)",
        Message(
            MessageKind.REQUEST,
            _header("get", "EndDeviceEvents"),
            request=Request(get_profile=GET_END_DEVICE_EVENTS),
            wrapper="GetEndDeviceEvents",
        ),
        f"{CONNEXO}/getenddeviceevents/xsd/GetEndDeviceEventsMessage.xsd",
        None,
    ),
    (
        "created MeterReadSchedule (generic)",
        Message(
            MessageKind.EVENT,
            _header("created", "MeterReadSchedule"),
            payload=Payload(METER_READ_SCHEDULE),
        ),
        None,
        "openwms-epri/61968-9/wsdl/xsd/MeterReadSchedule.xsd",
    ),
    (
        "CreatedMeterReadSchedule (wrapper)",
        Message(
            MessageKind.EVENT,
            _header("created", "MeterReadSchedule"),
            payload=Payload(METER_READ_SCHEDULE),
            wrapper="CreatedMeterReadSchedule",
        ),
        None,
        None,
    ),
    (
        "FAILED reply (generic)",
        failure_response(
            [
                CimError(
                    ErrorCode.BAD_DATETIME, "'x' is not an xs:dateTime", xpath="/A/b[2]", line=7
                )
            ],
            _header("get", "MeterReadings"),
        ),
        None,
        None,
    ),
]


def _payload_document(root: etree._Element) -> etree._Element | None:
    for child in root:
        if etree.QName(child).localname in ("Payload", "Request"):
            for grandchild in child:
                if isinstance(grandchild.tag, str) and etree.QName(grandchild).namespace.endswith(
                    "#"
                ):
                    return grandchild
    return None


@pytest.mark.parametrize(
    ("name", "message", "public_wrapper", "public_payload"), CASES, ids=[c[0] for c in CASES]
)
def test_emitted_message_is_valid(
    fixtures_dir: Path,
    name: str,
    message: Message,
    public_wrapper: str | None,
    public_payload: str | None,
) -> None:
    data = emit_message(message)
    root = etree.fromstring(data)
    assert validate(root) == [], name
    if public_wrapper is not None:
        assert SchemaSet.for_xsd(fixtures_dir / public_wrapper).validate(root) == []
    else:
        public_message = SchemaSet.for_xsd(
            fixtures_dir / f"{CONNEXO}/meterreadings/xsd/Message.xsd"
        )
        if message.wrapper is None:
            assert public_message.validate(root, nested=False) == []
    if public_payload is not None:
        document = _payload_document(root)
        assert document is not None
        assert SchemaSet.for_xsd(fixtures_dir / public_payload).validate(document) == []
    # ... and what was emitted reads back to the same message.
    assert parse_message(data).message == message
