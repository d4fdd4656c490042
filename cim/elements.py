"""Read and write the CIM elements several nouns share: Names, object references,
Status, DateTimeInterval and EndDeviceEvent. Element order is the profiles' XSD order."""

from __future__ import annotations

from lxml import etree

from cim.model import (
    DateTimeInterval,
    EndDeviceEvent,
    EndDeviceEventDetail,
    Name,
    ObjectRef,
    Status,
)
from cim.xmltools import Builder, ReadReport, children, datetime_of, missing, text_of


def read_name(element: etree._Element, report: ReadReport) -> Name:
    name = None
    type_name = type_description = authority = authority_description = None
    for tag, child in children(element):
        if tag == "name":
            name = text_of(child)
        elif tag == "NameType":
            for sub_tag, sub in children(child):
                if sub_tag == "name":
                    type_name = text_of(sub)
                elif sub_tag == "description":
                    type_description = text_of(sub)
                elif sub_tag == "NameTypeAuthority":
                    for a_tag, a in children(sub):
                        if a_tag == "name":
                            authority = text_of(a)
                        elif a_tag == "description":
                            authority_description = text_of(a)
                        else:
                            report.ignored(a)
                else:
                    report.ignored(sub)
        else:
            report.ignored(child)
    if name is None:
        raise missing(element, "name")
    return Name(name, type_name, type_description, authority, authority_description)


def write_name(b: Builder, parent: etree._Element, tag: str, name: Name) -> None:
    element = b.child(parent, tag)
    b.text(element, "name", name.name)
    if name.name_type is not None:
        name_type = b.child(element, "NameType")
        b.text(name_type, "description", name.name_type_description)
        b.text(name_type, "name", name.name_type)
        if name.authority is not None:
            authority = b.child(name_type, "NameTypeAuthority")
            b.text(authority, "description", name.authority_description)
            b.text(authority, "name", name.authority)


def read_object_ref(element: etree._Element, report: ReadReport) -> ObjectRef:
    mrid = serial = None
    names: list[Name] = []
    for tag, child in children(element):
        if tag == "mRID":
            mrid = text_of(child)
        elif tag == "Names":
            names.append(read_name(child, report))
        elif tag == "serialNumber":
            serial = text_of(child)
        else:
            report.ignored(child)
    # An mRID given as an attribute (<Meter ref="..."/>) is a common variant.
    if mrid is None and element.get("ref"):
        mrid = element.get("ref")
    return ObjectRef(mrid, tuple(names), serial)


def write_object_ref(
    b: Builder, parent: etree._Element, tag: str, ref: ObjectRef, *, with_serial: bool = False
) -> None:
    element = b.child(parent, tag)
    b.text(element, "mRID", ref.mrid)
    if with_serial:
        b.text(element, "serialNumber", ref.serial_number)
    for name in ref.names:
        write_name(b, element, "Names", name)


def read_interval(element: etree._Element, report: ReadReport) -> DateTimeInterval:
    start = end = None
    for tag, child in children(element):
        if tag == "start":
            start = datetime_of(child)
        elif tag == "end":
            end = datetime_of(child)
        else:
            report.ignored(child)
    return DateTimeInterval(start, end)


def write_interval(
    b: Builder, parent: etree._Element, tag: str, interval: DateTimeInterval
) -> None:
    element = b.child(parent, tag)
    b.text(element, "end", interval.end)
    b.text(element, "start", interval.start)


def read_status(element: etree._Element, report: ReadReport) -> Status:
    values: dict[str, object] = {}
    for tag, child in children(element):
        if tag == "dateTime":
            values["date_time"] = datetime_of(child)
        elif tag in ("value", "reason", "remark"):
            values[tag] = text_of(child)
        else:
            report.ignored(child)
    return Status(**values)  # type: ignore[arg-type]


def write_status(b: Builder, parent: etree._Element, tag: str, status: Status) -> None:
    element = b.child(parent, tag)
    b.text(element, "dateTime", status.date_time)
    b.text(element, "reason", status.reason)
    b.text(element, "remark", status.remark)
    b.text(element, "value", status.value)


_EVENT_TEXT_FIELDS = {
    "mRID": "mrid",
    "issuerID": "issuer_id",
    "issuerTrackingID": "issuer_tracking_id",
    "reason": "reason",
    "severity": "severity",
    "userID": "user_id",
}


def read_end_device_event(element: etree._Element, report: ReadReport) -> EndDeviceEvent:
    values: dict[str, object] = {}
    details: list[EndDeviceEventDetail] = []
    names: list[Name] = []
    event_type = created = None
    for tag, child in children(element):
        if tag in _EVENT_TEXT_FIELDS:
            values[_EVENT_TEXT_FIELDS[tag]] = text_of(child)
        elif tag == "createdDateTime":
            created = datetime_of(child)
        elif tag == "EndDeviceEventType":
            event_type = child.get("ref") or _nested_mrid(child)
        elif tag == "EndDeviceEventDetails":
            detail_name = detail_value = None
            for d_tag, d in children(child):
                if d_tag == "name":
                    detail_name = text_of(d)
                elif d_tag == "value":
                    detail_value = d.text or ""
                else:
                    report.ignored(d)
            if detail_name is None:
                raise missing(child, "name")
            details.append(EndDeviceEventDetail(detail_name, detail_value))
        elif tag == "Assets":
            values["asset"] = read_object_ref(child, report)
        elif tag == "Names":
            names.append(read_name(child, report))
        elif tag == "status":
            values["status"] = read_status(child, report)
        elif tag == "UsagePoint":
            values["usage_point"] = read_object_ref(child, report)
        else:
            report.ignored(child)
    if created is None:
        raise missing(element, "createdDateTime")
    if not event_type:
        raise missing(element, "EndDeviceEventType")
    return EndDeviceEvent(
        event_type=event_type, created=created, details=details, names=tuple(names), **values
    )  # type: ignore[arg-type]


def _nested_mrid(element: etree._Element) -> str | None:
    for tag, child in children(element):
        if tag == "mRID":
            return text_of(child)
    return None


def write_end_device_event(
    b: Builder, parent: etree._Element, tag: str, event: EndDeviceEvent, *, asset_serial: bool
) -> None:
    element = b.child(parent, tag)
    b.text(element, "mRID", event.mrid)
    b.text(element, "createdDateTime", event.created)
    b.text(element, "issuerID", event.issuer_id)
    b.text(element, "issuerTrackingID", event.issuer_tracking_id)
    b.text(element, "reason", event.reason)
    b.text(element, "severity", event.severity)
    b.text(element, "userID", event.user_id)
    if event.asset is not None:
        write_object_ref(b, element, "Assets", event.asset, with_serial=asset_serial)
    for detail in event.details:
        detail_element = b.child(element, "EndDeviceEventDetails")
        b.text(detail_element, "name", detail.name)
        b.text(detail_element, "value", detail.value)
    b.ref(element, "EndDeviceEventType", event.event_type)
    for name in event.names:
        write_name(b, element, "Names", name)
    if event.status is not None:
        write_status(b, element, "status", event.status)
    if event.usage_point is not None:
        write_object_ref(b, element, "UsagePoint", event.usage_point)
