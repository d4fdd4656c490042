"""MeterReadSchedule payload (IEC 61968-9 Ed. 2, CIM15 profile): a schedule of meter reads.

The only public copy of the profile is the EPRI interoperability set (sixthcolumn/openwms):
what to read (``ReadingType*``), from where (``EndDevice*``, ``EndDeviceGroup*``,
``UsagePoint*``, ``UsagePointGroup*``, ``CustomerAccount*``, ``CustomerAgreement*``) and when
(``TimeSchedule*``: a scheduleInterval, an optional recurrence and explicit TimePoints).
An EndDevice here requires its mRID.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from lxml import etree

from cim.elements import read_interval, read_object_ref, write_interval, write_object_ref
from cim.end_device_events import expect_root
from cim.get_meter_readings import read_reading_type_ref
from cim.model import DateTimeInterval, ObjectRef
from cim.namespaces import payload_namespace
from cim.xmltools import (
    Builder,
    ReadReport,
    bool_of,
    children,
    datetime_of,
    decimal_of,
    int_of,
    missing,
    text_of,
)

NOUN = "MeterReadSchedule"


@dataclass(frozen=True)
class TimePoint:
    date_time: datetime | None = None
    relative_time_interval: Decimal | None = None  # seconds from the schedule start
    sequence_number: int | None = None
    window: DateTimeInterval | None = None


@dataclass
class TimeSchedule:
    """When to read: ``schedule_interval`` bounds the schedule; ``recurrence_period``
    (seconds) and ``offset`` (seconds) or ``recurrence_pattern`` repeat it; ``time_points``
    list explicit instants."""

    schedule_interval: DateTimeInterval
    disabled: bool | None = None
    offset: Decimal | None = None
    recurrence_pattern: str | None = None
    recurrence_period: Decimal | None = None
    time_points: list[TimePoint] = field(default_factory=list)


@dataclass
class MeterReadSchedule:
    customer_accounts: list[ObjectRef] = field(default_factory=list)
    customer_agreements: list[ObjectRef] = field(default_factory=list)
    end_devices: list[ObjectRef] = field(default_factory=list)  # mRID required
    end_device_groups: list[ObjectRef] = field(default_factory=list)
    reading_types: list[ObjectRef] = field(default_factory=list)  # mRID = ReadingType code
    time_schedules: list[TimeSchedule] = field(default_factory=list)
    usage_points: list[ObjectRef] = field(default_factory=list)
    usage_point_groups: list[ObjectRef] = field(default_factory=list)


_REF_LISTS = {
    "CustomerAccount": "customer_accounts",
    "CustomerAgreement": "customer_agreements",
    "EndDeviceGroup": "end_device_groups",
    "UsagePoint": "usage_points",
    "UsagePointGroup": "usage_point_groups",
}


# --- read --------------------------------------------------------------------------------


def read_meter_read_schedule(element: etree._Element, report: ReadReport) -> MeterReadSchedule:
    expect_root(element, NOUN, report)
    schedule = MeterReadSchedule()
    for tag, child in children(element):
        if tag in _REF_LISTS:
            getattr(schedule, _REF_LISTS[tag]).append(read_object_ref(child, report))
        elif tag == "EndDevice":
            device = read_object_ref(child, report)
            if not device.mrid:
                raise missing(child, "mRID")
            schedule.end_devices.append(device)
        elif tag == "ReadingType":
            schedule.reading_types.append(read_reading_type_ref(child, report))
        elif tag == "TimeSchedule":
            schedule.time_schedules.append(_read_time_schedule(child, report))
        else:
            report.ignored(child)
    return schedule


def _read_time_schedule(element: etree._Element, report: ReadReport) -> TimeSchedule:
    values: dict[str, Any] = {}
    points: list[TimePoint] = []
    interval = None
    for tag, child in children(element):
        if tag == "disabled":
            values["disabled"] = bool_of(child)
        elif tag == "offset":
            values["offset"] = decimal_of(child)
        elif tag == "recurrencePattern":
            values["recurrence_pattern"] = text_of(child)
        elif tag == "recurrencePeriod":
            values["recurrence_period"] = decimal_of(child)
        elif tag == "scheduleInterval":
            interval = read_interval(child, report)
        elif tag == "TimePoints":
            points.append(_read_time_point(child, report))
        else:
            report.ignored(child)
    if interval is None:
        raise missing(element, "scheduleInterval")
    return TimeSchedule(schedule_interval=interval, time_points=points, **values)


def _read_time_point(element: etree._Element, report: ReadReport) -> TimePoint:
    values: dict[str, Any] = {}
    for tag, child in children(element):
        if tag == "dateTime":
            values["date_time"] = datetime_of(child)
        elif tag == "relativeTimeInterval":
            values["relative_time_interval"] = decimal_of(child)
        elif tag == "sequenceNumber":
            values["sequence_number"] = int_of(child)
        elif tag == "window":
            values["window"] = read_interval(child, report)
        else:
            report.ignored(child)
    return TimePoint(**values)


# --- build -------------------------------------------------------------------------------


def build_meter_read_schedule(schedule: MeterReadSchedule) -> etree._Element:
    b = Builder(payload_namespace(NOUN))
    root = b.root(NOUN, nsmap={None: payload_namespace(NOUN)})
    for ref in schedule.customer_accounts:
        write_object_ref(b, root, "CustomerAccount", ref)
    for ref in schedule.customer_agreements:
        write_object_ref(b, root, "CustomerAgreement", ref)
    for ref in schedule.end_devices:
        if not ref.mrid:
            raise ValueError("a MeterReadSchedule EndDevice needs an mRID")
        write_object_ref(b, root, "EndDevice", ref)
    for ref in schedule.end_device_groups:
        write_object_ref(b, root, "EndDeviceGroup", ref)
    for ref in schedule.reading_types:
        write_object_ref(b, root, "ReadingType", ref)
    for time_schedule in schedule.time_schedules:
        _write_time_schedule(b, root, time_schedule)
    for ref in schedule.usage_points:
        write_object_ref(b, root, "UsagePoint", ref)
    for ref in schedule.usage_point_groups:
        write_object_ref(b, root, "UsagePointGroup", ref)
    return root


def _seconds(value: Decimal | None) -> str | None:
    return None if value is None else format(value, "f")


def _write_time_schedule(b: Builder, parent: etree._Element, schedule: TimeSchedule) -> None:
    element = b.child(parent, "TimeSchedule")
    b.text(element, "disabled", schedule.disabled)
    b.text(element, "offset", _seconds(schedule.offset))
    b.text(element, "recurrencePattern", schedule.recurrence_pattern)
    b.text(element, "recurrencePeriod", _seconds(schedule.recurrence_period))
    write_interval(b, element, "scheduleInterval", schedule.schedule_interval)
    for point in schedule.time_points:
        point_element = b.child(element, "TimePoints")
        b.text(point_element, "dateTime", point.date_time)
        b.text(point_element, "relativeTimeInterval", _seconds(point.relative_time_interval))
        b.text(point_element, "sequenceNumber", point.sequence_number)
        if point.window is not None:
            write_interval(b, point_element, "window", point.window)
