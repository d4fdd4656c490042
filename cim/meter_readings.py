"""The MeterReadings payload of IEC 61968-9 (CIM15 profile): a tolerant reader and a strict
writer for whole documents held in memory. Bulk documents: see cim.meter_readings_stream.

Element names, order and cardinality follow the public profile XSDs (Connexo's copy of the
2013 profile and the EPRI interoperability set) without Connexo's vendor extensions
(LoadProfile and RegisterGroup roots, Meter.serialNumber, Meter.status). Written in the
``http://iec.ch/TC57/2011/MeterReadings#`` namespace (as the default namespace); read from
every namespace in ``accepted_payload_namespaces("MeterReadings")``.

Values are exact :class:`~decimal.Decimal` (never float); a non-numeric value is refused
(CimError BAD_VALUE with line and path), never dropped. ReadingType refs are checked with
:func:`cim.codelists.readingtype.classify_reading_type_ref`: 18-field codes must be valid,
4-part vendor codes are kept with a warning, anything else is BAD_READING_TYPE.
ReadingQualityType refs must be ``system.category.subCategory`` (BAD_QUALITY_CODE).
Unknown and vendor elements are skipped and reported in the :class:`ReadReport`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from lxml import etree

from cim.codelists.quality import ReadingQualityCode
from cim.codelists.readingtype import RefKind, classify_reading_type_ref
from cim.datetimes import parse_datetime
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
from cim.namespaces import accepted_payload_namespaces, local_name, payload_namespace
from cim.xmltools import Builder, ReadReport

NOUN = "MeterReadings"
NAMESPACE = payload_namespace(NOUN)
NAMESPACES = accepted_payload_namespaces(NOUN)

READING_REASONS = frozenset(
    {
        "billing",
        "demandReset",
        "inquiry",
        "installation",
        "loadManagement",
        "loadResearch",
        "moveIn",
        "moveOut",
        "other",
        "removal",
        "serviceConnect",
        "serviceDisconnect",
    }
)


# ---------------------------------------------------------------- model


@dataclass(slots=True)
class ReadingQuality:
    """A quality flag on a reading: ``system.category.subCategory`` (e.g. 2.8.0 estimated)."""

    quality_type: str
    comment: str | None = None
    source: str | None = None
    timestamp: datetime | None = None


@dataclass(slots=True, eq=False)
class IntervalReading:
    """One interval value. ``qualities`` is read as a tuple: most readings have none, and the
    shared empty tuple costs no allocation and no garbage-collector work in bulk reads. Any
    sequence may be given; equality compares the qualities as sequences (a list equals the
    tuple with the same items)."""

    timestamp: datetime | None = None
    value: Decimal | None = None
    qualities: Sequence[ReadingQuality] = ()
    reported: datetime | None = None
    source: str | None = None
    time_period: DateTimeInterval | None = None

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (
            self.timestamp == other.timestamp  # type: ignore[attr-defined]
            and self.value == other.value  # type: ignore[attr-defined]
            and tuple(self.qualities) == tuple(other.qualities)  # type: ignore[attr-defined]
            and self.reported == other.reported  # type: ignore[attr-defined]
            and self.source == other.source  # type: ignore[attr-defined]
            and self.time_period == other.time_period  # type: ignore[attr-defined]
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the other dataclasses


@dataclass(slots=True)
class PendingCalculation:
    reading_type: str
    multiply_before_add: bool | None = None
    offset: int | None = None
    scalar_denominator: int | None = None
    scalar_float: Decimal | None = None
    scalar_numerator: int | None = None


@dataclass(slots=True)
class IntervalBlock:
    reading_type: str
    readings: list[IntervalReading] = field(default_factory=list)
    pending_calculation: PendingCalculation | None = None


@dataclass(slots=True)
class Reading:
    """A register (non-interval) reading."""

    reading_type: str
    value: Decimal | None = None
    timestamp: datetime | None = None
    qualities: list[ReadingQuality] = field(default_factory=list)
    reason: str | None = None
    reported: datetime | None = None
    source: str | None = None
    time_period: DateTimeInterval | None = None


@dataclass(slots=True)
class MeterReading:
    meter: ObjectRef | None = None
    usage_point: ObjectRef | None = None
    values_interval: DateTimeInterval | None = None
    is_coincident_trigger: bool | None = None
    readings: list[Reading] = field(default_factory=list)
    interval_blocks: list[IntervalBlock] = field(default_factory=list)
    events: list[EndDeviceEvent] = field(default_factory=list)

    @property
    def meter_key(self) -> str | None:
        """The meter's mRID, else its first name; None without a Meter."""
        return self.meter.key if self.meter is not None else None


@dataclass(frozen=True, slots=True)
class RationalNumber:
    """ReadingType.argument / ReadingType.interharmonic."""

    numerator: int
    denominator: int


# Attribute name -> element name, in XSD order (after mRID), for ReadingType's attributes.
READING_TYPE_FIELDS: tuple[tuple[str, str], ...] = (
    ("accumulation", "accumulation"),
    ("aggregate", "aggregate"),
    ("commodity", "commodity"),
    ("consumption_tier", "consumptionTier"),
    ("cpp", "cpp"),
    ("currency", "currency"),
    ("flow_direction", "flowDirection"),
    ("macro_period", "macroPeriod"),
    ("measurement_kind", "measurementKind"),
    ("measuring_period", "measuringPeriod"),
    ("multiplier", "multiplier"),
    ("phases", "phases"),
    ("tou", "tou"),
    ("unit", "unit"),
)
_READING_TYPE_INTS = frozenset({"consumptionTier", "cpp", "tou"})


@dataclass(slots=True)
class ReadingTypeInfo:
    """A described ReadingType (the document's root-level list). ``mrid`` is by convention
    the 18-field code; the attributes are the profile's strings (xs:integer ones as int)."""

    mrid: str | None = None
    names: tuple[Name, ...] = ()
    accumulation: str | None = None
    aggregate: str | None = None
    commodity: str | None = None
    consumption_tier: int | None = None
    cpp: int | None = None
    currency: str | None = None
    flow_direction: str | None = None
    macro_period: str | None = None
    measurement_kind: str | None = None
    measuring_period: str | None = None
    multiplier: str | None = None
    phases: str | None = None
    tou: int | None = None
    unit: str | None = None
    argument: RationalNumber | None = None
    interharmonic: RationalNumber | None = None


@dataclass(slots=True)
class ReadingQualityTypeInfo:
    mrid: str | None = None
    names: tuple[Name, ...] = ()
    category: str | None = None
    sub_category: str | None = None
    system_id: str | None = None


@dataclass(slots=True)
class EndDeviceEventTypeInfo:
    mrid: str | None = None
    names: tuple[Name, ...] = ()
    domain: str | None = None
    event_or_action: str | None = None
    sub_domain: str | None = None
    type: str | None = None


@dataclass(slots=True)
class MeterReadings:
    meter_readings: list[MeterReading] = field(default_factory=list)
    reading_types: list[ReadingTypeInfo] = field(default_factory=list)
    reading_quality_types: list[ReadingQualityTypeInfo] = field(default_factory=list)
    end_device_event_types: list[EndDeviceEventTypeInfo] = field(default_factory=list)


# ---------------------------------------------------------------- reading

# Every element name of the profile. A tag in an accepted namespace maps to its local name
# (one dict lookup per element); anything else maps to None and is reported as ignored.
_NAMES = (
    "MeterReadings", "MeterReading", "EndDeviceEventType", "ReadingQualityType", "ReadingType",
    "isCoincidentTrigger", "EndDeviceEvents", "IntervalBlocks", "Meter", "Readings",
    "UsagePoint", "valuesInterval", "IntervalReadings", "PendingCalculation", "reason",
    "reportedDateTime", "source", "timeStamp", "value", "ReadingQualities", "timePeriod",
    "comment", "mRID", "Names", "category", "subCategory", "systemId", "domain",
    "eventOrAction", "subDomain", "type", "argument", "interharmonic", "numerator",
    "denominator", "multiplyBeforeAdd", "offset", "scalarDenominator", "scalarFloat",
    "scalarNumerator",
    *(xml_name for _, xml_name in READING_TYPE_FIELDS),
)  # fmt: skip
LOCAL: dict[str, str] = {"{" + ns + "}" + name: name for ns in NAMESPACES for name in _NAMES}


def _tags(name: str) -> frozenset[str]:
    return frozenset("{" + ns + "}" + name for ns in NAMESPACES)


METER_READINGS_TAGS = _tags("MeterReadings")
METER_READING_TAGS = _tags("MeterReading")
INTERVAL_BLOCK_TAGS = _tags("IntervalBlocks")
INTERVAL_READING_TAGS = _tags("IntervalReadings")

_DATETIME_CACHE_LIMIT = 100_000
_VALUE_CACHE_LIMIT = 50_000
# The tags of the namespace OpenHES writes, compared first on the hot path (cheaper than a
# dictionary lookup of a freshly built tag string).
_TIMESTAMP_TAG = "{" + NAMESPACE + "}timeStamp"
_VALUE_TAG = "{" + NAMESPACE + "}value"


class Reader:
    """The state of one read: report, caches of parsed timestamps and checked codes.

    It also serves as the ``report`` handed to the shared element readers of cim.elements
    (they call ``ignored`` and ``warn``), so that ignored-element messages are de-duplicated:
    the first of a kind is reported with its path and line, the rest are counted (a bulk file
    with a vendor element in every reading gives two warnings, not a million).
    """

    __slots__ = ("_ignored", "datetimes", "decimals", "qualities", "reading_types", "report")

    def __init__(self, report: ReadReport | None) -> None:
        self.report = report if report is not None else ReadReport()
        self.datetimes: dict[str | None, datetime] = {}
        self.decimals: dict[str, Decimal] = {}
        self.reading_types: dict[str, str] = {}
        self.qualities: dict[str, str] = {}
        self._ignored: dict[tuple[str, str], list] = {}

    # -- locating elements (overridden by the streaming reader, which drops parsed siblings)

    def where(self, element: etree._Element) -> str:
        steps = []
        node: etree._Element | None = element
        while node is not None and isinstance(node.tag, str):
            parent = node.getparent()
            name = local_name(node.tag)
            if parent is None:
                steps.append(name)
            else:
                index = self.position(parent, node)
                steps.append(f"{name}[{index}]" if index else name)
            node = parent
        return "/" + "/".join(reversed(steps))

    def position(self, parent: etree._Element, node: etree._Element) -> int:
        """1-based index among same-named siblings, 0 when the element is the only one."""
        same = [c for c in parent if c.tag == node.tag]
        return same.index(node) + 1 if len(same) > 1 else 0

    def error(self, code: ErrorCode, reason: str, element: etree._Element) -> CimError:
        return CimError(code, reason, xpath=self.where(element), line=element.sourceline)

    # -- the report protocol of cim.elements

    def ignored(self, element: etree._Element) -> None:
        tag = element.tag
        if not isinstance(tag, str):  # a processing instruction
            return
        parent = element.getparent()
        key = (tag, parent.tag if parent is not None else "")
        seen = self._ignored.get(key)
        if seen is None:
            self._ignored[key] = [1, local_name(key[1])]
            self.report.warn(
                f"ignored unknown element {local_name(tag)!r} at {self.where(element)}"
                f" (line {element.sourceline})"
            )
        else:
            seen[0] += 1

    def warn(self, message: str) -> None:
        self.report.warn(message)

    def unknown_reason(self, element: etree._Element, reason: str) -> None:
        """Reading.reason outside ReadingReasonKind: kept (tolerant), reported once."""
        key = ("\0reason", reason)
        if key not in self._ignored:
            self._ignored[key] = [1, ""]
            self.warn(
                f"Reading reason {reason!r} is not a ReadingReasonKind (kept) at "
                f"{self.where(element)} (line {element.sourceline})"
            )

    def finish(self) -> None:
        """Add one summary line per kind of ignored element seen more than once."""
        for (tag, _parent), (count, parent_name) in self._ignored.items():
            if count > 1 and parent_name:
                self.report.warn(
                    f"ignored {count - 1:,} more {local_name(tag)!r} elements in {parent_name!r}"
                )
        self._ignored.clear()

    # -- values

    def text(self, element: etree._Element) -> str:
        return (element.text or "").strip()

    def datetime(self, element: etree._Element) -> datetime:
        text = element.text
        value = self.datetimes.get(text)
        if value is None:
            value = self.parse_datetime(element, text)
        return value

    def parse_datetime(self, element: etree._Element, text: str | None) -> datetime:
        try:
            value = parse_datetime(text)
        except CimError as exc:
            exc.xpath = self.where(element)
            exc.line = element.sourceline
            raise
        if len(self.datetimes) >= _DATETIME_CACHE_LIMIT:
            self.datetimes.clear()
        self.datetimes[text] = value
        return value

    def decimal(self, element: etree._Element) -> Decimal:
        text = element.text
        value = self.decimals.get(text)  # type: ignore[arg-type]
        if value is None:
            value = self.parse_decimal(element, text)
        return value

    def parse_decimal(self, element: etree._Element, text: str | None) -> Decimal:
        """The exact value of a number; cached, as meter values repeat a lot (0.000, ...)."""
        try:
            value = Decimal(text)  # type: ignore[arg-type]
        except (InvalidOperation, TypeError, ValueError):
            raise self.bad_number(element, text) from None
        # Decimal also takes "1_000", non-ASCII digits, NaN and Infinity; xs:float/decimal do not.
        if "_" in text or not text.isascii() or not value.is_finite():  # type: ignore[operator]
            raise self.bad_number(element, text)
        if len(self.decimals) >= _VALUE_CACHE_LIMIT:
            self.decimals.clear()
        self.decimals[text] = value  # type: ignore[index]
        return value

    def bad_number(self, element: etree._Element, text: str | None) -> CimError:
        if text is None or not text.strip():
            return self.error(ErrorCode.BAD_VALUE, "the value is empty", element)
        return self.error(ErrorCode.BAD_VALUE, f"{text.strip()!r} is not a number", element)

    def integer(self, element: etree._Element) -> int:
        text = self.text(element)
        body = text[1:] if text[:1] in "+-" else text
        if not (body.isascii() and body.isdigit()):
            raise self.error(ErrorCode.BAD_VALUE, f"{text!r} is not an integer", element)
        return int(text)

    def boolean(self, element: etree._Element) -> bool:
        text = self.text(element)
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise self.error(ErrorCode.BAD_VALUE, f"{text!r} is not an xs:boolean", element)

    def ref(self, element: etree._Element) -> str | None:
        """``<X ref="..."/>``, or the nested ``<X><mRID>...</mRID></X>`` some systems send."""
        ref = element.get("ref")
        if ref is None:
            for child in element:
                if LOCAL.get(child.tag) == "mRID":
                    return self.text(child)
        return ref

    def reading_type(self, element: etree._Element) -> str:
        ref = self.ref(element)
        if ref is None:
            raise self.error(ErrorCode.MISSING_ELEMENT, "ReadingType has no ref", element)
        checked = self.reading_types.get(ref)
        if checked is None:
            try:
                result = classify_reading_type_ref(ref)
            except CimError as exc:
                exc.xpath = self.where(element)
                exc.line = element.sourceline
                raise
            checked = result.ref
            warned = result.ref in self.reading_types.values()
            if result.kind is RefKind.VENDOR_CODE and result.warning and not warned:
                self.warn(f"{result.warning} (first at {self.where(element)}, line "
                          f"{element.sourceline})")  # fmt: skip
            self.reading_types[ref] = checked
        return checked

    def quality_type(self, element: etree._Element) -> str:
        ref = self.ref(element)
        if ref is None:
            raise self.error(ErrorCode.MISSING_ELEMENT, "ReadingQualityType has no ref", element)
        checked = self.qualities.get(ref)
        if checked is None:
            try:
                checked = ReadingQualityCode.parse(ref.strip()).code
            except CimError as exc:
                exc.xpath = self.where(element)
                exc.line = element.sourceline
                raise
            self.qualities[ref] = checked
        return checked

    def missing(self, element: etree._Element, name: str) -> CimError:
        return self.error(
            ErrorCode.MISSING_ELEMENT, f"{name} is required in {local_name(element.tag)}", element
        )


def read_interval_reading(
    element: etree._Element,
    r: Reader,
    _kind=LOCAL.get,
    _reading=IntervalReading,
    _timestamp_tag=_TIMESTAMP_TAG,
    _value_tag=_VALUE_TAG,
) -> IntervalReading:
    """One IntervalReadings element. The hot path of bulk reading: one pass over the
    children, cheap dispatch, cached timestamps and values."""
    timestamp = value = reported = source = period = None
    qualities: tuple[ReadingQuality, ...] = ()
    datetimes = r.datetimes
    decimals = r.decimals
    for child in element.getchildren():  # one C call: faster than iterating the element
        tag = child.tag
        if tag == _timestamp_tag:
            name = "timeStamp"
        elif tag == _value_tag:
            name = "value"
        else:
            name = _kind(tag)
        if name == "timeStamp":
            text = child.text
            timestamp = datetimes.get(text)
            if timestamp is None:
                timestamp = r.parse_datetime(child, text)
        elif name == "value":
            text = child.text
            value = decimals.get(text)  # type: ignore[arg-type]
            if value is None:
                value = r.parse_decimal(child, text)
        elif name == "ReadingQualities":
            qualities = (*qualities, read_reading_quality(child, r))
        elif name == "reportedDateTime":
            reported = r.datetime(child)
        elif name == "source":
            source = r.text(child)
        elif name == "timePeriod":
            period = read_interval(child, r)  # type: ignore[arg-type]
        else:
            r.ignored(child)
    return _reading(timestamp, value, qualities, reported, source, period)


def read_reading_quality(element: etree._Element, r: Reader) -> ReadingQuality:
    quality_type = comment = source = timestamp = None
    for child in element:
        name = LOCAL.get(child.tag)
        if name == "ReadingQualityType":
            quality_type = r.quality_type(child)
        elif name == "comment":
            comment = r.text(child)
        elif name == "source":
            source = r.text(child)
        elif name == "timeStamp":
            timestamp = r.datetime(child)
        else:
            r.ignored(child)
    if quality_type is None:
        raise r.missing(element, "ReadingQualityType")
    return ReadingQuality(quality_type, comment, source, timestamp)


def read_reading(element: etree._Element, r: Reader) -> Reading:
    reading_type = value = timestamp = reason = reported = source = period = None
    qualities: list[ReadingQuality] = []
    for child in element:
        name = LOCAL.get(child.tag)
        if name == "value":
            value = r.decimal(child)
        elif name == "timeStamp":
            timestamp = r.datetime(child)
        elif name == "ReadingType":
            reading_type = r.reading_type(child)
        elif name == "ReadingQualities":
            qualities.append(read_reading_quality(child, r))
        elif name == "reason":
            reason = r.text(child)
            if reason not in READING_REASONS:
                r.unknown_reason(child, reason)
        elif name == "reportedDateTime":
            reported = r.datetime(child)
        elif name == "source":
            source = r.text(child)
        elif name == "timePeriod":
            period = read_interval(child, r)  # type: ignore[arg-type]
        else:
            r.ignored(child)
    if reading_type is None:
        raise r.missing(element, "ReadingType")
    return Reading(reading_type, value, timestamp, qualities, reason, reported, source, period)


def read_pending_calculation(element: etree._Element, r: Reader) -> PendingCalculation:
    values: dict[str, object] = {}
    reading_type = None
    for child in element:
        name = LOCAL.get(child.tag)
        if name == "ReadingType":
            reading_type = r.reading_type(child)
        elif name == "multiplyBeforeAdd":
            values["multiply_before_add"] = r.boolean(child)
        elif name == "offset":
            values["offset"] = r.integer(child)
        elif name == "scalarDenominator":
            values["scalar_denominator"] = r.integer(child)
        elif name == "scalarNumerator":
            values["scalar_numerator"] = r.integer(child)
        elif name == "scalarFloat":
            values["scalar_float"] = r.decimal(child)
        else:
            r.ignored(child)
    if reading_type is None:
        raise r.missing(element, "ReadingType")
    return PendingCalculation(reading_type, **values)  # type: ignore[arg-type]


def read_interval_block_child(element: etree._Element, block: IntervalBlock, r: Reader) -> None:
    """One child of IntervalBlocks, into ``block`` (used whole and by the streaming reader)."""
    name = LOCAL.get(element.tag)
    if name == "IntervalReadings":
        block.readings.append(read_interval_reading(element, r))
    elif name == "ReadingType":
        block.reading_type = r.reading_type(element)
    elif name == "PendingCalculation":
        block.pending_calculation = read_pending_calculation(element, r)
    else:
        r.ignored(element)


def read_interval_block(element: etree._Element, r: Reader) -> IntervalBlock:
    block = IntervalBlock("")
    for child in element:
        read_interval_block_child(child, block, r)
    if not block.reading_type:
        raise r.missing(element, "ReadingType")
    return block


def read_meter_reading_child(
    element: etree._Element, meter_reading: MeterReading, r: Reader
) -> None:
    """One child of MeterReading other than a streamed IntervalBlocks."""
    name = LOCAL.get(element.tag)
    if name == "IntervalBlocks":
        meter_reading.interval_blocks.append(read_interval_block(element, r))
    elif name == "Readings":
        meter_reading.readings.append(read_reading(element, r))
    elif name == "Meter":
        meter_reading.meter = read_object_ref(element, r)  # type: ignore[arg-type]
    elif name == "UsagePoint":
        meter_reading.usage_point = read_object_ref(element, r)  # type: ignore[arg-type]
    elif name == "EndDeviceEvents":
        meter_reading.events.append(read_end_device_event(element, r))  # type: ignore[arg-type]
    elif name == "valuesInterval":
        meter_reading.values_interval = read_interval(element, r)  # type: ignore[arg-type]
    elif name == "isCoincidentTrigger":
        meter_reading.is_coincident_trigger = r.boolean(element)
    else:
        r.ignored(element)


def read_meter_reading(element: etree._Element, r: Reader) -> MeterReading:
    meter_reading = MeterReading()
    for child in element:
        read_meter_reading_child(child, meter_reading, r)
    return meter_reading


_READING_TYPE_ATTR = {xml: attr for attr, xml in READING_TYPE_FIELDS}
_READING_TYPE_TEXTS = {
    xml: attr for attr, xml in READING_TYPE_FIELDS if xml not in _READING_TYPE_INTS
}
_QUALITY_TYPE_TEXTS = {
    "category": "category",
    "subCategory": "sub_category",
    "systemId": "system_id",
}
_EVENT_TYPE_TEXTS = {
    "domain": "domain",
    "eventOrAction": "event_or_action",
    "subDomain": "sub_domain",
    "type": "type",
}


def _read_described(
    element: etree._Element, r: Reader, texts: dict[str, str], *, reading_type: bool = False
) -> tuple[str | None, tuple[Name, ...], dict[str, object]]:
    """mRID, Names and the attributes of a root-level type description."""
    mrid = None
    names: list[Name] = []
    values: dict[str, object] = {}
    for child in element:
        name = LOCAL.get(child.tag)
        if name == "mRID":
            mrid = r.text(child)
        elif name == "Names":
            names.append(read_name(child, r))  # type: ignore[arg-type]
        elif name in texts:
            values[texts[name]] = r.text(child)
        elif reading_type and name in _READING_TYPE_INTS:
            values[_READING_TYPE_ATTR[name]] = r.integer(child)
        elif reading_type and name in ("argument", "interharmonic"):
            values[name] = _read_rational(child, r)
        else:
            r.ignored(child)
    return mrid, tuple(names), values


def _read_rational(element: etree._Element, r: Reader) -> RationalNumber:
    numerator = denominator = None
    for child in element:
        name = LOCAL.get(child.tag)
        if name == "numerator":
            numerator = r.integer(child)
        elif name == "denominator":
            denominator = r.integer(child)
        else:
            r.ignored(child)
    if numerator is None:
        raise r.missing(element, "numerator")
    if denominator is None:
        raise r.missing(element, "denominator")
    return RationalNumber(numerator, denominator)


def read_reading_type_info(element: etree._Element, r: Reader) -> ReadingTypeInfo:
    mrid, names, values = _read_described(element, r, _READING_TYPE_TEXTS, reading_type=True)
    return ReadingTypeInfo(mrid, names, **values)  # type: ignore[arg-type]


def read_reading_quality_type_info(element: etree._Element, r: Reader) -> ReadingQualityTypeInfo:
    mrid, names, values = _read_described(element, r, _QUALITY_TYPE_TEXTS)
    return ReadingQualityTypeInfo(mrid, names, **values)  # type: ignore[arg-type]


def read_end_device_event_type_info(element: etree._Element, r: Reader) -> EndDeviceEventTypeInfo:
    mrid, names, values = _read_described(element, r, _EVENT_TYPE_TEXTS)
    return EndDeviceEventTypeInfo(mrid, names, **values)  # type: ignore[arg-type]


def read_definition(element: etree._Element, model: MeterReadings, r: Reader) -> bool:
    """A root-level ReadingType/ReadingQualityType/EndDeviceEventType into ``model``;
    False if ``element`` is none of these."""
    name = LOCAL.get(element.tag)
    if name == "ReadingType":
        model.reading_types.append(read_reading_type_info(element, r))
    elif name == "ReadingQualityType":
        model.reading_quality_types.append(read_reading_quality_type_info(element, r))
    elif name == "EndDeviceEventType":
        model.end_device_event_types.append(read_end_device_event_type_info(element, r))
    else:
        return False
    return True


def check_root(element: etree._Element) -> None:
    if element.tag not in METER_READINGS_TAGS:
        tag = element.tag if isinstance(element.tag, str) else "(not an element)"
        raise CimError(
            ErrorCode.UNKNOWN_MESSAGE_ROOT,
            f"expected a MeterReadings document in {NAMESPACE!r}, got {tag!r}",
            line=element.sourceline,
        )


def read_meter_readings(element: etree._Element, report: ReadReport | None = None) -> MeterReadings:
    """Read a MeterReadings element (the payload document). Tolerant: unknown and vendor
    elements are skipped and reported in ``report``; invalid values raise CimError."""
    check_root(element)
    r = Reader(report)
    model = MeterReadings()
    for child in element:
        if child.tag in METER_READING_TAGS:
            model.meter_readings.append(read_meter_reading(child, r))
        elif not read_definition(child, model, r):
            r.ignored(child)
    r.finish()
    return model


# ---------------------------------------------------------------- writing

_B = Builder(NAMESPACE)


@lru_cache(maxsize=4096)
def checked_reading_type(ref: str) -> str:
    """A ReadingType ref fit to write (CimError BAD_READING_TYPE if not); cached."""
    return classify_reading_type_ref(ref).ref


@lru_cache(maxsize=4096)
def checked_quality_type(ref: str) -> str:
    """A ReadingQualityType code fit to write (CimError BAD_QUALITY_CODE if not); cached."""
    return ReadingQualityCode.parse(ref).code


def checked_reason(reason: str | None) -> str | None:
    """Reading.reason fit to write: None or a ReadingReasonKind (CimError BAD_VALUE)."""
    if reason is not None and reason not in READING_REASONS:
        raise CimError(ErrorCode.BAD_VALUE, f"{reason!r} is not a ReadingReasonKind")
    return reason


def value_text(value: object) -> str:
    """The text of a reading value: a finite Decimal or an int, never a float."""
    kind = type(value)
    if kind is Decimal:
        if not value.is_finite():  # type: ignore[attr-defined]
            raise CimError(ErrorCode.BAD_VALUE, f"{value} is not a finite number")
        text = str(value)
        # str() switches to exponent form (1E-7, 1E+3), which is not an xs:decimal.
        return format(value, "f") if "E" in text else text
    if kind is int:
        return str(value)
    raise TypeError(f"a reading value must be a Decimal or an int, not {kind.__name__}")


def _value(value: object) -> str | None:
    return None if value is None else value_text(value)


def _write_quality(parent: etree._Element, quality: ReadingQuality) -> None:
    element = _B.child(parent, "ReadingQualities")
    _B.text(element, "comment", quality.comment)
    _B.text(element, "source", quality.source)
    _B.text(element, "timeStamp", quality.timestamp)
    _B.ref(element, "ReadingQualityType", checked_quality_type(quality.quality_type))


def _write_interval_reading(parent: etree._Element, reading: IntervalReading) -> None:
    element = _B.child(parent, "IntervalReadings")
    _B.text(element, "reportedDateTime", reading.reported)
    _B.text(element, "source", reading.source)
    _B.text(element, "timeStamp", reading.timestamp)
    _B.text(element, "value", _value(reading.value))
    for quality in reading.qualities:
        _write_quality(element, quality)
    if reading.time_period is not None:
        write_interval(_B, element, "timePeriod", reading.time_period)


def _write_pending_calculation(parent: etree._Element, pending: PendingCalculation) -> None:
    element = _B.child(parent, "PendingCalculation")
    _B.text(element, "multiplyBeforeAdd", pending.multiply_before_add)
    _B.text(element, "offset", pending.offset)
    _B.text(element, "scalarDenominator", pending.scalar_denominator)
    _B.text(element, "scalarFloat", _value(pending.scalar_float))
    _B.text(element, "scalarNumerator", pending.scalar_numerator)
    _B.ref(element, "ReadingType", checked_reading_type(pending.reading_type))


def _write_interval_block(parent: etree._Element, block: IntervalBlock) -> None:
    element = _B.child(parent, "IntervalBlocks")
    for reading in block.readings:
        _write_interval_reading(element, reading)
    if block.pending_calculation is not None:
        _write_pending_calculation(element, block.pending_calculation)
    _B.ref(element, "ReadingType", checked_reading_type(block.reading_type))


def _write_reading(parent: etree._Element, reading: Reading) -> None:
    element = _B.child(parent, "Readings")
    _B.text(element, "reason", checked_reason(reading.reason))
    _B.text(element, "reportedDateTime", reading.reported)
    _B.text(element, "source", reading.source)
    _B.text(element, "timeStamp", reading.timestamp)
    _B.text(element, "value", _value(reading.value))
    for quality in reading.qualities:
        _write_quality(element, quality)
    _B.ref(element, "ReadingType", checked_reading_type(reading.reading_type))
    if reading.time_period is not None:
        write_interval(_B, element, "timePeriod", reading.time_period)


def write_meter_reading(parent: etree._Element, meter_reading: MeterReading) -> etree._Element:
    element = _B.child(parent, "MeterReading")
    _B.text(element, "isCoincidentTrigger", meter_reading.is_coincident_trigger)
    for event in meter_reading.events:
        write_end_device_event(_B, element, "EndDeviceEvents", event, asset_serial=False)
    for block in meter_reading.interval_blocks:
        _write_interval_block(element, block)
    if meter_reading.meter is not None:
        write_object_ref(_B, element, "Meter", meter_reading.meter)
    for reading in meter_reading.readings:
        _write_reading(element, reading)
    if meter_reading.usage_point is not None:
        write_object_ref(_B, element, "UsagePoint", meter_reading.usage_point)
    if meter_reading.values_interval is not None:
        write_interval(_B, element, "valuesInterval", meter_reading.values_interval)
    return element


def _write_names(element: etree._Element, names: Iterable[Name]) -> None:
    for name in names:
        write_name(_B, element, "Names", name)


def _write_rational(parent: etree._Element, tag: str, number: RationalNumber | None) -> None:
    if number is not None:
        element = _B.child(parent, tag)
        _B.text(element, "denominator", number.denominator)
        _B.text(element, "numerator", number.numerator)


def write_reading_type_info(parent: etree._Element, info: ReadingTypeInfo) -> None:
    element = _B.child(parent, "ReadingType")
    _B.text(element, "mRID", info.mrid)
    for attr, xml_name in READING_TYPE_FIELDS:
        _B.text(element, xml_name, getattr(info, attr))
    _write_rational(element, "argument", info.argument)
    _write_rational(element, "interharmonic", info.interharmonic)
    _write_names(element, info.names)


def write_reading_quality_type_info(parent: etree._Element, info: ReadingQualityTypeInfo) -> None:
    element = _B.child(parent, "ReadingQualityType")
    _B.text(element, "mRID", info.mrid)
    _B.text(element, "category", info.category)
    _B.text(element, "subCategory", info.sub_category)
    _B.text(element, "systemId", info.system_id)
    _write_names(element, info.names)


def write_end_device_event_type_info(parent: etree._Element, info: EndDeviceEventTypeInfo) -> None:
    element = _B.child(parent, "EndDeviceEventType")
    _B.text(element, "mRID", info.mrid)
    _B.text(element, "domain", info.domain)
    _B.text(element, "eventOrAction", info.event_or_action)
    _B.text(element, "subDomain", info.sub_domain)
    _B.text(element, "type", info.type)
    _write_names(element, info.names)


def build_meter_readings(model: MeterReadings) -> etree._Element:
    """The MeterReadings element: 2011 namespace (default namespace), XSD element order."""
    root = _B.root("MeterReadings", nsmap={None: NAMESPACE})
    for event_type in model.end_device_event_types:
        write_end_device_event_type_info(root, event_type)
    for meter_reading in model.meter_readings:
        write_meter_reading(root, meter_reading)
    for quality_type in model.reading_quality_types:
        write_reading_quality_type_info(root, quality_type)
    for reading_type in model.reading_types:
        write_reading_type_info(root, reading_type)
    return root
