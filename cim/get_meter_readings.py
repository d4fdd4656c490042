"""GetMeterReadings payload (IEC 61968-9 Ed. 2, CIM15 Get profile): which readings a
MeterReadings get request asks for.

Selectors: end devices, end device groups, usage points, usage point groups, transformer
tanks, reading types and reading qualities, the time windows (``Reading.timePeriod`` and
``TimeSchedule.scheduleInterval``) and an optional coincident-reading selection
(``MeterReadings``). Element names, order and cardinality follow the public profile
(Connexo's copy of the 2013 Get profile) without its vendor extensions: ``Reading``'s
``scheduleStrategy``, ``connectionMethod`` and ``dataSource`` are ignored with a warning;
``serialNumber`` of EndDevice/Meter is kept when read but never written.

ReadingType selectors carry the 18-field code in ``mRID`` (or only an alias name). A 4-part
vendor code is accepted with a warning; anything else is refused with BAD_READING_TYPE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lxml import etree

from cim.codelists.readingtype import classify_reading_type_ref
from cim.elements import read_interval, read_object_ref, write_interval, write_object_ref
from cim.end_device_events import (
    end_device_type_code,
    expect_root,
    mrid_element,
    read_time_schedule_interval,
)
from cim.errors import CimError, ErrorCode
from cim.meter_readings import READING_REASONS
from cim.model import DateTimeInterval, ObjectRef
from cim.namespaces import payload_namespace
from cim.xmltools import (
    Builder,
    ReadReport,
    bool_of,
    children,
    element_path,
    missing,
    text_of,
)

NOUN = "GetMeterReadings"


@dataclass(frozen=True)
class ReadingSelector:
    """GetMeterReadings/Reading: a time window, optionally with a reason and a source."""

    reason: str | None = None  # ReadingReasonKind
    source: str | None = None
    time_period: DateTimeInterval | None = None


@dataclass(frozen=True)
class CoincidentReadingSelector:
    """MeterReadings/Readings of the coincident selection: the ReadingType is required."""

    reading_type: ObjectRef
    reason: str | None = None
    source: str | None = None
    time_period: DateTimeInterval | None = None


@dataclass(frozen=True)
class CoincidentSelector:
    """GetMeterReadings/MeterReadings: readings coincident with a trigger event or reading."""

    is_coincident_trigger: bool | None = None
    event_type: ObjectRef | None = None  # EndDeviceEvents/EndDeviceEventType (mRID = code)
    meter: ObjectRef | None = None
    reading: CoincidentReadingSelector | None = None
    usage_point: ObjectRef | None = None


@dataclass
class GetMeterReadings:
    end_devices: list[ObjectRef] = field(default_factory=list)
    end_device_groups: list[ObjectRef] = field(default_factory=list)
    meter_readings: CoincidentSelector | None = None
    readings: list[ReadingSelector] = field(default_factory=list)
    reading_qualities: list[ObjectRef] = field(default_factory=list)  # ReadingQualityType
    reading_types: list[ObjectRef] = field(default_factory=list)  # mRID = ReadingType code
    time_schedules: list[DateTimeInterval] = field(default_factory=list)
    transformer_tanks: list[ObjectRef] = field(default_factory=list)
    usage_points: list[ObjectRef] = field(default_factory=list)
    usage_point_groups: list[ObjectRef] = field(default_factory=list)

    @property
    def time_periods(self) -> list[DateTimeInterval]:
        """Every time window asked for: Reading.timePeriod, then TimeSchedule intervals."""
        periods = [r.time_period for r in self.readings if r.time_period is not None]
        return periods + list(self.time_schedules)


# --- shared with MeterReadSchedule -------------------------------------------------------


def read_reading_type_ref(element: etree._Element, report: ReadReport) -> ObjectRef:
    """A ReadingType selector (mRID and/or Names, or a ``ref`` attribute) with its code
    checked: 18 fields, or a 4-part vendor code (kept, with a warning)."""
    ref = read_object_ref(element, report)
    if ref.mrid is None:
        return ref
    where = mrid_element(element)
    try:
        classified = classify_reading_type_ref(ref.mrid)
    except CimError as exc:
        exc.xpath = exc.xpath or element_path(where)
        exc.line = exc.line if exc.line is not None else where.sourceline
        raise
    if classified.warning:
        report.warn(f"{classified.warning} ({element_path(where)}, line {where.sourceline})")
    return dataclasses.replace(ref, mrid=classified.ref)


def _reason_of(element: etree._Element) -> str:
    value = text_of(element)
    if value not in READING_REASONS:
        raise CimError(
            ErrorCode.BAD_VALUE,
            f"{value!r} is not a ReadingReasonKind ({', '.join(sorted(READING_REASONS))})",
            xpath=element_path(element),
            line=element.sourceline,
        )
    return value


# --- read --------------------------------------------------------------------------------

_REF_LISTS = {
    "EndDevice": "end_devices",
    "EndDeviceGroup": "end_device_groups",
    "TransformerTank": "transformer_tanks",
    "UsagePoint": "usage_points",
    "UsagePointGroup": "usage_point_groups",
}


def read_get_meter_readings(element: etree._Element, report: ReadReport) -> GetMeterReadings:
    expect_root(element, NOUN, report)
    query = GetMeterReadings()
    for tag, child in children(element):
        if tag == "ReadingType":
            query.reading_types.append(read_reading_type_ref(child, report))
        elif tag in _REF_LISTS:
            getattr(query, _REF_LISTS[tag]).append(read_object_ref(child, report))
        elif tag == "MeterReadings":
            query.meter_readings = _read_coincident(child, report)
        elif tag == "Reading":
            query.readings.append(_read_reading(child, report))
        elif tag == "ReadingQuality":
            query.reading_qualities.append(_read_reading_quality(child, report))
        elif tag == "TimeSchedule":
            query.time_schedules.append(read_time_schedule_interval(child, report))
        else:
            report.ignored(child)
    return query


def _read_reading(element: etree._Element, report: ReadReport) -> ReadingSelector:
    values: dict[str, object] = {}
    for tag, child in children(element):
        if tag == "reason":
            values["reason"] = _reason_of(child)
        elif tag == "source":
            values["source"] = text_of(child)
        elif tag == "timePeriod":
            values["time_period"] = read_interval(child, report)
        else:  # scheduleStrategy, connectionMethod, dataSource (Connexo)
            report.ignored(child)
    return ReadingSelector(**values)  # type: ignore[arg-type]


def _read_reading_quality(element: etree._Element, report: ReadReport) -> ObjectRef:
    quality = None
    for tag, child in children(element):
        if tag == "ReadingQualityType":
            quality = read_object_ref(child, report)
        else:
            report.ignored(child)
    if quality is None:
        raise missing(element, "ReadingQualityType")
    return quality


def _read_coincident(element: etree._Element, report: ReadReport) -> CoincidentSelector:
    values: dict[str, object] = {}
    for tag, child in children(element):
        if tag == "isCoincidentTrigger":
            values["is_coincident_trigger"] = bool_of(child)
        elif tag == "EndDeviceEvents":
            values["event_type"] = _read_trigger_event(child, report)
        elif tag == "Meter":
            values["meter"] = read_object_ref(child, report)
        elif tag == "Readings":
            values["reading"] = _read_coincident_reading(child, report)
        elif tag == "UsagePoint":
            values["usage_point"] = read_object_ref(child, report)
        else:
            report.ignored(child)
    return CoincidentSelector(**values)  # type: ignore[arg-type]


def _read_trigger_event(element: etree._Element, report: ReadReport) -> ObjectRef:
    event_type = None
    for tag, child in children(element):
        if tag == "EndDeviceEventType":
            event_type = read_object_ref(child, report)
            if event_type.mrid is not None:
                code = end_device_type_code(mrid_element(child), event_type.mrid)
                event_type = dataclasses.replace(event_type, mrid=code)
        else:
            report.ignored(child)
    if event_type is None:
        raise missing(element, "EndDeviceEventType")
    return event_type


def _read_coincident_reading(
    element: etree._Element, report: ReadReport
) -> CoincidentReadingSelector:
    values: dict[str, object] = {}
    reading_type = None
    for tag, child in children(element):
        if tag == "reason":
            values["reason"] = _reason_of(child)
        elif tag == "source":
            values["source"] = text_of(child)
        elif tag == "ReadingType":
            reading_type = read_reading_type_ref(child, report)
        elif tag == "timePeriod":
            values["time_period"] = read_interval(child, report)
        else:
            report.ignored(child)
    if reading_type is None:
        raise missing(element, "ReadingType")
    return CoincidentReadingSelector(reading_type, **values)  # type: ignore[arg-type]


# --- build -------------------------------------------------------------------------------


def build_get_meter_readings(query: GetMeterReadings) -> etree._Element:
    b = Builder(payload_namespace(NOUN))
    root = b.root(NOUN, nsmap={None: payload_namespace(NOUN)})
    for ref in query.end_devices:
        write_object_ref(b, root, "EndDevice", ref)
    for ref in query.end_device_groups:
        write_object_ref(b, root, "EndDeviceGroup", ref)
    if query.meter_readings is not None:
        _write_coincident(b, root, query.meter_readings)
    for reading in query.readings:
        element = b.child(root, "Reading")
        b.text(element, "reason", reading.reason)
        b.text(element, "source", reading.source)
        if reading.time_period is not None:
            write_interval(b, element, "timePeriod", reading.time_period)
    for quality in query.reading_qualities:
        write_object_ref(b, b.child(root, "ReadingQuality"), "ReadingQualityType", quality)
    for ref in query.reading_types:
        write_object_ref(b, root, "ReadingType", ref)
    for interval in query.time_schedules:
        write_interval(b, b.child(root, "TimeSchedule"), "scheduleInterval", interval)
    for ref in query.transformer_tanks:
        write_object_ref(b, root, "TransformerTank", ref)
    for ref in query.usage_points:
        write_object_ref(b, root, "UsagePoint", ref)
    for ref in query.usage_point_groups:
        write_object_ref(b, root, "UsagePointGroup", ref)
    return root


def _write_coincident(b: Builder, parent: etree._Element, selector: CoincidentSelector) -> None:
    element = b.child(parent, "MeterReadings")
    b.text(element, "isCoincidentTrigger", selector.is_coincident_trigger)
    if selector.event_type is not None:
        write_object_ref(
            b, b.child(element, "EndDeviceEvents"), "EndDeviceEventType", selector.event_type
        )
    if selector.meter is not None:
        write_object_ref(b, element, "Meter", selector.meter)
    if selector.reading is not None:
        reading = selector.reading
        readings = b.child(element, "Readings")
        b.text(readings, "reason", reading.reason)
        b.text(readings, "source", reading.source)
        write_object_ref(b, readings, "ReadingType", reading.reading_type)
        if reading.time_period is not None:
            write_interval(b, readings, "timePeriod", reading.time_period)
    if selector.usage_point is not None:
        write_object_ref(b, element, "UsagePoint", selector.usage_point)
