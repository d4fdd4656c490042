"""EndDeviceEvents and GetEndDeviceEvents payloads (IEC 61968-9 Ed. 2, CIM15 profiles).

EndDeviceEvents carries meter events and alarms (``EndDeviceEvent*``) and, optionally, the
descriptions of their types (``EndDeviceEventType*``). GetEndDeviceEvents selects events by
meter, group, usage point, customer, service category, event type and time window.

Element names, order and cardinality follow the public profile XSDs (Connexo's copy of the
2013 profile and the EPRI interoperability set), without vendor extensions. Event type
codes are the 4-part ``type.domain.subDomain.eventOrAction`` codes of Annex E; numbers
missing from the tables are accepted (vendor additions), anything else is refused with
BAD_END_DEVICE_TYPE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from lxml import etree

from cim.codelists.enddevicetype import EndDeviceTypeCode
from cim.elements import (
    read_end_device_event,
    read_interval,
    read_name,
    read_object_ref,
    write_end_device_event,
    write_interval,
    write_name,
    write_object_ref,
)
from cim.errors import CimError, ErrorCode
from cim.model import DateTimeInterval, EndDeviceEvent, Name, ObjectRef
from cim.namespaces import accepted_payload_namespaces, payload_namespace, split_tag
from cim.xmltools import (
    Builder,
    ReadReport,
    children,
    element_path,
    missing,
    text_of,
)

NOUN = "EndDeviceEvents"
GET_NOUN = "GetEndDeviceEvents"

SERVICE_KINDS = frozenset(
    {
        "electricity",
        "gas",
        "heat",
        "internet",
        "other",
        "rates",
        "refuse",
        "sewerage",
        "time",
        "tvLicence",
        "water",
    }
)


@dataclass
class EndDeviceTypeInfo:
    """A described EndDeviceEventType or EndDeviceControlType (the noun's root-level list).

    ``mrid`` is by convention the 4-part code; ``type``/``domain``/``sub_domain``/
    ``event_or_action`` are free strings in the profile (numbers or names)."""

    names: tuple[Name, ...]
    mrid: str | None = None
    domain: str | None = None
    event_or_action: str | None = None
    sub_domain: str | None = None
    type: str | None = None


@dataclass
class EndDeviceEvents:
    events: list[EndDeviceEvent] = field(default_factory=list)
    event_types: list[EndDeviceTypeInfo] = field(default_factory=list)


@dataclass(frozen=True)
class ServiceCategory:
    mrid: str | None = None
    kind: str | None = None  # ServiceKind: electricity, gas, water, ...
    names: tuple[Name, ...] = ()


@dataclass
class GetEndDeviceEvents:
    """Selection of a GetEndDeviceEvents request. The Get profile's Name has no NameType:
    names are written with ``name`` only."""

    customers: list[ObjectRef] = field(default_factory=list)
    events: list[EndDeviceEvent] = field(default_factory=list)
    event_types: list[ObjectRef] = field(default_factory=list)  # mRID = 4-part code
    end_device_groups: list[ObjectRef] = field(default_factory=list)
    meters: list[ObjectRef] = field(default_factory=list)
    service_categories: list[ServiceCategory] = field(default_factory=list)
    time_schedules: list[DateTimeInterval] = field(default_factory=list)
    usage_points: list[ObjectRef] = field(default_factory=list)

    @property
    def time_periods(self) -> list[DateTimeInterval]:
        """The time windows asked for (TimeSchedule.scheduleInterval)."""
        return self.time_schedules


# --- helpers shared with the other noun codecs -------------------------------------------


def expect_root(element: etree._Element, root: str, report: ReadReport) -> None:
    """Accept ``root`` by local name in any namespace; warn when the namespace is not one of
    the noun's known payload namespaces, refuse another element."""
    namespace, local = split_tag(element.tag)
    if local != root:
        raise CimError(
            ErrorCode.SCHEMA_INVALID,
            f"expected a {root} document, found {local!r}",
            xpath=element_path(element),
            line=element.sourceline,
        )
    if namespace not in accepted_payload_namespaces(root):
        report.warn(
            f"{root} is in namespace {namespace!r}, not {payload_namespace(root)!r}; read anyway"
            f" (line {element.sourceline})"
        )


def end_device_type_code(element: etree._Element, code: str) -> str:
    """Check a 4-part EndDeviceEventType/EndDeviceControlType code found in ``element``;
    return it. Numbers missing from the Annex E tables pass (vendor additions)."""
    try:
        return EndDeviceTypeCode.parse(code.strip(), strict=False).code
    except CimError as exc:
        exc.xpath = exc.xpath or element_path(element)
        exc.line = exc.line if exc.line is not None else element.sourceline
        raise


def mrid_element(element: etree._Element) -> etree._Element:
    """Where an object's identifying code sits: its mRID child, else the element itself
    (for a ``ref`` attribute). Errors about the code point there."""
    for tag, child in children(element):
        if tag == "mRID":
            return child
    return element


def type_ref_of(element: etree._Element, what: str) -> str:
    """The checked code of ``<EndDevice{Event,Control}Type ref="..."/>`` (or of its nested
    mRID, a variant some systems send)."""
    where = element
    ref = element.get("ref")
    if not (ref and ref.strip()):
        where = mrid_element(element)
        ref = text_of(where) if where is not element else None
    if not ref:
        raise CimError(
            ErrorCode.MISSING_ELEMENT,
            f"{what} has no ref",
            xpath=element_path(element),
            line=element.sourceline,
        )
    return end_device_type_code(where, ref)


_TYPE_INFO_FIELDS = {
    "domain": "domain",
    "eventOrAction": "event_or_action",
    "subDomain": "sub_domain",
    "type": "type",
}


def read_type_info(element: etree._Element, report: ReadReport) -> EndDeviceTypeInfo:
    values: dict[str, str] = {}
    names: list[Name] = []
    for tag, child in children(element):
        if tag == "mRID":
            values["mrid"] = end_device_type_code(child, text_of(child))
        elif tag in ("domain", "eventOrAction", "subDomain", "type"):
            values[_TYPE_INFO_FIELDS[tag]] = text_of(child)
        elif tag == "Names":
            names.append(read_name(child, report))
        else:
            report.ignored(child)
    if not names:
        raise missing(element, "Names")
    return EndDeviceTypeInfo(names=tuple(names), **values)


def write_type_info(b: Builder, parent: etree._Element, tag: str, info: EndDeviceTypeInfo) -> None:
    element = b.child(parent, tag)
    b.text(element, "mRID", info.mrid)
    b.text(element, "domain", info.domain)
    b.text(element, "eventOrAction", info.event_or_action)
    b.text(element, "subDomain", info.sub_domain)
    b.text(element, "type", info.type)
    for name in info.names:
        write_name(b, element, "Names", name)


def _read_event(element: etree._Element, report: ReadReport) -> EndDeviceEvent:
    event = read_end_device_event(element, report)
    for tag, child in children(element):
        if tag == "EndDeviceEventType":
            event.event_type = type_ref_of(child, "EndDeviceEventType")
    return event


# --- EndDeviceEvents ---------------------------------------------------------------------


def read_end_device_events(element: etree._Element, report: ReadReport) -> EndDeviceEvents:
    expect_root(element, NOUN, report)
    document = EndDeviceEvents()
    for tag, child in children(element):
        if tag == "EndDeviceEvent":
            document.events.append(_read_event(child, report))
        elif tag == "EndDeviceEventType":
            document.event_types.append(read_type_info(child, report))
        else:
            report.ignored(child)
    return document


def build_end_device_events(document: EndDeviceEvents) -> etree._Element:
    b = Builder(payload_namespace(NOUN))
    root = b.root(NOUN, nsmap={None: payload_namespace(NOUN)})
    for event in document.events:
        write_end_device_event(b, root, "EndDeviceEvent", event, asset_serial=True)
    for info in document.event_types:
        write_type_info(b, root, "EndDeviceEventType", info)
    return root


# --- GetEndDeviceEvents ------------------------------------------------------------------


def read_get_end_device_events(element: etree._Element, report: ReadReport) -> GetEndDeviceEvents:
    expect_root(element, GET_NOUN, report)
    query = GetEndDeviceEvents()
    for tag, child in children(element):
        if tag == "Customer":
            query.customers.append(read_object_ref(child, report))
        elif tag == "EndDeviceEvent":
            query.events.append(_read_event(child, report))
        elif tag == "EndDeviceEventType":
            event_type = read_object_ref(child, report)
            if event_type.mrid is not None:
                code = end_device_type_code(mrid_element(child), event_type.mrid)
                event_type = dataclasses.replace(event_type, mrid=code)
            query.event_types.append(event_type)
        elif tag == "EndDeviceGroup":
            query.end_device_groups.append(read_object_ref(child, report))
        elif tag == "Meter":
            query.meters.append(read_object_ref(child, report))
        elif tag == "ServiceCategory":
            query.service_categories.append(_read_service_category(child, report))
        elif tag == "TimeSchedule":
            query.time_schedules.append(read_time_schedule_interval(child, report))
        elif tag == "UsagePoint":
            query.usage_points.append(read_object_ref(child, report))
        else:
            report.ignored(child)
    return query


def read_time_schedule_interval(element: etree._Element, report: ReadReport) -> DateTimeInterval:
    """TimeSchedule with only its (required) scheduleInterval, as the Get profiles have it."""
    interval = None
    for tag, child in children(element):
        if tag == "scheduleInterval":
            interval = read_interval(child, report)
        else:
            report.ignored(child)
    if interval is None:
        raise missing(element, "scheduleInterval")
    return interval


def _read_service_category(element: etree._Element, report: ReadReport) -> ServiceCategory:
    mrid = kind = None
    names: list[Name] = []
    for tag, child in children(element):
        if tag == "mRID":
            mrid = text_of(child)
        elif tag == "kind":
            kind = text_of(child)
            if kind not in SERVICE_KINDS:
                raise CimError(
                    ErrorCode.BAD_VALUE,
                    f"{kind!r} is not a ServiceKind ({', '.join(sorted(SERVICE_KINDS))})",
                    xpath=element_path(child),
                    line=child.sourceline,
                )
        elif tag == "Names":
            names.append(read_name(child, report))
        else:
            report.ignored(child)
    return ServiceCategory(mrid, kind, tuple(names))


def build_get_end_device_events(query: GetEndDeviceEvents) -> etree._Element:
    b = Builder(payload_namespace(GET_NOUN))
    root = b.root(GET_NOUN, nsmap={None: payload_namespace(GET_NOUN)})
    for customer in query.customers:
        _write_plain_ref(b, root, "Customer", customer)
    for event in query.events:
        write_end_device_event(
            b, root, "EndDeviceEvent", _plain_names_event(event), asset_serial=True
        )
    for event_type in query.event_types:
        _write_plain_ref(b, root, "EndDeviceEventType", event_type)
    for group in query.end_device_groups:
        _write_plain_ref(b, root, "EndDeviceGroup", group)
    for meter in query.meters:
        _write_plain_ref(b, root, "Meter", meter)
    for category in query.service_categories:
        element = b.child(root, "ServiceCategory")
        b.text(element, "mRID", category.mrid)
        b.text(element, "kind", category.kind)
        for name in category.names:
            write_name(b, element, "Names", _plain_name(name))
    for interval in query.time_schedules:
        write_interval(b, b.child(root, "TimeSchedule"), "scheduleInterval", interval)
    for usage_point in query.usage_points:
        _write_plain_ref(b, root, "UsagePoint", usage_point)
    return root


def _plain_name(name: Name) -> Name:
    return Name(name.name)


def _plain_ref(ref: ObjectRef) -> ObjectRef:
    return dataclasses.replace(ref, names=tuple(_plain_name(n) for n in ref.names))


def _write_plain_ref(b: Builder, parent: etree._Element, tag: str, ref: ObjectRef) -> None:
    write_object_ref(b, parent, tag, _plain_ref(ref))


def _plain_names_event(event: EndDeviceEvent) -> EndDeviceEvent:
    return dataclasses.replace(
        event,
        names=tuple(_plain_name(n) for n in event.names),
        asset=_plain_ref(event.asset) if event.asset is not None else None,
        usage_point=_plain_ref(event.usage_point) if event.usage_point is not None else None,
    )
