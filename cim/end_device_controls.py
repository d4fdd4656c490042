"""EndDeviceControls payload (IEC 61968-9 Ed. 2, CIM15 profile): commands to end devices
such as remote disconnect/connect, demand reset, load control and HAN (PAN) messages.

Element names, order and cardinality follow the public profile XSDs (Connexo, EPRI
interoperability set, r0ckflite/cim4), without vendor extensions: Connexo's
``scheduleStrategy`` and ``EndDeviceControlAttribute`` are ignored with a warning when read.
``EndDeviceControlType ref`` is a 4-part ``type.domain.subDomain.eventOrAction`` code
(Annex E); numbers missing from the tables pass, anything else is refused with
BAD_END_DEVICE_TYPE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from typing import Any

from lxml import etree

from cim.elements import read_interval, read_name, read_object_ref, write_interval, write_name
from cim.end_device_events import (
    EndDeviceTypeInfo,
    expect_root,
    read_type_info,
    type_ref_of,
    write_type_info,
)
from cim.errors import CimError, ErrorCode
from cim.model import DateTimeInterval, Name, ObjectRef
from cim.namespaces import payload_namespace
from cim.xmltools import (
    Builder,
    ReadReport,
    bool_of,
    children,
    datetime_of,
    decimal_of,
    element_path,
    int_of,
    missing,
    text_of,
)

NOUN = "EndDeviceControls"

RANDOMISATION_KINDS = frozenset({"default", "end", "none", "start", "startAndEnd"})
TRANSMISSION_MODE_KINDS = frozenset({"anonymous", "both", "normal"})


# --- model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ControlledAppliance:
    is_electric_vehicle: bool | None = None
    is_exterior_lighting: bool | None = None
    is_generation_system: bool | None = None
    is_hvac_compressor_or_furnace: bool | None = None
    is_interior_lighting: bool | None = None
    is_irrigation_pump: bool | None = None
    is_managed_commercial_industrial_load: bool | None = None
    is_pool_pump_spa_jacuzzi: bool | None = None
    is_simple_misc_load: bool | None = None
    is_smart_appliance: bool | None = None
    is_strip_and_baseboard_heater: bool | None = None
    is_water_heater: bool | None = None


@dataclass(frozen=True)
class PanDemandResponse:
    """A demand response event for a HAN device. Percentages, temperatures and minutes are
    Decimal (xs:float in the profile)."""

    avg_load_adjustment: Decimal | None = None
    cancel_control_mode: str | None = None
    cancel_date_time: datetime | None = None
    cancel_now: bool | None = None
    command: str | None = None
    cooling_offset: Decimal | None = None
    cooling_setpoint: Decimal | None = None
    criticality_level: str | None = None
    duration: Decimal | None = None  # minutes
    duration_indefinite: bool | None = None
    duty_cycle: Decimal | None = None
    enrollment_group: str | None = None
    heating_offset: Decimal | None = None
    heating_setpoint: Decimal | None = None
    start_date_time: datetime | None = None
    appliance: ControlledAppliance | None = None


@dataclass(frozen=True)
class PanDisplay:
    """A text message for a HAN display."""

    command: str | None = None
    confirmation_required: bool | None = None
    duration: Decimal | None = None  # minutes
    duration_indefinite: bool | None = None
    priority: str | None = None
    start_date_time: datetime | None = None
    text_message: str | None = None
    transmission_mode: str | None = None  # anonymous, both, normal


@dataclass(frozen=True)
class PanPricingDetail:
    alternate_cost_delivered: Decimal | None = None
    alternate_cost_unit: str | None = None
    current_time_date: datetime | None = None
    generation_price: Decimal | None = None
    generation_price_ratio: Decimal | None = None
    price: Decimal | None = None
    price_ratio: Decimal | None = None
    price_tier: int | None = None
    price_tier_count: int | None = None
    price_tier_label: str | None = None
    rate_label: str | None = None
    register_tier: str | None = None
    unit_of_measure: str | None = None


@dataclass(frozen=True)
class PanPricing:
    command: str | None = None
    duration: Decimal | None = None  # minutes
    duration_indefinite: bool | None = None
    provider_id: int | None = None
    start_date_time: datetime | None = None
    details: tuple[PanPricingDetail, ...] = ()


PanAction = PanDemandResponse | PanDisplay | PanPricing


@dataclass(frozen=True)
class ElectronicAddress:
    email1: str | None = None
    email2: str | None = None
    lan: str | None = None
    mac: str | None = None
    password: str | None = None
    radio: str | None = None
    user_id: str | None = None
    web: str | None = None


@dataclass(frozen=True)
class EndDeviceRef(ObjectRef):
    """An EndDevice of a control: an ObjectRef plus the HAN pairing attributes.
    ``serial_number`` (a Connexo extension) is kept when read but never written."""

    install_code: str | None = None
    is_pan: bool | None = None
    electronic_address: ElectronicAddress | None = None


@dataclass(frozen=True)
class EndDeviceTiming:
    duration: Decimal | None = None  # minutes
    duration_indefinite: bool | None = None
    randomisation: str | None = None  # default, end, none, start, startAndEnd
    interval: DateTimeInterval | None = None


@dataclass
class EndDeviceControl:
    """One command. ``control_type`` is the EndDeviceControlType code, e.g. "3.31.0.23"
    (remote disconnect); ``primary_device_timing.interval`` is when to execute it."""

    control_type: str
    mrid: str | None = None
    dr_program_level: int | None = None
    dr_program_mandatory: bool | None = None
    issuer_id: str | None = None
    issuer_tracking_id: str | None = None
    price_signal: Decimal | None = None
    reason: str | None = None
    pan_action: PanAction | None = None
    end_device_groups: list[ObjectRef] = field(default_factory=list)
    # ObjectRef, or EndDeviceRef when HAN attributes are given (read returns EndDeviceRef
    # only then, so plain ObjectRefs round-trip).
    end_devices: list[ObjectRef] = field(default_factory=list)
    primary_device_timing: EndDeviceTiming | None = None
    secondary_device_timing: EndDeviceTiming | None = None
    usage_point_groups: list[ObjectRef] = field(default_factory=list)
    usage_points: list[ObjectRef] = field(default_factory=list)


@dataclass
class EndDeviceControls:
    controls: list[EndDeviceControl] = field(default_factory=list)
    control_types: list[EndDeviceTypeInfo] = field(default_factory=list)


# --- simple-field tables: (XML name, attribute, reader) in XSD order ----------------------

Reader = Callable[[etree._Element], Any]
FieldTable = tuple[tuple[str, str, Reader], ...]


def _enum_reader(kinds: frozenset[str], what: str) -> Reader:
    def read(element: etree._Element) -> str:
        value = text_of(element)
        if value not in kinds:
            raise CimError(
                ErrorCode.BAD_VALUE,
                f"{value!r} is not a {what} ({', '.join(sorted(kinds))})",
                xpath=element_path(element),
                line=element.sourceline,
            )
        return value

    return read


def _fields(*names: tuple[str, Reader]) -> FieldTable:
    """Attribute names derive from the XML names: camelCase -> snake_case."""
    return tuple((xml, _snake(xml), reader) for xml, reader in names)


def _snake(name: str) -> str:
    if name == "mRID":
        return "mrid"
    out = "".join("_" + c.lower() if c.isupper() else c for c in name)
    return out.replace("_i_d", "_id")  # issuerID -> issuer_id


_APPLIANCE_FIELDS = _fields(
    *(
        (name, bool_of)
        for name in (
            "isElectricVehicle",
            "isExteriorLighting",
            "isGenerationSystem",
            "isHvacCompressorOrFurnace",
            "isInteriorLighting",
            "isIrrigationPump",
            "isManagedCommercialIndustrialLoad",
            "isPoolPumpSpaJacuzzi",
            "isSimpleMiscLoad",
            "isSmartAppliance",
            "isStripAndBaseboardHeater",
            "isWaterHeater",
        )
    )
)
_DEMAND_RESPONSE_FIELDS = _fields(
    ("avgLoadAdjustment", decimal_of),
    ("cancelControlMode", text_of),
    ("cancelDateTime", datetime_of),
    ("cancelNow", bool_of),
    ("command", text_of),
    ("coolingOffset", decimal_of),
    ("coolingSetpoint", decimal_of),
    ("criticalityLevel", text_of),
    ("duration", decimal_of),
    ("durationIndefinite", bool_of),
    ("dutyCycle", decimal_of),
    ("enrollmentGroup", text_of),
    ("heatingOffset", decimal_of),
    ("heatingSetpoint", decimal_of),
    ("startDateTime", datetime_of),
)
_DISPLAY_FIELDS = _fields(
    ("command", text_of),
    ("confirmationRequired", bool_of),
    ("duration", decimal_of),
    ("durationIndefinite", bool_of),
    ("priority", text_of),
    ("startDateTime", datetime_of),
    ("textMessage", text_of),
    ("transmissionMode", _enum_reader(TRANSMISSION_MODE_KINDS, "TransmissionModeKind")),
)
_PRICING_FIELDS = _fields(
    ("command", text_of),
    ("duration", decimal_of),
    ("durationIndefinite", bool_of),
    ("providerID", int_of),
    ("startDateTime", datetime_of),
)
_PRICING_DETAIL_FIELDS = _fields(
    ("alternateCostDelivered", decimal_of),
    ("alternateCostUnit", text_of),
    ("currentTimeDate", datetime_of),
    ("generationPrice", decimal_of),
    ("generationPriceRatio", decimal_of),
    ("price", decimal_of),
    ("priceRatio", decimal_of),
    ("priceTier", int_of),
    ("priceTierCount", int_of),
    ("priceTierLabel", text_of),
    ("rateLabel", text_of),
    ("registerTier", text_of),
    ("unitOfMeasure", text_of),
)
_ADDRESS_FIELDS = _fields(
    ("email1", text_of),
    ("email2", text_of),
    ("lan", text_of),
    ("mac", text_of),
    ("password", text_of),
    ("radio", text_of),
    ("userID", text_of),
    ("web", text_of),
)
_TIMING_FIELDS = _fields(
    ("duration", decimal_of),
    ("durationIndefinite", bool_of),
    ("randomisation", _enum_reader(RANDOMISATION_KINDS, "RandomisationKind")),
)
_CONTROL_FIELDS = _fields(
    ("mRID", text_of),
    ("drProgramLevel", int_of),
    ("drProgramMandatory", bool_of),
    ("issuerID", text_of),
    ("issuerTrackingID", text_of),
    ("priceSignal", decimal_of),
    ("reason", text_of),
)


def _check_tables() -> None:
    """Every table attribute must be a field of its dataclass (import-time self-check)."""
    for table, cls in (
        (_APPLIANCE_FIELDS, ControlledAppliance),
        (_DEMAND_RESPONSE_FIELDS, PanDemandResponse),
        (_DISPLAY_FIELDS, PanDisplay),
        (_PRICING_FIELDS, PanPricing),
        (_PRICING_DETAIL_FIELDS, PanPricingDetail),
        (_ADDRESS_FIELDS, ElectronicAddress),
        (_TIMING_FIELDS, EndDeviceTiming),
        (_CONTROL_FIELDS, EndDeviceControl),
    ):
        names = {f.name for f in fields(cls)}
        unknown = [attr for _, attr, _ in table if attr not in names]
        if unknown:
            raise AssertionError(f"{cls.__name__} lacks {unknown}")


_check_tables()


def _read_simple(tag: str, child: etree._Element, table: FieldTable, into: dict[str, Any]) -> bool:
    """Read ``child`` into ``into`` if the table knows ``tag``; False otherwise."""
    for xml, attr, reader in table:
        if xml == tag:
            into[attr] = reader(child)
            return True
    return False


def _read_flat(element: etree._Element, table: FieldTable, report: ReadReport) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for tag, child in children(element):
        if not _read_simple(tag, child, table, values):
            report.ignored(child)
    return values


def _write_simple(b: Builder, element: etree._Element, table: FieldTable, obj: object) -> None:
    for xml, attr, _ in table:
        b.text(element, xml, _lexical(getattr(obj, attr)))


def _lexical(value: object) -> object:
    """Decimals in plain notation: valid for xs:float and xs:decimal alike."""
    if isinstance(value, Decimal):
        return format(value, "f")
    return value


# --- read --------------------------------------------------------------------------------


def read_end_device_controls(element: etree._Element, report: ReadReport) -> EndDeviceControls:
    expect_root(element, NOUN, report)
    document = EndDeviceControls()
    for tag, child in children(element):
        if tag == "EndDeviceControl":
            document.controls.append(_read_control(child, report))
        elif tag == "EndDeviceControlType":
            document.control_types.append(read_type_info(child, report))
        else:
            report.ignored(child)
    return document


def _read_control(element: etree._Element, report: ReadReport) -> EndDeviceControl:
    values: dict[str, Any] = {}
    lists: dict[str, list[ObjectRef]] = {
        "end_device_groups": [],
        "end_devices": [],
        "usage_point_groups": [],
        "usage_points": [],
    }
    control_type = None
    for tag, child in children(element):
        if _read_simple(tag, child, _CONTROL_FIELDS, values):
            continue
        if tag in _PAN_READERS:
            if "pan_action" in values:
                report.warn(
                    f"ignored {tag} at {element_path(child)} (line {child.sourceline}): only one"
                    " of PanDemandResponse, PanDisplay, PanPricing is allowed"
                )
            else:
                values["pan_action"] = _PAN_READERS[tag](child, report)
        elif tag == "EndDeviceControlType":
            control_type = type_ref_of(child, "EndDeviceControlType")
        elif tag == "EndDeviceGroups":
            lists["end_device_groups"].append(read_object_ref(child, report))
        elif tag == "EndDevices":
            lists["end_devices"].append(_read_end_device(child, report))
        elif tag == "primaryDeviceTiming":
            values["primary_device_timing"] = _read_timing(child, report)
        elif tag == "secondaryDeviceTiming":
            values["secondary_device_timing"] = _read_timing(child, report)
        elif tag == "UsagePointGroups":
            lists["usage_point_groups"].append(read_object_ref(child, report))
        elif tag == "UsagePoints":
            lists["usage_points"].append(read_object_ref(child, report))
        else:
            report.ignored(child)
    if control_type is None:
        raise missing(element, "EndDeviceControlType")
    return EndDeviceControl(control_type=control_type, **values, **lists)


def _read_demand_response(element: etree._Element, report: ReadReport) -> PanDemandResponse:
    values: dict[str, Any] = {}
    for tag, child in children(element):
        if tag == "appliance":
            values["appliance"] = ControlledAppliance(
                **_read_flat(child, _APPLIANCE_FIELDS, report)
            )
        elif not _read_simple(tag, child, _DEMAND_RESPONSE_FIELDS, values):
            report.ignored(child)
    return PanDemandResponse(**values)


def _read_display(element: etree._Element, report: ReadReport) -> PanDisplay:
    return PanDisplay(**_read_flat(element, _DISPLAY_FIELDS, report))


def _read_pricing(element: etree._Element, report: ReadReport) -> PanPricing:
    values: dict[str, Any] = {}
    details: list[PanPricingDetail] = []
    for tag, child in children(element):
        if tag == "PanPricingDetails":
            details.append(PanPricingDetail(**_read_flat(child, _PRICING_DETAIL_FIELDS, report)))
        elif not _read_simple(tag, child, _PRICING_FIELDS, values):
            report.ignored(child)
    return PanPricing(details=tuple(details), **values)


_PAN_READERS: dict[str, Callable[[etree._Element, ReadReport], PanAction]] = {
    "PanDemandResponse": _read_demand_response,
    "PanDisplay": _read_display,
    "PanPricing": _read_pricing,
}


def _read_end_device(element: etree._Element, report: ReadReport) -> ObjectRef:
    values: dict[str, Any] = {}
    names: list[Name] = []
    for tag, child in children(element):
        if tag == "mRID":
            values["mrid"] = text_of(child)
        elif tag == "serialNumber":  # Connexo extension: kept, never written
            values["serial_number"] = text_of(child)
        elif tag == "installCode":
            values["install_code"] = text_of(child)
        elif tag == "isPan":
            values["is_pan"] = bool_of(child)
        elif tag == "electronicAddress":
            values["electronic_address"] = ElectronicAddress(
                **_read_flat(child, _ADDRESS_FIELDS, report)
            )
        elif tag == "Names":
            names.append(read_name(child, report))
        else:
            report.ignored(child)
    if "mrid" not in values and element.get("ref"):
        values["mrid"] = element.get("ref")
    if values.keys() <= {"mrid", "serial_number"}:
        return ObjectRef(names=tuple(names), **values)
    return EndDeviceRef(names=tuple(names), **values)


def _read_timing(element: etree._Element, report: ReadReport) -> EndDeviceTiming:
    values: dict[str, Any] = {}
    for tag, child in children(element):
        if tag == "interval":
            values["interval"] = read_interval(child, report)
        elif not _read_simple(tag, child, _TIMING_FIELDS, values):
            report.ignored(child)
    return EndDeviceTiming(**values)


# --- build -------------------------------------------------------------------------------


def build_end_device_controls(document: EndDeviceControls) -> etree._Element:
    b = Builder(payload_namespace(NOUN))
    root = b.root(NOUN, nsmap={None: payload_namespace(NOUN)})
    for control in document.controls:
        _write_control(b, root, control)
    for info in document.control_types:
        write_type_info(b, root, "EndDeviceControlType", info)
    return root


def _write_control(b: Builder, parent: etree._Element, control: EndDeviceControl) -> None:
    element = b.child(parent, "EndDeviceControl")
    _write_simple(b, element, _CONTROL_FIELDS, control)
    action = control.pan_action
    if isinstance(action, PanDemandResponse):
        pan = b.child(element, "PanDemandResponse")
        _write_simple(b, pan, _DEMAND_RESPONSE_FIELDS, action)
        if action.appliance is not None:
            _write_simple(b, b.child(pan, "appliance"), _APPLIANCE_FIELDS, action.appliance)
    elif isinstance(action, PanDisplay):
        _write_simple(b, b.child(element, "PanDisplay"), _DISPLAY_FIELDS, action)
    elif isinstance(action, PanPricing):
        pan = b.child(element, "PanPricing")
        _write_simple(b, pan, _PRICING_FIELDS, action)
        for detail in action.details:
            _write_simple(b, b.child(pan, "PanPricingDetails"), _PRICING_DETAIL_FIELDS, detail)
    b.ref(element, "EndDeviceControlType", control.control_type)
    for group in control.end_device_groups:
        _write_ref(b, element, "EndDeviceGroups", group)
    for device in control.end_devices:
        _write_end_device(b, element, device)
    if control.primary_device_timing is not None:
        _write_timing(b, element, "primaryDeviceTiming", control.primary_device_timing)
    if control.secondary_device_timing is not None:
        _write_timing(b, element, "secondaryDeviceTiming", control.secondary_device_timing)
    for group in control.usage_point_groups:
        _write_ref(b, element, "UsagePointGroups", group)
    for usage_point in control.usage_points:
        _write_ref(b, element, "UsagePoints", usage_point)


def _write_ref(b: Builder, parent: etree._Element, tag: str, ref: ObjectRef) -> None:
    element = b.child(parent, tag)
    b.text(element, "mRID", ref.mrid)
    for name in ref.names:
        write_name(b, element, "Names", name)


def _write_end_device(b: Builder, parent: etree._Element, device: ObjectRef) -> None:
    element = b.child(parent, "EndDevices")
    b.text(element, "mRID", device.mrid)
    if isinstance(device, EndDeviceRef):
        b.text(element, "installCode", device.install_code)
        b.text(element, "isPan", device.is_pan)
        if device.electronic_address is not None:
            address = b.child(element, "electronicAddress")
            _write_simple(b, address, _ADDRESS_FIELDS, device.electronic_address)
    for name in device.names:
        write_name(b, element, "Names", name)


def _write_timing(b: Builder, parent: etree._Element, tag: str, timing: EndDeviceTiming) -> None:
    element = b.child(parent, tag)
    _write_simple(b, element, _TIMING_FIELDS, timing)
    if timing.interval is not None:
        write_interval(b, element, "interval", timing.interval)
