"""`openhes demo`: the IEC 61968-9 message layer end to end, on this machine alone.

It plays both sides of an integration: a head-end that streams a day of 15-minute
interval data for a fleet into a CreatedMeterReadings message, and an MDM/CIS/OMS that
asks for readings, sends a remote disconnect and receives an outage event. Every message
is validated against OpenHES's schemas and read back; hostile XML is shown refused.
Later issues grow this into the full head-end demo (simulated fleet, jobs, SOAP).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from lxml import etree

from cim import namespaces as ns
from cim.codelists.enddevicetype import EndDeviceTypeCode
from cim.codelists.readingtype import ReadingType
from cim.end_device_controls import EndDeviceControl, EndDeviceControls, EndDeviceTiming
from cim.end_device_events import EndDeviceEvents
from cim.envelope import Header, Message, MessageKind, Payload, Request
from cim.errors import CimError, ErrorCode
from cim.get_meter_readings import GetMeterReadings, ReadingSelector
from cim.messages import Parsed, emit_message, new_message_id, parse_message, respond
from cim.meter_readings_stream import MeterReadingsWriter, iter_interval_readings
from cim.model import DateTimeInterval, EndDeviceEvent, EndDeviceEventDetail, Name, ObjectRef
from cim.validation import validate, validate_file
from cim.xmlsafe import XmlLimits

INTERVAL_KWH = "0.0.2.4.1.1.12.0.0.0.0.0.0.0.0.3.72.0"
INTERVAL = timedelta(minutes=15)


@dataclass
class Step:
    name: str
    ok: bool
    figure: str


def _meter(index: int) -> ObjectRef:
    return ObjectRef(
        f"{index:08d}-demo-4000-8000-openhes", (Name(f"LGZ{index:07d}", "SerialNumber"),)
    )


def _daily_shape(minute_of_day: int) -> float:
    # Household load: night base, morning and evening peaks (kWh per 15 minutes).
    hour = minute_of_day / 60
    morning = max(0.0, 1 - abs(hour - 7.5) / 2)
    evening = max(0.0, 1 - abs(hour - 19) / 3)
    return 0.05 + 0.25 * morning + 0.45 * evening


def _profile(index: int, start: datetime, intervals: int) -> Iterator[tuple[datetime, Decimal]]:
    rng = random.Random(index)
    scale = 0.6 + rng.random()
    for i in range(1, intervals + 1):
        end = start + i * INTERVAL
        base = _daily_shape((end - INTERVAL).hour * 60 + (end - INTERVAL).minute)
        kwh = base * scale * (0.85 + 0.3 * rng.random())
        yield end, Decimal(round(kwh * 1000)).scaleb(-3)


def _header(verb: str, noun: str, source: str, **extra: object) -> Header:
    return Header(
        verb,
        noun,
        timestamp=datetime.now(UTC).replace(microsecond=0),
        source=source,
        message_id=new_message_id(),
        **extra,  # type: ignore[arg-type]
    )


def _check_message(message: Message, path: Path) -> tuple[bool, str]:
    """Emit, validate against our XSDs, read back; (equal and valid, what was checked)."""
    data = emit_message(message, pretty=True)
    path.write_bytes(data)
    issues = validate(etree.fromstring(data))
    back = parse_message(data).message
    return (not issues and back == message), f"{len(data):,} B, {len(issues)} schema errors"


def run_demo(meters: int = 1000, days: int = 1, out: Path | None = None) -> int:
    if meters < 1 or days < 1:
        print("openhes demo: --meters and --days must be at least 1")
        return 2
    folder = Path(out) if out else Path(tempfile.mkdtemp(prefix="openhes-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    steps: list[Step] = []
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=days)
    intervals = days * 96
    reading_type = ReadingType.parse(INTERVAL_KWH)
    print(f"OpenHES demo: {meters:,} meters x {intervals} intervals ({reading_type.describe()})")
    print(f"files in {folder}\n")

    # 1. Head-end side: stream the interval data into one CreatedMeterReadings message.
    readings_path = folder / "CreatedMeterReadings.xml"
    expected_total = Decimal(0)
    began = time.perf_counter()
    with MeterReadingsWriter(
        readings_path,
        {
            "verb": "created",
            "noun": "MeterReadings",
            "source": "OpenHES-demo-HES",
            "message_id": new_message_id(),
            "timestamp": datetime.now(UTC).replace(microsecond=0),
        },
    ) as writer:
        for index in range(meters):
            values = list(_profile(index, start, intervals))
            expected_total += sum((v for _, v in values), Decimal(0))
            writer.write_interval_block(_meter(index), INTERVAL_KWH, values)
    seconds = time.perf_counter() - began
    count = meters * intervals
    size_mb = readings_path.stat().st_size / 1e6
    steps.append(
        Step(
            "stream CreatedMeterReadings",
            True,
            f"{count:,} readings, {size_mb:.1f} MB, {count / seconds:,.0f}/s",
        )
    )

    # 2. Validate it against OpenHES's schemas.
    began = time.perf_counter()
    issues = validate_file(readings_path, limits=_bulk_limits())
    seconds = time.perf_counter() - began
    steps.append(
        Step("validate against schemas/", not issues, f"{len(issues)} errors in {seconds:.2f} s")
    )

    # 3. MDM side: stream it back in bounded memory and reconcile every value.
    began = time.perf_counter()
    seen = 0
    other_types = 0
    total = Decimal(0)
    for _meter_key, ref, reading in iter_interval_readings(readings_path, limits=_bulk_limits()):
        seen += 1
        total += reading.value or 0
        other_types += ref != INTERVAL_KWH
    seconds = time.perf_counter() - began
    reconciled = seen == count and total == expected_total and not other_types
    steps.append(
        Step(
            "stream back and reconcile",
            reconciled,
            f"{seen:,} readings, sum {total} kWh exact, {seen / seconds:,.0f}/s",
        )
    )

    # 4. The enterprise requests, each emitted, validated and read back.
    meter = _meter(0)
    window = DateTimeInterval(start, today)
    get = Message(
        MessageKind.REQUEST,
        _header("get", "MeterReadings", "MDM"),
        request=Request(
            get_profile=GetMeterReadings(
                end_devices=[meter],
                readings=[ReadingSelector(time_period=window)],
                reading_types=[ObjectRef(INTERVAL_KWH)],
            )
        ),
        wrapper="GetMeterReadings",
    )
    ok, figure = _check_message(get, folder / "GetMeterReadings.xml")
    steps.append(Step("GetMeterReadings request", ok, figure))

    disconnect_code = EndDeviceTypeCode.parse("3.31.0.23")
    disconnect = Message(
        MessageKind.REQUEST,
        _header(
            "create",
            "EndDeviceControls",
            "CIS",
            async_reply_flag=True,
            reply_address="http://cis.example/ReplyEndDeviceControls",
        ),
        payload=Payload(
            EndDeviceControls(
                controls=[
                    EndDeviceControl(
                        control_type=disconnect_code.code,
                        mrid=new_message_id(),
                        reason="non-payment",
                        end_devices=[meter],
                        primary_device_timing=EndDeviceTiming(
                            interval=DateTimeInterval(today, None)
                        ),
                    )
                ]
            )
        ),
        wrapper="CreateEndDeviceControls",
    )
    ok, figure = _check_message(disconnect, folder / "CreateEndDeviceControls.xml")
    steps.append(Step(f"disconnect ({disconnect_code.describe()})", ok, figure))

    outage_code = EndDeviceTypeCode.parse("3.26.0.85")
    outage = Message(
        MessageKind.EVENT,
        _header("created", "EndDeviceEvents", "OpenHES-demo-HES"),
        payload=Payload(
            EndDeviceEvents(
                events=[
                    EndDeviceEvent(
                        outage_code.code,
                        today - timedelta(minutes=7),
                        mrid=new_message_id(),
                        asset=ObjectRef(meter.mrid),
                        details=[EndDeviceEventDetail("LastGasp", "true")],
                    )
                ]
            )
        ),
    )
    ok, figure = _check_message(outage, folder / "CreatedEndDeviceEvents.xml")
    steps.append(Step(f"outage event ({outage_code.describe()})", ok, figure))

    # 5. Hostile XML is answered with a FAILED reply and a documented code.
    hostile = {
        "XXE (file)": b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<RequestMessage xmlns="http://iec.ch/TC57/2011/schema/message"><Header><Verb>get</Verb>'
        b"<Noun>&x;</Noun><MessageID>evil</MessageID></Header></RequestMessage>",
        "not XML": b"GET /etc/passwd HTTP/1.0",
    }
    m = f"{{{ns.MESSAGE}}}"
    for label, data in hostile.items():
        answer = etree.fromstring(respond(data, _must_not_be_handled))
        result = answer.findtext(f"{m}Reply/{m}Result")
        code = answer.findtext(f"{m}Reply/{m}Error/{m}code")
        reason = answer.findtext(f"{m}Reply/{m}Error/{m}reason") or ""
        steps.append(
            Step(f"refuse {label}", result == "FAILED", f"{result} [{code}] {reason[:60]}")
        )

    width = max(len(s.name) for s in steps)
    for step in steps:
        print(f"  {'ok ' if step.ok else 'FAIL'}  {step.name:<{width}}  {step.figure}")
    failed = [s for s in steps if not s.ok]
    print()
    if failed:
        print(f"openhes demo: {len(failed)} step(s) failed")
        return 1
    print(f"every step succeeded; the messages are in {folder}")
    return 0


def _bulk_limits() -> XmlLimits:
    return XmlLimits(max_bytes=8 << 30)


def _must_not_be_handled(parsed: Parsed) -> Message:
    raise CimError(ErrorCode.INTERNAL, "a hostile message reached the handler")
